"""Who may read usage, for the dashboards, the Logs tab and the exports (decided by connectors/access/policy.py).

- ``usage.view_usage_dashboard`` (the Usage viewers and Connector admins roles): every dashboard, every user's
  events;
- ``connectors.view_connector`` alone (the Connector users role): a connector's Logs tab and events CSV, limited
  to the user's own calls.
"""

from connectors.access.policy import check, require
from connectors.lookup import get_connector_or_404
from connectors.permissions import VIEW_CONNECTOR
from usage.dashboards.queries import ConnectorRef, find_connector
from usage.permissions import VIEW_USAGE_DASHBOARD as VIEW_USAGE

usage_view = require(VIEW_USAGE)


def logs_scope(request, connector_id: str) -> tuple[ConnectorRef, int | None]:
    """The connector of the URL and, for a user who may not see everyone's usage, their user id; 403 / 404."""
    permission = check(request.user, VIEW_USAGE, VIEW_CONNECTOR)
    sees_everyone = permission == VIEW_USAGE
    connector = get_connector_or_404(request, connector_id, permission, find=find_connector,
                                     missing="No connector and no events with that id.")
    return connector, None if sees_everyone else request.user.pk
