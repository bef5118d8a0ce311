"""The event table's day partitions on PostgreSQL (usage/models/partitions.py), the prune that drops them, the
retention that applies it, and the online conversion of an unpartitioned table (migration 0008)."""

import threading
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from django.utils import timezone

from tests.helpers.events import build_event, record
from usage.models import ExecutionEvent, UsageRollup
from usage.models.partitions import (
    DEFAULT_PARTITION,
    PARTITION_DAYS_AHEAD,
    TABLE,
    create_day_partition,
    day_partition_name,
    day_partitions,
    day_start,
    is_partitioned,
    pruned_partition_name,
    pruned_partitions,
    release_pruned_partitions,
)
from usage.operations.event_log_keeper import maintain_event_log
from usage.operations.maintenance import prune_events
from usage.operations.partition_conversion import convert_to_partitioned

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="declarative partitioning is PostgreSQL's; SQLite keeps the plain table"
)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def partition_of(event: ExecutionEvent) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT tableoid::regclass::text FROM "{TABLE}" WHERE id = %s AND timestamp = %s',
                       [event.id, event.timestamp])
        return cursor.fetchone()[0].strip('"')


def rollups() -> list[tuple]:
    return sorted(UsageRollup.objects.values_list("connector_id", "bucket", "model", "user_name", "outcome", "requests"))


@postgresql_only
@pytest.mark.django_db
def test_the_event_table_is_partitioned_by_day_with_the_coming_days_created():
    assert is_partitioned(connection)
    today = datetime.now(UTC).date()
    days = set(day_partitions(connection))
    assert {today + timedelta(days=n) for n in range(PARTITION_DAYS_AHEAD + 1)} <= days
    event = record(timezone.now())
    assert partition_of(event) == day_partition_name(event.timestamp.astimezone(UTC).date())


@postgresql_only
@pytest.mark.django_db
def test_an_event_outside_every_partition_lands_in_the_default_one_and_repair_moves_it():
    far = datetime(2019, 3, 4, 5, 6, tzinfo=UTC)
    event = record(far)
    assert partition_of(event) == DEFAULT_PARTITION

    report = run("maintain_usage_partitions")
    assert "The default partition holds 1 events, of these days: 2019-03-04" in report
    assert "--repair" in report

    assert "Moved 1 events" in run("maintain_usage_partitions", "--repair")
    assert partition_of(event) == day_partition_name(far.date())
    assert ExecutionEvent.objects.get(pk=event.pk).timestamp == far
    assert "The default partition is empty." in run("maintain_usage_partitions")


@postgresql_only
@pytest.mark.django_db
def test_maintenance_creates_missing_partitions_ahead_and_is_safe_to_repeat():
    today = datetime.now(UTC).date()
    ahead = today + timedelta(days=PARTITION_DAYS_AHEAD)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{day_partition_name(ahead)}"')
    assert ahead not in day_partitions(connection)
    assert f"{ahead:%Y-%m-%d}" in run("maintain_usage_partitions")
    assert ahead in day_partitions(connection)
    assert "Every partition of the coming days exists." in run("maintain_usage_partitions")


def _events_around(cutoff: datetime, days: int) -> tuple[list, list]:
    """Events on each of ``days`` days before the cut and after it, and right on both sides of it."""
    older, newer = [], []
    for offset in range(days):
        older.append(record(cutoff - timedelta(days=offset, hours=1)))
        newer.append(record(cutoff + timedelta(days=offset, hours=1)))
    older.append(record(cutoff - timedelta(microseconds=1)))
    newer.append(record(cutoff))
    return older, newer


@postgresql_only
@pytest.mark.django_db
def test_prune_before_drops_whole_partitions_and_deletes_only_in_the_boundary_one():
    cutoff = day_start(datetime.now(UTC).date() - timedelta(days=6)) + timedelta(hours=12)
    with connection.cursor() as cursor:
        for offset in range(14):
            create_day_partition(cursor, cutoff.date() - timedelta(days=7) + timedelta(days=offset))
    older, newer = _events_around(cutoff, days=5)
    before = rollups()

    output = run("prune_usage_events", "--before", cutoff.isoformat())

    assert f"Deleted {len(older)} events" in output
    assert set(ExecutionEvent.objects.values_list("id", flat=True)) == {event.id for event in newer}
    days = set(day_partitions(connection))
    assert not {day for day in days if day < cutoff.date()}, "the days before the cut are dropped whole"
    assert cutoff.date() in days, "the boundary day keeps its partition and its newer events"
    assert rollups() == before
    assert "Dropped 7 detached day partitions" in output  # the 7 days before the cut, with events or not
    assert pruned_partitions(connection) == []


def _tables_like(pattern: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE %s ORDER BY 1", [pattern])
        return [row[0] for row in cursor.fetchall()]


@postgresql_only
@pytest.mark.django_db
def test_prune_detaches_the_whole_days_and_deletes_rows_only_of_the_boundary_day_and_the_default_partition():
    cutoff = day_start(datetime.now(UTC).date() - timedelta(days=6)) + timedelta(hours=12)
    with connection.cursor() as cursor:
        for offset in range(14):
            create_day_partition(cursor, cutoff.date() - timedelta(days=7) + timedelta(days=offset))
    older, newer = _events_around(cutoff, days=5)
    older.append(record(datetime(2019, 3, 4, tzinfo=UTC)))  # outside every day partition: in the default one
    by_row = [e for e in older if e.timestamp >= day_start(cutoff.date()) or e.timestamp.year == 2019]
    whole_days = [day for day in day_partitions(connection) if day < cutoff.date()]
    statements = []

    def capture(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        statements.append((sql, context["cursor"].rowcount))
        return result

    with connection.execute_wrapper(capture):
        assert prune_events(cutoff) == len(older)

    # Row deletes reach only the boundary day and the default partition: the whole days are detached, not deleted
    # (nor counted row by row).
    assert sum(rows for sql, rows in statements if sql.startswith("DELETE")) == len(by_row) == 3
    assert [sql for sql, _rows in statements if "DETACH PARTITION" in sql] == [
        f'ALTER TABLE "{TABLE}" DETACH PARTITION "{pruned_partition_name(day)}"' for day in whole_days
    ]
    assert not [sql for sql, _rows in statements if "count(" in sql.lower()]
    assert set(ExecutionEvent.objects.values_list("id", flat=True)) == {event.id for event in newer}
    assert not {day for day in day_partitions(connection) if day < cutoff.date()}
    assert _tables_like(f"{TABLE}_pruned_p%") == [pruned_partition_name(day) for day in whole_days]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_detached_days_are_dropped_without_waiting_for_the_tables_the_app_reads_and_never_long_for_their_own():
    today = datetime.now(UTC).date()
    cutoff = day_start(today - timedelta(days=2))
    with connection.cursor() as cursor:
        for offset in range(3, 6):
            create_day_partition(cursor, today - timedelta(days=offset))
    for offset in range(3, 6):
        record(day_start(today - timedelta(days=offset)) + timedelta(hours=3))
    assert prune_events(cutoff) == 3
    pruned = pruned_partitions(connection)
    assert len(pruned) == 3

    other = connection.get_new_connection(connection.get_connection_params())
    other.autocommit = False  # its locks held until it ends
    try:
        # Another session in the middle of a request has read the users and the API keys and not yet committed.
        # The event table holds no foreign key to either (migration 0014), so a DROP needs neither: not held up.
        other.execute("SELECT count(*) FROM auth_user")
        other.execute("SELECT count(*) FROM connectors_apikey")
        # And a session reading a detached table itself (a report of an old day, say) holds that one up: the
        # release waits at most RELEASE_LOCK_TIMEOUT for it, then leaves it for its next run.
        other.execute(f'SELECT count(*) FROM "{pruned[0]}"')
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")  # rather than hang, if the release waited without limit
            try:
                assert release_pruned_partitions(connection) == 2
            finally:
                cursor.execute("RESET lock_timeout")
        assert pruned_partitions(connection) == pruned[:1]
    finally:
        other.rollback()
        other.close()
    assert release_pruned_partitions(connection) == 1
    assert pruned_partitions(connection) == []
    assert _tables_like(f"{TABLE}_pruned_p%") == []


@pytest.mark.django_db
def test_event_retention_days_drops_what_is_older_and_keeps_every_newer_event():
    now = timezone.now()
    cutoff = day_start((now - timedelta(days=3)).astimezone(UTC).date())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for offset in range(1, 8):
                create_day_partition(cursor, now.date() - timedelta(days=offset))
    older, newer = _events_around(cutoff, days=3)
    with override_settings(EVENT_RETENTION_DAYS=3):
        report = maintain_event_log(now)
    assert report.retention_cutoff == cutoff
    assert report.pruned == len(older)
    assert set(ExecutionEvent.objects.values_list("id", flat=True)) == {event.id for event in newer}


@pytest.mark.django_db
def test_without_event_retention_days_nothing_is_pruned():
    event = record(timezone.now() - timedelta(days=4000))
    report = maintain_event_log()
    assert report.retention_cutoff is None
    assert ExecutionEvent.objects.filter(pk=event.pk).exists()


def _event_model_after_0008():
    return MigrationLoader(connection).project_state(("usage", "0008_event_space")).apps.get_model(
        "usage", "ExecutionEvent")


def _recreate_unpartitioned_table() -> None:
    """The event table as migration 0008 left it (plain, uid unique), in place of the partitioned one."""
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{TABLE}" CASCADE')
    with connection.schema_editor() as editor:
        editor.create_model(_event_model_after_0008())


@pytest.fixture
def table_brought_up_to_date():
    """After the test, the indexes and foreign keys the migrations after 0009 changed are as they leave them (0011
    drops event_space_connector, 0014 the foreign keys to the user and the API key), so that the tests after this
    one find the table of the latest migration."""
    yield
    then = _event_model_after_0008()
    before = {index.name: index for index in then._meta.indexes}
    latest = {index.name: index for index in ExecutionEvent._meta.indexes}
    with connection.schema_editor() as editor:
        for name in before.keys() - latest.keys():
            editor.remove_index(ExecutionEvent, before[name])
        for name in latest.keys() - before.keys():
            editor.add_index(ExecutionEvent, latest[name])
        for name in ("user", "api_key"):
            editor.alter_field(ExecutionEvent, then._meta.get_field(name), ExecutionEvent._meta.get_field(name))


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_conversion_keeps_every_event_while_the_app_records(table_brought_up_to_date):
    _recreate_unpartitioned_table()
    assert not is_partitioned(connection)
    start = timezone.now() - timedelta(days=3)
    existing = [build_event(start + timedelta(minutes=n)) for n in range(500)]
    ExecutionEvent.objects.bulk_create(existing)

    recorded: list[int] = []
    stop = threading.Event()

    def keep_recording():
        try:
            while not stop.is_set():
                recorded.append(record(timezone.now()).id)
        finally:
            connections.close_all()

    recorder = threading.Thread(target=keep_recording)
    pause = threading.Event()  # never set: waited on for a moment at a time

    def before_swap():
        copied_by_now = len(recorded)
        while len(recorded) < copied_by_now + 20:  # recording goes on against the original table until the swap
            pause.wait(0.01)

    recorder.start()  # recording during the copy too: a chunk boundary must not skip a late id
    while len(recorded) < 5:
        pause.wait(0.01)
    result = convert_to_partitioned(connection, chunk=128, before_swap=before_swap)
    swapped_at = len(recorded)
    while len(recorded) < swapped_at + 20:  # and after the swap, against the partitioned table
        pause.wait(0.01)
    stop.set()
    recorder.join()

    assert is_partitioned(connection)
    assert result.copied >= len(existing)
    assert result.caught_up >= 20
    assert result.write_lock_seconds < 5
    stored = set(ExecutionEvent.objects.values_list("id", flat=True))
    assert stored == {event.id for event in existing} | set(recorded)
    event = record(timezone.now())  # the identity goes on after the last copied id
    assert event.id > max(stored)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s", [f"{TABLE}_unpartitioned%"])
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY 1",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    assert "event_uid_time" in names and f"{TABLE}_pkey" in names
    assert sum(name.endswith("_fk_auth_user_id") for name in names) == 1
