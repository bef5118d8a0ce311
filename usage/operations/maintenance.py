"""Maintenance of the event log: recompute the rollups from the events, and prune old raw events.

Both work in chunks of time, each in its own short transaction, so that a rebuild or prune over millions of
events never holds a lock for minutes and concurrent recording keeps working between chunks.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncHour

from usage.models import (
    LATENCY_BIN_COUNT,
    NO_API_KEY,
    ROLLUP_KEY_FIELDS,
    ROLLUP_SUM_FIELDS,
    ExecutionEvent,
    UsageRollup,
    latency_bin_condition,
    latency_bin_field,
    rollup_model,
    unpriced_condition,
)
from usage.models.partitions import day_start, detach_partitions, partition_days_before
from usage.models.summaries import UsageHourlyTotal
from usage.ranges import ceil_hour, floor_hour

DEFAULT_CHUNK = timedelta(days=1)
PRUNE_BATCH = 10_000


def aggregate_events(events):
    """An ExecutionEvent queryset grouped into rollup rows: values in ROLLUP_KEY_FIELDS + ROLLUP_SUM_FIELDS order.

    The bucket, model and API key are computed as usage.models.rollups does: the UTC hour, the response model or
    else the requested one, and the key's id or NO_API_KEY.
    """
    sums = {
        "n_requests": Count("id"),
        "n_prompt_tokens": Sum("prompt_tokens"),
        "n_completion_tokens": Sum("completion_tokens"),
        "n_total_tokens": Sum("total_tokens"),
        "n_cached_tokens": Sum(Coalesce("cached_tokens", Value(0))),
        "n_reasoning_tokens": Sum(Coalesce("reasoning_tokens", Value(0))),
        "n_estimated_requests": Count("id", filter=Q(usage_source="estimated")),
        "n_duration_ms_sum": Sum("duration_ms"),
        "n_cost_nanos": Sum(Coalesce("cost_nanos", Value(0))),
        "n_unpriced_requests": Count("id", filter=unpriced_condition()),
    }
    for index in range(LATENCY_BIN_COUNT):
        sums[f"n_{latency_bin_field(index)}"] = Count("id", filter=latency_bin_condition(index))
    return (
        events.order_by()
        .annotate(rollup_bucket=TruncHour("timestamp", tzinfo=UTC), rollup_model=rollup_model(),
                  rollup_api_key=Coalesce("api_key_id", Value(NO_API_KEY)))
        .values("connector_id", "space_id", "rollup_bucket", "rollup_model", "user_name", "rollup_api_key", "outcome")
        .annotate(**sums)
    )


def insert_rollups_from_events(events) -> int:
    """INSERT INTO the rollups SELECT the events' sums GROUP BY the rollup key, in one statement; returns the rows.

    Done in SQL because building millions of rollup rows in Python would take most of a rebuild's time.
    """
    select_sql, params = aggregate_events(events).query.sql_with_params()
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in ROLLUP_KEY_FIELDS + ROLLUP_SUM_FIELDS)
    table = quote(UsageRollup._meta.db_table)
    with connection.cursor() as cursor:
        # SELECT * keeps the grouped query's column order: the values() fields, then the sums in dict order.
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM ({select_sql}) AS grouped", params)
        return cursor.rowcount


def _lock_rollups_against_writers() -> None:
    """Hold off the recording upserts until this transaction ends (readers are not blocked).

    Without it, an event committed between this chunk's DELETE and its INSERT would be counted twice or make
    the INSERT fail on the unique key. On SQLite the IMMEDIATE transaction already holds the database's
    write lock, which serialises writers the same way.
    """
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(UsageRollup._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")


@dataclass
class RebuildResult:
    start: datetime | None
    chunks: int = 0
    events: int = 0
    rollup_rows: int = 0


def rebuild_rollups(
    *,
    connector_id: str | None = None,
    chunk: timedelta = DEFAULT_CHUNK,
    progress: Callable[[datetime, datetime, int], None] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> RebuildResult:
    """Recompute the rollups from the events, one chunk of time per transaction.

    Rebuilds from the hour of the oldest event on: rollups older than that summarise events that
    ``prune_usage_events`` removed, and are kept. Each chunk replaces its rollup rows with the sums of its
    events atomically, so the dashboards read correct numbers before, during and after a rebuild.
    ``since`` / ``until`` limit the rebuild to the whole hours around them (reprice_usage rebuilds only the range
    it repriced); the rollups outside are left as they are.
    """
    events = ExecutionEvent.objects.all()
    rollups = UsageRollup.objects.all()
    if connector_id is not None:
        events = events.filter(connector_id=connector_id)
        rollups = rollups.filter(connector_id=connector_id)
    oldest = events.order_by("timestamp").values_list("timestamp", flat=True).first()
    if oldest is None:
        return RebuildResult(start=None)
    start = floor_hour(oldest)
    newest = max(
        events.order_by("-timestamp").values_list("timestamp", flat=True).first(),
        rollups.order_by("-bucket").values_list("bucket", flat=True).first() or start,
    )
    # The last chunk is open-ended, so events recorded while the rebuild runs land in a chunk either way.
    stop = ceil_hour(newest + timedelta(microseconds=1))
    bounded = until is not None and ceil_hour(until) < stop
    if since is not None:
        start = max(start, floor_hour(since))
    if bounded:
        stop = ceil_hour(until)
    if start >= stop:
        return RebuildResult(start=None)
    result = RebuildResult(start=start)
    chunk_start = start
    while chunk_start < stop:
        chunk_end = chunk_start + chunk
        # A bounded rebuild ends at its last whole hour; the events after it belong to rollups it leaves alone.
        is_last = chunk_end >= stop and not bounded
        chunk_end = min(chunk_end, stop)
        with transaction.atomic():
            _lock_rollups_against_writers()
            in_chunk = Q(timestamp__gte=chunk_start) if is_last else Q(timestamp__gte=chunk_start, timestamp__lt=chunk_end)
            rollup_in_chunk = Q(bucket__gte=chunk_start) if is_last else Q(bucket__gte=chunk_start, bucket__lt=chunk_end)
            rollups.filter(rollup_in_chunk).delete()
            rows = insert_rollups_from_events(events.filter(in_chunk))
            result.events += rollups.filter(rollup_in_chunk).aggregate(n=Sum("requests"))["n"] or 0
        result.chunks += 1
        result.rollup_rows += rows
        if progress is not None:
            progress(chunk_start, chunk_end, rows)
        chunk_start = chunk_end
    return result


def parse_age(raw: str) -> timedelta:
    """``90d``, ``12h`` or ``2w`` as a timedelta; ValueError with a readable message otherwise."""
    text = raw.strip().lower()
    units = {"h": "hours", "d": "days", "w": "weeks"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"{raw!r} is not an age such as 90d, 12h or 2w")
    amount = int(text[:-1])
    if amount <= 0:
        raise ValueError("the age must be more than zero")
    return timedelta(**{units[text[-1]]: amount})


def prune_cutoff(now: datetime, older_than: timedelta) -> datetime:
    # Whole hours only: the hour the cut-off falls in keeps all its events, so the rollup of every hour that
    # still has events can be rebuilt exactly from them.
    return floor_hour(now - older_than)


def prune_events(cutoff: datetime, *, batch: int = PRUNE_BATCH) -> int:
    """Remove raw events older than ``cutoff``; rollups are kept. Returns the count.

    On PostgreSQL the whole day partitions before the cut are detached (usage/models/partitions.py: catalog changes
    only, one short transaction; nothing is deleted row by row or left for VACUUM) and their events counted from
    the rollups' hourly totals, which count every event exactly, instead of counting the rows. Only the events of
    the day the cut falls in (and any in the default partition) are deleted row by row, in batches (short
    transactions). On SQLite every old event is deleted that way. The detached partitions' disk space comes back
    with ``release_pruned_partitions``, which the command and the event log's keeper run right after.
    """
    deleted = 0
    detached_days = detach_partitions(connection, partition_days_before(connection, cutoff))
    if detached_days:
        deleted += UsageHourlyTotal.objects.filter(
            bucket__gte=day_start(detached_days[0]), bucket__lt=day_start(detached_days[-1] + timedelta(days=1)),
            bucket__date__in=detached_days,  # a day without a partition has its events in the default one
        ).aggregate(n=Sum("requests"))["n"] or 0
    old_events = ExecutionEvent.objects.filter(timestamp__lt=cutoff)
    while True:
        with transaction.atomic():
            # A batch is the oldest ``batch`` events, bounded by time (the batch-th oldest's): a range of the
            # timestamp index, rather than a list of ids sent back (twice as slow at 10,000 a batch). Events sharing
            # the bound's time go in the same batch.
            bound = old_events.order_by("timestamp").values_list("timestamp", flat=True)[batch - 1 : batch].first()
            in_batch = old_events if bound is None else old_events.filter(timestamp__lte=bound)
            count, _ = in_batch.delete()
        deleted += count
        if bound is None:
            return deleted


def retention_cutoff(now: datetime, days: int) -> datetime:
    """The cut of ``EVENT_RETENTION_DAYS``: the start of the UTC day ``days`` days ago, so that the automatic prune
    only ever drops whole day partitions."""
    return day_start((now - timedelta(days=days)).astimezone(UTC).date())
