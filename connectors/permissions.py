"""The connector capabilities, by the dotted name ``has_perm`` takes: the one spelling used by roles, pages and APIs.

Code checks these (connectors/access/policy.py), never group names; ``ROLES`` is this app's share of the roles
(connectors/access/roles.py). ``execute_connector`` is declared in
``Connector.Meta.permissions``; the other four are Django's model permissions.
"""

VIEW_CONNECTOR = "connectors.view_connector"
ADD_CONNECTOR = "connectors.add_connector"
CHANGE_CONNECTOR = "connectors.change_connector"
DELETE_CONNECTOR = "connectors.delete_connector"
EXECUTE_CONNECTOR = "connectors.execute_connector"

ROLES: dict[str, list[str]] = {
    "Connector admins": [VIEW_CONNECTOR, ADD_CONNECTOR, CHANGE_CONNECTOR, DELETE_CONNECTOR, EXECUTE_CONNECTOR],
    "Connector users": [VIEW_CONNECTOR, EXECUTE_CONNECTOR],
}
