"""One place that turns a connector id from a URL into a connector the user may act on."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from connectors.models import Connector


def get_connector_for(request, connector_id: str, permission: str = "connectors.view_connector") -> Connector:
    """404 when no such connector exists, 403 when the user lacks ``permission``."""
    if not request.user.has_perm(permission):
        raise PermissionDenied
    connector = Connector.objects.find(connector_id)
    if connector is None:
        raise Http404("No connector with that id.")
    return connector
