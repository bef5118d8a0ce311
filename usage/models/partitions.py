"""The event table's time partitions on PostgreSQL: one partition per UTC day, plus a default partition.

PostgreSQL's declarative partitioning, ``PARTITION BY RANGE (timestamp)``: the event log's cost no longer grows with
its age. Retention removes whole days (a partition detached, then dropped: nothing deleted row by row, nothing for
VACUUM), and every query that names a time range reads only the days in it. Daily, not monthly, by measurement
(docs/PERFORMANCE.md, "Partitions"): a day is the unit of ``EVENT_RETENTION_DAYS``, so the automatic prune never
deletes row by row, and a day's indexes stay small enough to be cached while it is written; the planning cost of a
year of daily partitions on the queries the app runs (all of them name a range, so the planner prunes) stayed under
a millisecond.

Partitions are created ahead (``PARTITION_DAYS_AHEAD`` days) at start-up by the event writer, every hour by it
after that, and by ``manage.py maintain_usage_partitions`` (safe to run from cron, any number of times). An event
outside every day partition (a clock far off, a gap in the maintenance) lands in the default partition, so an
insert never fails for want of a partition; ``maintain_usage_partitions --repair`` moves such events into day
partitions of their own.

SQLite keeps the plain table: every function here does nothing there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

TABLE = "usage_executionevent"
DEFAULT_PARTITION = f"{TABLE}_default"
PARTITION_DAYS_AHEAD = 14
# Partitions are detached only if the event table can be locked within this time: a long report reading it must
# not make every insert queue behind the DETACH.
DETACH_LOCK_TIMEOUT = "5s"
DETACH_ADVISORY_LOCK_KEY = 7_240_025  # any number no other part of the app locks on
logger = logging.getLogger(__name__)
_DAY_PARTITION = re.compile(rf"^{TABLE}_p(\d{{8}})$")
# A day partition once detached by the retention, until release_pruned_partitions drops it.
PRUNED_PATTERN = rf"^{TABLE}_pruned_p[0-9]{{8}}$"
# How long dropping a detached partition waits for its lock (a session still reading that day, or, for a table
# detached before migration 0014 dropped the event table's foreign keys, auth_user and connectors_apikey, which its
# DROP then locks out for an instant): past it the table is left for the next run.
RELEASE_LOCK_TIMEOUT = "200ms"


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


def pruned_partition_name(day: date) -> str:
    return f"{TABLE}_pruned_p{day:%Y%m%d}"


def detach_partitions(connection, days: list[date]) -> list[date]:
    """Take the partitions of ``days`` out of the event table, in one short transaction; returns the days detached
    (a day without a partition is skipped).

    The retention's cut, in catalog changes only: once it commits, no query of the event table sees those days'
    events. Each detached table is renamed ``..._pruned_pYYYYMMDD`` and left to ``release_pruned_partitions``.
    Dropping the partitions here instead would lock the event table as briefly (a few milliseconds a day) but make
    the prune last as long as the file system takes to free their files, which PostgreSQL does as the DROP commits:
    seconds for a month on the benchmark machine (docs/PERFORMANCE.md, "Event log at scale").
    """
    from django.db import transaction

    if not days:
        return []
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'")
        # One prune at a time (the command beside the keeper): the second sees what the first left attached.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DETACH_ADVISORY_LOCK_KEY])
        present = set(day_partitions(connection))
        days = [day for day in days if day in present]
        # Renamed first: that locks only the partition, so the event table is locked (by the first DETACH) for the
        # detaching alone.
        for day in days:
            cursor.execute(f'ALTER TABLE "{day_partition_name(day)}" RENAME TO "{pruned_partition_name(day)}"')
        for day in days:
            cursor.execute(f'ALTER TABLE "{TABLE}" DETACH PARTITION "{pruned_partition_name(day)}"')
    return days


def pruned_partitions(connection) -> list[str]:
    """The tables ``detach_partitions`` left that ``release_pruned_partitions`` has not dropped yet."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s AND pg_table_is_visible(oid) "
            "ORDER BY relname",
            [PRUNED_PATTERN],
        )
        return [row[0] for row in cursor.fetchall()]


def release_pruned_partitions(connection) -> int:
    """Drop the tables ``detach_partitions`` left, each in its own transaction; returns how many were dropped.

    This is where the disk space comes back, as each DROP commits, and it takes as long as the file system needs to
    free the files (about 150 ms for a day of 170,000 events on the benchmark machine). PostgreSQL frees them after
    releasing its locks, and the tables are no longer part of the event table, so no query waits for that. A DROP
    waits at most ``RELEASE_LOCK_TIMEOUT`` for its table (and, for a table detached before migration 0014 while the
    event table's foreign keys still held, for auth_user and connectors_apikey, which a request reading them queues
    behind meanwhile), else the table is left for the next run (logged). Run after each prune by
    ``prune_usage_events`` and every hour by the event log's keeper.
    """
    from django.db import OperationalError, transaction

    released = 0
    for name in pruned_partitions(connection):
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{RELEASE_LOCK_TIMEOUT}'")
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
        except OperationalError as exc:
            logger.warning("%s is left for the next run: %s", name, exc)
            continue
        released += 1
    return released
