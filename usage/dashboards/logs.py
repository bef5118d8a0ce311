"""The Logs tab: one connector's executions, newest first, a page at a time, with counts per outcome.

Pagination is by keyset, never by offset: a page is "the next 50 events older than (timestamp, id) of the last
row shown", so page 1,000 costs what page 1 costs. The query of a page,

    SELECT ... FROM usage_executionevent
    WHERE connector_id = %s AND timestamp >= %s AND timestamp < %s      -- the range
      [AND timestamp <= %s AND (timestamp < %s OR id < %s)]             -- the cursor
      [AND outcome = %s ...]                                            -- the filters
    ORDER BY timestamp DESC, id DESC LIMIT 51

is served on PostgreSQL by the index ``event_connector_time_id`` (connector_id, timestamp, id), migration 0005:

    Limit
      ->  Index Scan Backward using event_connector_time_id on usage_executionevent
            Index Cond: ((connector_id = 'c') AND ("timestamp" >= ...) AND ("timestamp" < ...) AND ("timestamp" <= ...))
            Filter: (("timestamp" < ...) OR (id < ...))

(when the table holds one connector only, as in bench/logs.py, the planner may pick the older ``event_time`` index
with ``Filter: connector_id = ...`` and an Incremental Sort on id: the same handful of rows read), and, for a user
limited to their own calls, by ``event_user_connector_time`` (user_id, connector_id, timestamp,
id) with the same shape. The scan stops after 51 matching rows; a filter (outcome, model, user, sub-action,
search) becomes a ``Filter:`` line on that scan, so a rare value reads more index entries before the page is full,
bounded by the range. bench/logs.py measures both at 10 million events (docs/PERFORMANCE.md, "Logs tab").

The query first names only the day next to the page's end (``WINDOWS``: then the week, then the whole range), so
that on the partitioned table it is planned over one or two day partitions rather than the range's ninety.

Counts per outcome come from the rollups when the filters are ones the rollups are keyed by (user, model, API key),
and otherwise from the events, capped at ``COUNT_CAP`` per outcome so that a broad search never counts millions.
"""

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q, Sum

from connectors.query_params import checked_moment, database_id
from usage import space_scope
from usage.dashboards.event_filters import EventFilters
from usage.dashboards.queries import UsageSlice, of_space, rollup_sources
from usage.models import ExecutionEvent, Outcome, UsageHourlyTotal
from usage.ranges import UsageRange

PAGE_SIZE = 50
COUNT_CAP = 10_000
# A page is looked for in the day next to its end first, then the week, then the whole range: on PostgreSQL the
# planner considers every day partition of the range it is given (about 0.1 ms each with the table's indexes,
# docs/PERFORMANCE.md "Event log at scale"), so a 90-day page cost more to plan than to read; a busy connector's
# page is in the first day, a quiet one's costs the two narrower looks more.
WINDOWS = (timedelta(days=1), timedelta(days=7))
LIST_COLUMNS = (
    "id",
    "timestamp",
    "outcome",
    "source",
    "sub_action",
    "user_name",
    "requested_model",
    "response_model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "duration_ms",
    "upstream_status",
    "error_message",
    "usage_source",
    "cost_nanos",
    # The key's name: a join on the primary key of connectors_apikey for the page's rows only.
    "api_key__name",
)


class InvalidCursor(ValueError):
    """A ``before``/``after`` parameter that was not made by this page (edited or truncated)."""


@dataclass(frozen=True)
class Cursor:
    timestamp: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.timestamp.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            moment, _, event_id = raw.partition("|")
            timestamp = datetime.fromisoformat(moment)
            if timestamp.tzinfo is None:
                raise ValueError("naive")
            # A hand-made link is held to what the database can compare, as query-string times and ids are.
            return cls(checked_moment("before", timestamp), database_id("before", event_id))
        except (ValueError, UnicodeDecodeError):
            raise InvalidCursor("[before]/[after]: this page link is not valid; start again from the newest events.") from None


@dataclass
class LogPage:
    events: list[dict]
    newer: Cursor | None  # pass as ``after`` to show the page before this one
    older: Cursor | None  # pass as ``before`` to show the page after this one


def _events(connector_id: str, usage_range: UsageRange, filters: EventFilters):
    events = space_scope.events().filter(
        connector_id=connector_id, timestamp__gte=usage_range.start, timestamp__lt=usage_range.end
    )
    return filters.apply(events)


def _first_rows(events, ordering: tuple[str, ...], limit: int, windows: list[dict]) -> list[dict]:
    """The first ``limit`` rows of ``events`` in ``ordering``, read in ever wider time windows from the page's end:
    each window holds every event nearer that end than the next, so as soon as one holds ``limit`` rows they are
    the answer."""
    for window in windows:
        rows = list(events.filter(**window).order_by(*ordering).values(*LIST_COLUMNS)[:limit])
        if len(rows) == limit:
            break
    return rows


def _windows(usage_range: UsageRange, anchor: datetime, *, older: bool) -> list[dict]:
    """Time conditions of ``WINDOWS`` from ``anchor`` towards the older (or newer) end of the range, then none."""
    windows = []
    for width in WINDOWS:
        if older and anchor - width > usage_range.start:
            windows.append({"timestamp__gte": anchor - width})
        elif not older and anchor + width < usage_range.end:
            windows.append({"timestamp__lt": anchor + width})
    return [*windows, {}]


def log_page(
    connector_id: str,
    usage_range: UsageRange,
    filters: EventFilters,
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> LogPage:
    """One page of events, newest first: the newest ones, those older than ``before`` or newer than ``after``."""
    events = _events(connector_id, usage_range, filters)
    if after is not None:
        # Read upwards from the cursor (ascending on the same index), then show the rows newest first.
        events = events.filter(timestamp__gte=after.timestamp).filter(
            Q(timestamp__gt=after.timestamp) | Q(id__gt=after.id)
        )
        rows = _first_rows(events, ("timestamp", "id"), size + 1, _windows(usage_range, after.timestamp, older=False))
        has_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        has_older = True
    else:
        if before is not None:
            events = events.filter(timestamp__lte=before.timestamp).filter(
                Q(timestamp__lt=before.timestamp) | Q(id__lt=before.id)
            )
        anchor = before.timestamp if before is not None else usage_range.end
        rows = _first_rows(events, ("-timestamp", "-id"), size + 1, _windows(usage_range, anchor, older=True))
        has_older = len(rows) > size
        rows = rows[:size]
        has_newer = before is not None
    for row in rows:
        row["model"] = row["response_model"] or row["requested_model"]
    return LogPage(
        events=rows,
        newer=Cursor(rows[0]["timestamp"], rows[0]["id"]) if rows and has_newer else None,
        older=Cursor(rows[-1]["timestamp"], rows[-1]["id"]) if rows and has_older else None,
    )


@dataclass
class OutcomeCount:
    outcome: str
    label: str
    count: int
    capped: bool = False  # True: at least ``count``


def outcome_counts(connector_id: str, usage_range: UsageRange, filters: EventFilters) -> list[OutcomeCount]:
    """Events per outcome in the range under every filter but the outcome one (so each count is a choice)."""
    filters = filters.without_outcome()
    if filters.rollups_can_count:
        usage_slice = UsageSlice(user=filters.user, model=filters.model, api_key=filters.api_key)
        if usage_slice:
            sources = rollup_sources(connector_id, usage_range, usage_slice)
        else:
            sources = [of_space(UsageHourlyTotal.objects.filter(
                bucket__gte=usage_range.start, bucket__lt=usage_range.end), connector_id)]
        totals = dict.fromkeys(Outcome.values, 0)
        for source in sources:
            for row in source.order_by().values("outcome").annotate(n=Sum("requests")):
                totals[row["outcome"]] += row["n"] or 0
        return [OutcomeCount(value, label, totals[value]) for value, label in Outcome.choices]
    counts = []
    events = _events(connector_id, usage_range, filters)
    for value, label in Outcome.choices:
        count = events.filter(outcome=value).order_by()[: COUNT_CAP + 1].count()
        counts.append(OutcomeCount(value, label, min(count, COUNT_CAP), capped=count > COUNT_CAP))
    return counts


def find_event(
    connector_id: str, event_id: int, *, at: datetime | None = None, only_user_id: int | None = None
) -> ExecutionEvent | None:
    """One event of this connector (and of this user, when limited to their own calls); None otherwise.

    ``at``, the event's time (the Logs tab's links carry it), lets PostgreSQL read the one day partition it is in
    (usage/models/partitions.py) instead of looking the id up in each; a link without it still finds the event.
    """
    events = space_scope.events().filter(connector_id=connector_id, pk=event_id)
    if at is not None:
        events = events.filter(timestamp=at)
    if only_user_id is not None:
        events = events.filter(user_id=only_user_id)
    return events.first()
