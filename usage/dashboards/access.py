"""Who may read usage, in one place for the dashboards, the Logs tab and the exports.

- ``usage.view_usage_dashboard`` (the Usage viewers and Connector admins roles): every dashboard, every user's
  events;
- ``connectors.view_connector`` alone (the Connector users role): a connector's Logs tab and events CSV, limited
  to the user's own calls.

A 403 names the missing permission and the roles that grant it (connectors.roles).
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from connectors.lookup import get_connector_or_404
from connectors.permissions import VIEW_CONNECTOR
from connectors.roles import permission_denied_message, roles_granting
from usage.dashboards.queries import ConnectorRef, find_connector
from usage.permissions import VIEW_USAGE_DASHBOARD as VIEW_USAGE


def usage_view(view):
    """login_required, then ``usage.view_usage_dashboard`` or a 403 saying so (anonymous users go to log in)."""

    @wraps(view)
    def checked(request, *args, **kwargs):
        if not request.user.has_perm(VIEW_USAGE):
            raise PermissionDenied(permission_denied_message(VIEW_USAGE))
        return view(request, *args, **kwargs)

    return login_required(checked)


def logs_scope(request, connector_id: str) -> tuple[ConnectorRef, int | None]:
    """The connector of the URL and, for a user who may not see everyone's usage, their user id; 403 / 404."""
    user = request.user
    sees_everyone = user.has_perm(VIEW_USAGE)
    if not sees_everyone and not user.has_perm(VIEW_CONNECTOR):
        roles = sorted(set(roles_granting(VIEW_CONNECTOR) + roles_granting(VIEW_USAGE)))
        raise PermissionDenied(
            f"This page needs the permission {VIEW_CONNECTOR} or {VIEW_USAGE}, which the roles "
            f"{', '.join(roles)} grant. Ask an administrator for one of them."
        )
    permission = VIEW_USAGE if sees_everyone else VIEW_CONNECTOR
    connector = get_connector_or_404(request, connector_id, permission, find=find_connector,
                                     missing="No connector and no events with that id.")
    return connector, None if sees_everyone else user.pk
