"""Which connectors' usage the current space's dashboards count (README "Spaces").

The rollups are kept per connector, not per space; a space's usage is therefore the usage of its connectors: the
stored connectors of the space, the connectors that were in it and left events (deleted ones), and the
preconfigured connectors, which are in every space. Raw events carry their space (``ExecutionEvent.space_id``), so
the Logs tab, My usage and the exports read exactly the space's events.
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
    """The ids of every connector whose usage the current space counts."""
    ids = set(lookup.in_space().values_list("pk", flat=True))
    ids |= set(preconfigured_connectors())
    ids |= set(ExecutionEvent.objects.filter(space_id=space_id()).order_by().values_list("connector_id", flat=True)
               .distinct())
    return ids


def events():
    """The current space's events."""
    return ExecutionEvent.objects.filter(space_id=space_id())
