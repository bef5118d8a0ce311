"""Recomputing stored costs after a price correction (``manage.py reprice_usage``), rollups included.

The events of the range (widened to whole UTC hours, the rollups' grain) are priced again with the current price
table, each at the price of its own day, in chunks of events; only the costs that change are written. Then the
rollups of those hours are rebuilt from the events (usage/operations/maintenance.py), which the summary triggers carry into
the hourly and daily summaries. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction

from usage.governance.pricing.prices import PriceTable, cost_of_event
from usage.models import ExecutionEvent
from usage.operations.maintenance import rebuild_rollups
from usage.ranges import ceil_hour, floor_hour

EVENTS_PER_CHUNK = 2000


@dataclass
class RepriceResult:
    start: dt.datetime
    end: dt.datetime
    events: int = 0
    changed: int = 0
    rollup_rows: int = 0


def reprice(start: dt.datetime, end: dt.datetime, *, connector_id: str | None = None) -> RepriceResult:
    """Reprice the events in [start, end) (whole hours around them) and rebuild their rollups."""
    start, end = floor_hour(start), ceil_hour(end)
    result = RepriceResult(start, end)
    table = PriceTable.load()  # read now, not the process's cached copy, which may predate the correction
    events = ExecutionEvent.objects.filter(timestamp__gte=start, timestamp__lt=end)
    if connector_id:
        events = events.filter(connector_id=connector_id)
    fields = ("id", "connector_id", "timestamp", "requested_model", "response_model", "prompt_tokens",
              "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_nanos")
    last_id = 0
    while True:
        chunk = list(events.filter(id__gt=last_id).order_by("id").only(*fields)[:EVENTS_PER_CHUNK])
        if not chunk:
            break
        last_id = chunk[-1].id
        changed = []
        for event in chunk:
            cost = cost_of_event(event, table)
            if cost != event.cost_nanos:
                event.cost_nanos = cost
                changed.append(event)
        with transaction.atomic():
            ExecutionEvent.objects.bulk_update(changed, ["cost_nanos"], batch_size=500)
        result.events += len(chunk)
        result.changed += len(changed)
    rebuilt = rebuild_rollups(connector_id=connector_id or None, since=start, until=end)
    result.rollup_rows = rebuilt.rollup_rows
    return result
