"""usage's role, kept in step by migrate like the connector roles (connectors/roles.py)."""

from usage.permissions import VIEW_USAGE_DASHBOARD

ROLES: dict[str, list[str]] = {
    "Usage viewers": [VIEW_USAGE_DASHBOARD],
}
