"""The current space of the usage pages (README "Spaces"), its events, and the connectors it counts.

Events and rollups both carry their space (``space_id``), so the dashboards (``usage.dashboards.queries.of_space``),
the Logs tab, My usage and the exports read exactly the space's calls, a preconfigured connector's included (it
is in every space, and each space sees the calls made in it). ``connector_ids`` says which of some connectors a
space's governance pages may name: its stored connectors, the preconfigured ones, and those that were in it and
left usage (deleted ones).
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.models import Connector
from connectors.preconfigured import preconfigured_connectors
from connectors.spaces.current import DEFAULT_SPACE_ID, current_space_id
from usage.models import ExecutionEvent, UsageHourlyTotal


def space_id() -> str:
    return current_space_id.get()


def is_default_space() -> bool:
    return current_space_id.get() == DEFAULT_SPACE_ID


def connector_ids(among: Iterable[str]) -> set[str]:
    """Of the connector ids ``among``, those the current space counts: its own, the preconfigured ones, and deleted
    ones that left usage in it.

    Asked about the ids a page is about to show (a price's connector, say) rather than listing every connector the
    space ever used: that list would be a DISTINCT over the space's events or rollups, which grow with time. This
    reads no event: one query for the stored connectors among the ids, and for each id stored nowhere (deleted)
    one probe of the hourly totals' key (connector, space, ...), which stay after the events are pruned.
    """
    wanted = {connector_id for connector_id in among if connector_id}
    if not wanted:
        return set()
    ours = wanted & set(preconfigured_connectors())
    stored = dict(Connector.objects.filter(pk__in=wanted - ours).values_list("pk", "space_id"))
    ours |= {connector_id for connector_id, space in stored.items() if space == space_id()}
    for deleted in sorted(wanted - ours - set(stored)):
        if UsageHourlyTotal.objects.filter(connector_id=deleted, space_id=space_id()).exists():
            ours.add(deleted)
    return ours


def events():
    """The current space's events."""
    return ExecutionEvent.objects.filter(space_id=space_id())
