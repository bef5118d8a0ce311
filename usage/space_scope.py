"""The current space of the usage pages (README "Spaces"), its events, and the connectors it counts.

Events and rollups both carry their space (``space_id``), so the dashboards (``usage.dashboards.queries.of_space``),
the Logs tab, My usage and the exports read exactly the space's calls, a preconfigured connector's included (it
is in every space, and each space sees the calls made in it). ``connector_ids`` lists the connectors a space's
governance pages may name: its stored connectors, the preconfigured ones, and those that were in it and left
events (deleted ones).
"""

from __future__ import annotations

from connectors import lookup
from connectors.preconfigured import preconfigured_connectors
from connectors.spaces.current import DEFAULT_SPACE_ID, current_space_id
from usage.models import ExecutionEvent


def space_id() -> str:
    return current_space_id.get()


def is_default_space() -> bool:
    return current_space_id.get() == DEFAULT_SPACE_ID


def connector_ids() -> set[str]:
    """The ids of every connector the current space counts: its own, the preconfigured ones, deleted ones with
    events in it."""
    ids = set(lookup.in_space().values_list("pk", flat=True))
    ids |= set(preconfigured_connectors())
    ids |= set(ExecutionEvent.objects.filter(space_id=space_id()).order_by().values_list("connector_id", flat=True)
               .distinct())
    return ids


def events():
    """The current space's events."""
    return ExecutionEvent.objects.filter(space_id=space_id())
