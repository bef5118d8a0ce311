"""Finding connectors, preconfigured ones (ACTIONS_CONFIG) included, and turning a URL's id into one or a 404.

A connector id names either a preconfigured connector (an unsaved instance, see preconfigured.py) or a stored
one; preconfigured ids win, as in Kibana. Everything that turns an id into a connector comes here, so that
rule lives in one place. This module sits above models.py and preconfigured.py, which therefore need not
import each other both ways.

Every lookup is in the current space (README "Spaces"): a stored connector of another space is not found, exactly
as one that does not exist (Kibana answers ``Saved object [action/<id>] not found`` for both), and preconfigured
connectors are in every space. A request made with an API key limited to some connectors finds only those.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from connectors.access.policy import amay, check, denial_message
from connectors.caching import connector_cache
from connectors.caching.single_flight import SingleFlight
from connectors.caller import current_key_scope
from connectors.models import Connector
from connectors.preconfigured import preconfigured_connectors
from connectors.query_params import unstorable_character_error
from connectors.spaces.current import current_space_id


class ConnectorNotFound(Http404):
    """No connector with this id. A 404 for pages; the JSON endpoints answer it in their own error shape."""

    def __init__(self, connector_id: str, message: str = "No connector with that id."):
        super().__init__(message)
        self.connector_id = connector_id


def _key_allows(connector_id: str) -> bool:
    key_scope = current_key_scope.get()
    return key_scope is None or key_scope.allows_connector(connector_id)


def in_space(space=None):
    """The stored connectors of ``space`` (by default the current one)."""
    space_id = current_space_id.get() if space is None else getattr(space, "pk", space)
    return Connector.objects.filter(space_id=space_id)


def find(connector_id: str) -> Connector | None:
    """The connector with this id in the current space, read from the database: a preconfigured one first; None if
    neither."""
    if not _key_allows(connector_id):
        return None
    preconfigured = preconfigured_connectors().get(connector_id)
    if preconfigured is not None:
        return preconfigured
    if unstorable_character_error("id", connector_id):
        return None  # no row holds such an id (a NUL, from %00 in a URL), and PostgreSQL could not even compare it
    return in_space().filter(pk=connector_id).first()


_reads = SingleFlight()  # a burst of calls to a connector not cached yet reads it once


async def _read_and_keep(connector_id: str) -> Connector | None:
    connector = await Connector.objects.filter(pk=connector_id).afirst()
    if connector is not None:
        connector_cache.put(connector)
    return connector


async def afind(connector_id: str) -> Connector | None:
    """``find`` for the execution path: a stored connector comes from the process's cache when it is there.

    The instance may be shared by concurrent executions: treat it as read-only. The space is compared with the
    cached connector's, so the space costs no query either.
    """
    if not _key_allows(connector_id):
        return None
    preconfigured = preconfigured_connectors().get(connector_id)
    if preconfigured is not None:
        return preconfigured
    if unstorable_character_error("id", connector_id):
        return None  # as in find
    connector = connector_cache.get(connector_id)
    if connector is None:
        connector = await _reads.run(connector_id, lambda: _read_and_keep(connector_id))
    if connector is not None and connector.space_id != current_space_id.get():
        return None
    return connector


def all_connectors() -> list[Connector]:
    """Every connector of the current space, preconfigured ones first, each group by name."""
    preconfigured = sorted(preconfigured_connectors().values(), key=lambda c: c.name.lower())
    return [c for c in preconfigured + list(in_space().order_by("name")) if _key_allows(str(c.pk))]


def get_connector_or_404(request_or_user, connector_id: str, permission: str, *, find: Callable = find,
                         missing: str = "No connector with that id."):
    """The connector of a URL for a user who holds ``permission``.

    Raises PermissionDenied (403) when the user lacks the permission, checked first so that a caller without it
    learns nothing about which ids exist, then ConnectorNotFound (404). ``find`` is how the id is looked up (the
    usage pages also find deleted connectors that left events), ``missing`` the 404's message.
    """
    user = request_or_user.user if isinstance(request_or_user, HttpRequest) else request_or_user
    check(user, permission)
    connector = find(connector_id)
    if connector is None:
        raise ConnectorNotFound(connector_id, missing)
    return connector


async def aget_connector_or_404(request_or_user, connector_id: str, permission: str) -> Connector:
    """``get_connector_or_404`` for async views, through the execution path's cache (``afind``)."""
    user = await request_or_user.auser() if isinstance(request_or_user, HttpRequest) else request_or_user
    if not await amay(user, permission):
        raise PermissionDenied(denial_message(permission))
    connector = await afind(connector_id)
    if connector is None:
        raise ConnectorNotFound(connector_id)
    return connector


def connector_name(connector_id: str) -> str:
    """The name of the connector with this id, for people to read; empty when there is none (deleted since)."""
    connector = find(connector_id) if connector_id else None
    return connector.name if connector is not None else ""
