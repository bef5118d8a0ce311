"""Turn an existing, unpartitioned event table into the partitioned one (usage/models/partitions.py), online.

Used by migration 0008 on PostgreSQL. The app keeps recording throughout:

1. A partitioned twin of the table is created (same columns, defaults and identity; primary key (id, timestamp),
   since a partitioned table's unique keys must hold its partition key), with a partition for every day from the
   oldest event to ``PARTITION_DAYS_AHEAD`` days ahead, and a default partition.
2. The events are copied in chunks of ids, each chunk its own transaction: the original table takes inserts all
   along (an INSERT ... SELECT takes no lock that blocks writers of the table it reads). Each pass copies up to an
   id below which every event is committed (``_settled_max_id``), so an event whose transaction commits late is
   never skipped.
3. The indexes and foreign keys are built on the twin, still without blocking anyone; then the events recorded
   meanwhile are copied, in rounds, until few are left.
4. Then, in one short transaction, the original table is locked against writes (readers go on), the events
   recorded since the last chunk are copied, the identity sequence is carried over, and the two tables swap
   names. Only this step holds a write lock: the time to copy the last chunk's worth of events (measured at 10
   million events in docs/PERFORMANCE.md, "Partitions"). An insert waiting on the lock then goes to the new
   table, since PostgreSQL looks the name up again once it has the lock.
5. The original table is dropped.

Events are append-only, which is what makes the catch-up by id complete. Two things change old rows and should
not run during the conversion: ``prune_usage_events`` (a deleted event that was already copied would come back)
and deleting a user or an API key (refused while the copy holds their id, since the twin's foreign keys
see the copied rows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction

from usage.models.partitions import (
    DEFAULT_PARTITION,
    PARTITION_DAYS_AHEAD,
    TABLE,
    create_day_partition,
    is_partitioned,
)

NEW = f"{TABLE}_partitioned"
OLD = f"{TABLE}_unpartitioned"
COPY_CHUNK = 200_000
# The uid's unique key with the partition key (usage/models/events.py), in place of the uid's own.
UID_TIME_CONSTRAINT = ("event_uid_time", 'UNIQUE (uid, "timestamp")')
SWAP_LOCK_TIMEOUT = "30s"
# The locked step copies what was recorded since the last round; rounds go on while more than this many events
# arrived during the previous one.
CATCH_UP_ROWS = 5_000
CATCH_UP_ROUNDS = 10

logger = logging.getLogger(__name__)


@dataclass
class ConversionResult:
    copied: int = 0
    caught_up: int = 0
    write_lock_seconds: float = 0.0


def convert_to_partitioned(
    connection,
    *,
    chunk: int = COPY_CHUNK,
    extra_constraints: tuple[tuple[str, str], ...] = (UID_TIME_CONSTRAINT,),
    before_swap: Callable[[], None] | None = None,
) -> ConversionResult | None:
    """Convert the event table (see the module's docstring); None when it is partitioned already or not PostgreSQL.

    A unique constraint of the original that lacks the timestamp cannot exist on the partitioned table and is left
    behind; ``extra_constraints`` (name, definition) are added to the twin instead.

    ``before_swap`` runs after the bulk copy, before the locked swap (tests record events there, as a live app
    would). Runs outside a transaction: each step commits on its own.
    """
    if connection.vendor != "postgresql" or is_partitioned(connection):
        return None
    result = ConversionResult()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{NEW}" CASCADE')  # left by an interrupted conversion: started again
        cursor.execute(
            f'CREATE TABLE "{NEW}" (LIKE "{TABLE}" INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS) '
            "PARTITION BY RANGE (timestamp)"
        )
        cursor.execute(f'ALTER TABLE "{NEW}" ADD CONSTRAINT "{NEW}_pkey" PRIMARY KEY (id, timestamp)')
        cursor.execute(f'SELECT min(timestamp) FROM "{TABLE}"')
        oldest = cursor.fetchone()[0]
        today = datetime.now(UTC).date()
        day = min(oldest.astimezone(UTC).date(), today) if oldest else today
        # The partitions get their final names now: they belong to the twin, and no name of the original clashes.
        while day <= today + timedelta(days=PARTITION_DAYS_AHEAD):
            create_day_partition(cursor, day, parent=NEW)
            day += timedelta(days=1)
        cursor.execute(f'CREATE TABLE "{DEFAULT_PARTITION}" PARTITION OF "{NEW}" DEFAULT')
        copied_to = 0
        settled = _settled_max_id(connection)
        result.copied += _copy_ids(cursor, copied_to, settled, chunk)
        copied_to = settled
        indexes, constraints = _indexes_and_constraints(cursor)
        constraints = [
            (name, definition) for name, definition in constraints
            if not definition.startswith("UNIQUE") or "timestamp" in definition
        ]
        for name, definition in indexes:
            cursor.execute(
                definition.replace(f" INDEX {name} ON ", f" INDEX {name}_p ON ").replace(
                    f" ON public.{TABLE} ", f' ON public."{NEW}" '
                )
            )
        for name, definition in constraints:
            cursor.execute(f'ALTER TABLE "{NEW}" ADD CONSTRAINT "{name}_p" {definition}')
        for name, definition in extra_constraints:
            cursor.execute(f'ALTER TABLE "{NEW}" ADD CONSTRAINT "{name}" {definition}')
        # What was recorded meanwhile, in rounds, until what is left fits in the locked step below.
        for _round in range(CATCH_UP_ROUNDS):
            settled = _settled_max_id(connection)
            result.copied += _copy_ids(cursor, copied_to, settled, chunk)
            done, copied_to = settled - copied_to <= CATCH_UP_ROWS, settled
            if done:
                break
    if before_swap is not None:
        before_swap()
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        cursor.execute(f'LOCK TABLE "{TABLE}" IN EXCLUSIVE MODE')
        locked_at = time.perf_counter()
        cursor.execute(f'INSERT INTO "{NEW}" SELECT * FROM "{TABLE}" WHERE id > %s', [copied_to])
        result.caught_up = cursor.rowcount
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{NEW}\"', 'id'), "
            f"GREATEST((SELECT last_value FROM \"{TABLE}_id_seq\"), 1))"
        )
        _swap_names(cursor, indexes, constraints)
    result.write_lock_seconds = time.perf_counter() - locked_at
    logger.info("event table partitioned: %d events copied, %d caught up under a write lock held %.3f s",
                result.copied, result.caught_up, result.write_lock_seconds)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{OLD}"')
    return result


def _settled_max_id(connection) -> int:
    """The highest id such that every event with an id up to it is committed.

    Ids are handed out when an INSERT runs, but a transaction with a lower id may commit after one with a higher
    id: a SHARE lock waits for the inserts in flight to end (holding new ones back for that moment only), after
    which every id up to the maximum is visible, and every later insert gets a higher id.
    """
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        cursor.execute(f'LOCK TABLE "{TABLE}" IN SHARE MODE')
        cursor.execute(f'SELECT COALESCE(max(id), 0) FROM "{TABLE}"')
        return cursor.fetchone()[0]


def _copy_ids(cursor, after: int, up_to: int, chunk: int) -> int:
    """Copy the events with ids in (after, up_to], a chunk per statement (each its own transaction)."""
    copied = 0
    cursor.execute(f'SELECT min(id) FROM "{TABLE}" WHERE id > %s AND id <= %s', [after, up_to])
    first = cursor.fetchone()[0]
    start = after if first is None else first - 1
    while first is not None and start < up_to:
        end = min(start + chunk, up_to)
        cursor.execute(f'INSERT INTO "{NEW}" SELECT * FROM "{TABLE}" WHERE id > %s AND id <= %s', [start, end])
        copied += cursor.rowcount
        start = end
    return copied


def _indexes_and_constraints(cursor) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The original table's plain indexes, and its foreign keys and unique constraints, as (name, definition)."""
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY 1",
        [TABLE],
    )
    indexes = cursor.fetchall()
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) "
        "AND contype IN ('f', 'u') ORDER BY 1",
        [TABLE],
    )
    return indexes, cursor.fetchall()


def _swap_names(cursor, indexes, constraints) -> None:
    """Give the twin the original's name and those of its indexes, sequence and constraints (Django's later
    migrations find them by these names). Catalog changes only: milliseconds."""
    cursor.execute(f'ALTER TABLE "{TABLE}" RENAME TO "{OLD}"')
    cursor.execute(f'ALTER TABLE "{OLD}" RENAME CONSTRAINT "{TABLE}_pkey" TO "{OLD}_pkey"')
    cursor.execute(f'ALTER SEQUENCE "{TABLE}_id_seq" RENAME TO "{OLD}_id_seq"')
    for name, _definition in indexes:
        cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_u"')
        cursor.execute(f'ALTER INDEX "{name}_p" RENAME TO "{name}"')
    for name, _definition in constraints:
        cursor.execute(f'ALTER TABLE "{OLD}" RENAME CONSTRAINT "{name}" TO "{name}_u"')
    cursor.execute(f'ALTER TABLE "{NEW}" RENAME TO "{TABLE}"')
    cursor.execute(f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{NEW}_pkey" TO "{TABLE}_pkey"')
    cursor.execute(f'ALTER SEQUENCE "{NEW}_id_seq" RENAME TO "{TABLE}_id_seq"')
    for name, _definition in constraints:
        cursor.execute(f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{name}_p" TO "{name}"')
