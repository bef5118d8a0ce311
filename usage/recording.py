"""The one write path for execution events: insert the events and add them to the usage rollups atomically.

Rollups are updated with an upsert that adds in SQL (``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x``),
so concurrent writers on PostgreSQL and SQLite never lose a count.
"""

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable

from django.db import connection, transaction

from usage.models import (
    LATENCY_BIN_BOUNDS_MS,
    LATENCY_BIN_COUNT,
    ExecutionEvent,
    UsageRollup,
    latency_bin_field,
)

SUM_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
    "duration_ms_sum",
) + tuple(latency_bin_field(i) for i in range(LATENCY_BIN_COUNT))
KEY_FIELDS = ("connector_id", "bucket", "model", "user_name", "outcome")


def latency_bin(duration_ms: float) -> int:
    return bisect_left(LATENCY_BIN_BOUNDS_MS, duration_ms)


def rollup_key(event: ExecutionEvent) -> tuple:
    bucket = event.timestamp.replace(minute=0, second=0, microsecond=0)
    return (event.connector_id, bucket, event.model[:255], event.user_name, event.outcome)


def rollup_deltas(events: Iterable[ExecutionEvent]) -> dict[tuple, dict[str, float]]:
    """Sum events into per-rollup-row increments."""
    deltas: dict[tuple, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SUM_FIELDS, 0))
    for event in events:
        row = deltas[rollup_key(event)]
        row["requests"] += 1
        row["prompt_tokens"] += event.prompt_tokens
        row["completion_tokens"] += event.completion_tokens
        row["total_tokens"] += event.total_tokens
        row["cached_tokens"] += event.cached_tokens or 0
        row["reasoning_tokens"] += event.reasoning_tokens or 0
        row["estimated_requests"] += 1 if event.usage_source == "estimated" else 0
        row["duration_ms_sum"] += event.duration_ms
        row[latency_bin_field(latency_bin(event.duration_ms))] += 1
    return deltas


def add_to_rollups(deltas: dict[tuple, dict[str, float]]) -> None:
    """Add increments to the rollup rows, creating missing rows. Safe under concurrent writers."""
    if not deltas:
        return
    table = connection.ops.quote_name(UsageRollup._meta.db_table)
    columns = KEY_FIELDS + SUM_FIELDS
    quoted = [connection.ops.quote_name(c) for c in columns]
    updates = ", ".join(f"{q} = {table}.{q} + excluded.{q}" for q in quoted[len(KEY_FIELDS):])
    row_placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # Sorted so that concurrent batches take row locks in the same order (no deadlocks on PostgreSQL).
    items = sorted(deltas.items(), key=lambda item: tuple(str(part) for part in item[0]))
    bucket_field = UsageRollup._meta.get_field("bucket")
    with connection.cursor() as cursor:
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            params: list = []
            for key, sums in chunk:
                connector_id, bucket, model, user_name, outcome = key
                params += [connector_id, bucket_field.get_db_prep_value(bucket, connection), model, user_name, outcome]
                params += [sums[field] for field in SUM_FIELDS]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(quoted)}) VALUES {', '.join([row_placeholder] * len(chunk))} "
                f"ON CONFLICT ({', '.join(quoted[: len(KEY_FIELDS)])}) DO UPDATE SET {updates}",
                params,
            )


def record_events(events: list[ExecutionEvent]) -> list[ExecutionEvent]:
    """Insert ``events`` and add them to the rollups in one transaction."""
    for event in events:
        event.total_tokens = event.total_tokens or (event.prompt_tokens + event.completion_tokens)
        event.error_message = (event.error_message or "")[:4000]
    with transaction.atomic():
        created = ExecutionEvent.objects.bulk_create(events)
        add_to_rollups(rollup_deltas(created))
    return created


async def record_event(event: ExecutionEvent) -> None:
    """Record one execution from async code."""
    from asgiref.sync import sync_to_async

    await sync_to_async(record_events)([event])
