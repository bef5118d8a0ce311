"""The usage capability, by the dotted name ``has_perm`` takes: used by usage's role, its pages and its JSON API.

Declared in the event log model's ``Meta.permissions``; it lets a user read every dashboard and nothing else.
"""

VIEW_USAGE_DASHBOARD = "usage.view_usage_dashboard"

ROLES: dict[str, list[str]] = {
    "Usage viewers": [VIEW_USAGE_DASHBOARD],
    # Connector admins also open the dashboards and every user's logs of the connectors they manage.
    "Connector admins": [VIEW_USAGE_DASHBOARD],
}
