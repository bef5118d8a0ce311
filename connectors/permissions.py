"""The connector capabilities, by the dotted name ``has_perm`` takes: the one spelling used by roles, pages and APIs.

Code checks these, never group names (roles.py bundles them into groups). ``execute_connector`` is declared in
``Connector.Meta.permissions``; the other four are Django's model permissions.
"""

VIEW_CONNECTOR = "connectors.view_connector"
ADD_CONNECTOR = "connectors.add_connector"
CHANGE_CONNECTOR = "connectors.change_connector"
DELETE_CONNECTOR = "connectors.delete_connector"
EXECUTE_CONNECTOR = "connectors.execute_connector"
