"""The usage capability, by the dotted name ``has_perm`` takes: used by usage's role, its pages and its JSON API.

Declared in the event log model's ``Meta.permissions``; it lets a user read every dashboard and nothing else.
"""

VIEW_USAGE_DASHBOARD = "usage.view_usage_dashboard"
