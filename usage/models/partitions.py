"""The event table's time partitions on PostgreSQL: one partition per UTC day, plus a default partition.

PostgreSQL's declarative partitioning, ``PARTITION BY RANGE (timestamp)``: the event log's cost no longer grows with
its age. Retention drops whole days (``DROP TABLE`` of a partition: instant, nothing for VACUUM), and every query
that names a time range reads only the days in it. Daily, not monthly, by measurement (docs/PERFORMANCE.md,
"Partitions"): a day is the unit of ``EVENT_RETENTION_DAYS``, so the automatic prune never deletes row by row,
and a day's indexes stay small enough to be cached while it is written; the planning cost of a year of daily
partitions on the queries the app runs (all of them name a range, so the planner prunes) stayed under a
millisecond.

Partitions are created ahead (``PARTITION_DAYS_AHEAD`` days) at start-up by the event writer, every hour by it
after that, and by ``manage.py maintain_usage_partitions`` (safe to run from cron, any number of times). An event
outside every day partition (a clock far off, a gap in the maintenance) lands in the default partition, so an
insert never fails for want of a partition; ``maintain_usage_partitions --repair`` moves such events into day
partitions of their own.

SQLite keeps the plain table: every function here does nothing there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

TABLE = "usage_executionevent"
DEFAULT_PARTITION = f"{TABLE}_default"
PARTITION_DAYS_AHEAD = 14
# A partition is dropped only if it can be locked within this time: a long report reading it must not make every
# insert queue behind the DROP.
DROP_LOCK_TIMEOUT = "5s"
_DAY_PARTITION = re.compile(rf"^{TABLE}_p(\d{{8}})$")


def day_partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def is_partitioned(connection) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE])
        return cursor.fetchone() is not None


def day_partitions(connection) -> list[date]:
    """The days that have a partition, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = []
    for name in names:
        match = _DAY_PARTITION.match(name)
        if match:
            days.append(datetime.strptime(match.group(1), "%Y%m%d").date())
    return sorted(days)


def create_day_partition(cursor, day: date, *, parent: str = TABLE) -> None:
    cursor.execute(
        f'CREATE TABLE IF NOT EXISTS "{day_partition_name(day)}" PARTITION OF "{parent}" '
        "FOR VALUES FROM (%s) TO (%s)",
        [day_start(day), day_start(day + timedelta(days=1))],
    )


def ensure_partitions(connection, *, today: date | None = None, ahead: int = PARTITION_DAYS_AHEAD) -> list[date]:
    """Create the partitions of today and the ``ahead`` days after it that are missing; returns the days created.

    Each in its own short transaction. A day whose events are already in the default partition is left to
    ``repair_default_partition`` (PostgreSQL refuses a partition that rows of the default one belong to).
    """
    from django.db import DatabaseError, transaction

    if not is_partitioned(connection):
        return []
    today = today or datetime.now(UTC).date()
    existing = set(day_partitions(connection))
    created = []
    for offset in range(-1, ahead + 1):
        day = today + timedelta(days=offset)
        if day in existing:
            continue
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                create_day_partition(cursor, day)
            created.append(day)
        except DatabaseError:
            continue  # rows of that day wait in the default partition: repair_default_partition moves them
    return created


@dataclass
class DefaultPartitionReport:
    rows: int
    days: list[date]


def default_partition_report(connection) -> DefaultPartitionReport:
    """How many events the default partition holds, and of which days."""
    if not is_partitioned(connection):
        return DefaultPartitionReport(0, [])
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT (timestamp AT TIME ZONE \'UTC\')::date AS day, count(*) FROM "{DEFAULT_PARTITION}" '
            "GROUP BY 1 ORDER BY 1"
        )
        rows = cursor.fetchall()
    return DefaultPartitionReport(sum(count for _day, count in rows), [day for day, _count in rows])


def repair_default_partition(connection) -> int:
    """Move the default partition's events into day partitions of their own; returns how many were moved.

    One transaction per day: the day's rows are moved into a new table that is then attached as that day's
    partition (attaching checks the default partition no longer holds rows of that day, which it no longer does).
    """
    from django.db import transaction

    moved = 0
    for day in default_partition_report(connection).days:
        name = day_partition_name(day)
        bounds = [day_start(day), day_start(day + timedelta(days=1))]
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(f'CREATE TABLE "{name}" (LIKE "{TABLE}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
            cursor.execute(
                f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE timestamp >= %s AND timestamp < %s '
                f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
                bounds,
            )
            moved += cursor.rowcount
            cursor.execute(f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)', bounds)
    return moved


def partition_days_before(connection, cutoff: datetime) -> list[date]:
    """The days whose partition ends at or before ``cutoff``, oldest first (none on SQLite)."""
    if not is_partitioned(connection):
        return []
    return [day for day in day_partitions(connection) if day_start(day + timedelta(days=1)) <= cutoff]


def drop_partitions(connection, days: list[date]) -> None:
    """Drop the partitions of ``days`` in one statement (one lock of the parent, one commit); one that is gone
    already is skipped."""
    from django.db import transaction

    if not days:
        return
    names = ", ".join(f'"{day_partition_name(day)}"' for day in days)
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
        cursor.execute(f"DROP TABLE IF EXISTS {names}")
