"""The rollups the dashboards read: equal to a rebuild from the events, exact under concurrent writers, and kept
when old raw events are pruned."""

import threading
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from connectors.spaces.models import Space
from tests.helpers.events import CONNECTOR, build_event, record, record_mix
from usage.dashboards.queries import connector_usage
from usage.models import (
    DAILY_KEY_FIELDS,
    DAILY_SUM_FIELDS,
    DIMENSION_DAILY_KEY_FIELDS,
    DIMENSION_KEY_FIELDS,
    DIMENSIONS,
    HOURLY_TOTAL_KEY_FIELDS,
    ROLLUP_KEY_FIELDS,
    ROLLUP_SUM_FIELDS,
    ExecutionEvent,
    UsageDailyRollup,
    UsageDimensionDaily,
    UsageDimensionHourly,
    UsageHourlyTotal,
    UsageRollup,
)
from usage.ranges import parse_range


def rollup_table() -> dict[tuple, dict]:
    rows = {}
    for row in UsageRollup.objects.values(*ROLLUP_KEY_FIELDS, *ROLLUP_SUM_FIELDS):
        key = tuple(row.pop(name) for name in ROLLUP_KEY_FIELDS)
        rows[key] = row
    return rows


def assert_same_rollups(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, sums in before.items():
        rebuilt = after[key]
        # Sums of floats may differ in the last digits depending on the order they were added in.
        assert rebuilt.pop("duration_ms_sum") == pytest.approx(sums.pop("duration_ms_sum")), key
        assert rebuilt == sums, key


def summaries_from_rollups() -> tuple[dict, dict]:
    """What the two trigger-maintained summaries should hold: the rollups grouped in Python."""
    hourly: dict[tuple, dict] = {}
    daily: dict[tuple, dict] = {}
    for row in UsageRollup.objects.values(*ROLLUP_KEY_FIELDS, *ROLLUP_SUM_FIELDS):
        hour_key = tuple(row[name] for name in HOURLY_TOTAL_KEY_FIELDS)
        row["day"] = row["bucket"].replace(hour=0)
        day_key = tuple(row[name] for name in DAILY_KEY_FIELDS)
        for table, key, fields in ((hourly, hour_key, ROLLUP_SUM_FIELDS), (daily, day_key, DAILY_SUM_FIELDS)):
            sums = table.setdefault(key, dict.fromkeys(fields, 0))
            for name in fields:
                sums[name] += row[name]
    return hourly, daily


def summary_tables() -> tuple[dict, dict]:
    hourly = {
        tuple(row.pop(name) for name in HOURLY_TOTAL_KEY_FIELDS): row
        for row in UsageHourlyTotal.objects.values(*HOURLY_TOTAL_KEY_FIELDS, *ROLLUP_SUM_FIELDS)
        if row["requests"] or any(row[name] for name in ROLLUP_SUM_FIELDS)
    }
    daily = {
        tuple(row.pop(name) for name in DAILY_KEY_FIELDS): row
        for row in UsageDailyRollup.objects.values(*DAILY_KEY_FIELDS, *DAILY_SUM_FIELDS)
        if any(row[name] for name in DAILY_SUM_FIELDS)
    }
    return hourly, daily


def dimensions_from_rollups() -> tuple[dict, dict]:
    """What the per-dimension summaries should hold: each rollup row under its user, its model and its API key."""
    hourly: dict[tuple, dict] = {}
    daily: dict[tuple, dict] = {}
    for row in UsageRollup.objects.values(*ROLLUP_KEY_FIELDS, *DAILY_SUM_FIELDS):
        for dimension in DIMENSIONS:
            value = str(row[dimension])
            for table, moment in ((hourly, row["bucket"]), (daily, row["bucket"].replace(hour=0))):
                key = (row["connector_id"], row["space_id"], dimension, moment, value, row["outcome"])
                sums = table.setdefault(key, dict.fromkeys(DAILY_SUM_FIELDS, 0))
                for name in DAILY_SUM_FIELDS:
                    sums[name] += row[name]
    return hourly, daily


def dimension_tables() -> tuple[dict, dict]:
    return tuple(
        {tuple(row.pop(name) for name in key): row
         for row in model.objects.values(*key, *DAILY_SUM_FIELDS) if any(row[name] for name in DAILY_SUM_FIELDS)}
        for model, key in ((UsageDimensionHourly, DIMENSION_KEY_FIELDS), (UsageDimensionDaily, DIMENSION_DAILY_KEY_FIELDS))
    )


def assert_summaries_match_rollups() -> None:
    expected_hourly, expected_daily = summaries_from_rollups()
    hourly, daily = summary_tables()
    assert dimension_tables() == dimensions_from_rollups()
    assert daily == expected_daily
    assert hourly.keys() == expected_hourly.keys()
    for key, sums in expected_hourly.items():
        assert hourly[key].pop("duration_ms_sum") == pytest.approx(sums.pop("duration_ms_sum")), key
        assert hourly[key] == sums, key


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_recorded_rollups_equal_a_rebuild_from_the_events(django_user_model):
    owner = django_user_model.objects.create_user("keyholder")
    key, _ = create_api_key(owner, "batch")
    other_key, _ = create_api_key(owner, "ci", space_id=Space.objects.create(id="marketing", name="Marketing").pk)
    record_mix(datetime(2025, 3, 1, 20, tzinfo=UTC), hours=30, per_hour=5)
    record_mix(datetime(2025, 3, 1, 20, tzinfo=UTC), hours=30, per_hour=3, seed=7, api_key=key)
    # The same connector (a preconfigured one, in every space) called in another space, with and without a key.
    record_mix(datetime(2025, 3, 1, 20, tzinfo=UTC), hours=6, per_hour=3, seed=8, space_id="marketing")
    record_mix(datetime(2025, 3, 1, 20, tzinfo=UTC), hours=6, per_hour=3, seed=8, space_id="marketing",
               api_key=other_key)
    record_mix(datetime(2025, 3, 1, 20, tzinfo=UTC), hours=3, per_hour=4, connector_id="other", seed=9)
    recorded = rollup_table()
    assert len(recorded) > 20
    assert {(space, key_id) for _c, space, _b, _m, _u, key_id, _o in recorded} == {
        ("default", 0), ("default", key.pk), ("marketing", 0), ("marketing", other_key.pk)}

    assert_summaries_match_rollups()

    output = run("rebuild_usage_rollups")
    assert "Rebuilt" in output
    assert_same_rollups(recorded, rollup_table())
    assert_summaries_match_rollups()


@pytest.mark.django_db
def test_a_rebuild_in_small_chunks_gives_the_same_rollups():
    record_mix(datetime(2025, 3, 1, 20, tzinfo=UTC), hours=14, per_hour=3)
    recorded = rollup_table()
    run("rebuild_usage_rollups", "--chunk", "5h")
    assert_same_rollups(recorded, rollup_table())


@pytest.mark.django_db
def test_a_rebuild_repairs_damaged_rollups_of_one_connector():
    record_mix(datetime(2025, 3, 1, tzinfo=UTC), hours=5)
    record_mix(datetime(2025, 3, 1, tzinfo=UTC), hours=5, connector_id="other", seed=2)
    recorded = rollup_table()
    UsageRollup.objects.filter(connector_id=CONNECTOR).update(prompt_tokens=0)
    UsageRollup.objects.filter(connector_id=CONNECTOR).first().delete()
    UsageRollup.objects.create(connector_id=CONNECTOR, bucket=datetime(2025, 3, 1, 2, tzinfo=UTC), model="ghost", outcome="success", requests=9)
    UsageRollup.objects.filter(connector_id="other").update(completion_tokens=1)
    damaged_other = {key: row for key, row in rollup_table().items() if key[0] == "other"}

    run("rebuild_usage_rollups", "--connector", CONNECTOR)
    after = rollup_table()
    assert_same_rollups({k: v for k, v in recorded.items() if k[0] == CONNECTOR}, {k: v for k, v in after.items() if k[0] == CONNECTOR})
    assert {k: v for k, v in after.items() if k[0] == "other"} == damaged_other  # left alone
    assert_summaries_match_rollups()  # the triggers followed the damage and the repair alike


@pytest.mark.django_db
def test_a_rebuild_without_events_changes_nothing():
    UsageRollup.objects.create(connector_id=CONNECTOR, bucket=datetime(2025, 3, 1, tzinfo=UTC), outcome="success", requests=3)
    assert "No events" in run("rebuild_usage_rollups")
    assert UsageRollup.objects.get().requests == 3


@pytest.mark.django_db
def test_a_bad_chunk_is_refused():
    with pytest.raises(CommandError, match="--chunk"):
        run("rebuild_usage_rollups", "--chunk", "soon")


# -- pruning -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_deletes_old_events_and_keeps_their_rollups():
    now = timezone.now()
    old = record_mix(now - timedelta(days=120), hours=3)
    recent = record_mix(now - timedelta(days=10), hours=3, seed=5)
    usage_range = parse_range({"range": "custom", "from": (now - timedelta(days=121)).isoformat(), "to": now.isoformat()})
    before = connector_usage(CONNECTOR, usage_range)
    rollups_before = rollup_table()

    assert f"Would delete {len(old)} events" in run("prune_usage_events", "--older-than", "90d", "--dry-run")
    assert ExecutionEvent.objects.count() == len(old) + len(recent)
    output = run("prune_usage_events", "--older-than", "90d")

    assert f"Deleted {len(old)} events" in output and "rollups kept" in output
    assert set(ExecutionEvent.objects.values_list("id", flat=True)) == {e.id for e in recent}
    assert rollup_table() == rollups_before
    after = connector_usage(CONNECTOR, usage_range)
    assert after.totals == before.totals

    # A rebuild afterwards recomputes only what the remaining events cover and keeps the older rollups.
    run("rebuild_usage_rollups")
    assert_same_rollups(rollups_before, rollup_table())
    assert_summaries_match_rollups()


@pytest.mark.django_db
def test_prune_works_in_batches():
    from usage.operations.maintenance import prune_events

    now = timezone.now()
    for minute in range(7):
        record(now - timedelta(days=100, minutes=minute))
    assert prune_events(now - timedelta(days=90), batch=3) == 7
    assert not ExecutionEvent.objects.exists()


@pytest.mark.django_db
def test_prune_keeps_every_event_of_the_hour_the_cutoff_falls_in():
    from usage.operations.maintenance import prune_cutoff

    cutoff = prune_cutoff(datetime(2025, 6, 1, 10, 45, tzinfo=UTC), timedelta(days=90))
    assert cutoff == datetime(2025, 3, 3, 10, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize("age", ["", "90", "d", "0d", "-5d", "3y", "ninety days"])
def test_prune_refuses_a_bad_age(age):
    with pytest.raises(CommandError, match="--older-than"):
        run("prune_usage_events", "--older-than", age)


# -- concurrent writers ------------------------------------------------------------------------------------------

THREADS = 8
EVENTS_PER_THREAD = 25


def in_thread(function):
    """Run ``function`` in a new thread (with its own database connection) and return its result."""
    results: list = []
    errors: list[BaseException] = []

    def target():
        try:
            results.append(function())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results[0]


@pytest.fixture
def shared_database(transactional_db, tmp_path):
    """A database that several threads write to the way production servers do.

    On PostgreSQL that is the test database itself. On SQLite, pytest-django's test database is a shared-cache
    in-memory one, whose table locks fail at once ("database table is locked") instead of waiting on
    busy_timeout as a file database in WAL mode does; production uses a file, so the threads get a migrated
    file database with the production OPTIONS (WAL, BEGIN IMMEDIATE, timeout) for the duration of the test.
    """
    if connection.vendor != "sqlite":
        yield
        return
    settings_dict = connections.settings["default"]
    memory_name = settings_dict["NAME"]
    settings_dict["NAME"] = str(tmp_path / "concurrency.sqlite3")
    try:
        # Connections opened from now on (the worker threads') use the file; the main thread keeps its own.
        in_thread(lambda: call_command("migrate", verbosity=0, interactive=False))
        yield
    finally:
        settings_dict["NAME"] = memory_name


def test_concurrent_recording_loses_no_count(shared_database):
    moment = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            start.wait()
            for number in range(EVENTS_PER_THREAD):
                # Every thread writes to the same two rollup rows, so the upserts really collide.
                record(moment, connector_name="Busy", user_name="shared",
                       outcome="failure" if number % 5 == 0 else "success", duration_ms=50 + index,
                       prompt_tokens=index + 1, completion_tokens=number)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    def read():
        usage = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01", "to": "2025-03-01"}))
        return usage, ExecutionEvent.objects.count(), UsageRollup.objects.count()

    report, events, rollup_rows = in_thread(read)
    in_thread(assert_summaries_match_rollups)
    total = THREADS * EVENTS_PER_THREAD
    assert events == total
    assert report.totals.requests == total
    assert report.totals.failures == THREADS * len(range(0, EVENTS_PER_THREAD, 5))
    assert report.totals.prompt_tokens == EVENTS_PER_THREAD * sum(i + 1 for i in range(THREADS))
    assert report.totals.completion_tokens == THREADS * sum(range(EVENTS_PER_THREAD))
    assert sum(report.totals.latency_bins) == total
    assert rollup_rows == 2


def make_events(count: int, start: datetime) -> list[ExecutionEvent]:
    return [build_event(start + timedelta(minutes=index), connector_name="Batch", user_name=f"user-{index % 7}",
                        prompt_tokens=index, completion_tokens=1, duration_ms=float(index))
            for index in range(count)]


@pytest.mark.django_db
def test_a_batch_larger_than_one_statement_is_written_whole_with_its_rollups():
    events = make_events(1_234, datetime(2025, 3, 1, tzinfo=UTC))
    written = ExecutionEvent.objects.insert_batch(events)
    assert len({event.pk for event in written}) == 1_234 and all(event.pk for event in written)
    stored = {event.pk: event.prompt_tokens for event in ExecutionEvent.objects.all()}
    assert stored == {event.pk: event.prompt_tokens for event in written}  # each id is its own event's
    assert sum(row["requests"] for row in rollup_table().values()) == 1_234
    assert sum(row["prompt_tokens"] for row in rollup_table().values()) == sum(range(1_234))
    assert_summaries_match_rollups()


@pytest.mark.django_db
def test_recording_nothing_writes_nothing():
    assert ExecutionEvent.objects.insert_batch([]) == []
    assert not ExecutionEvent.objects.exists() and not UsageRollup.objects.exists()


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement write is PostgreSQL's; CI runs both")
def test_on_postgresql_a_batch_is_one_statement_and_its_summaries_follow(django_assert_num_queries):
    events = make_events(40, datetime(2025, 3, 1, 22, tzinfo=UTC))  # across two hours and two days
    with django_assert_num_queries(1):
        ExecutionEvent.objects.insert_batch(events)
    assert ExecutionEvent.objects.count() == 40
    assert sum(row["requests"] for row in rollup_table().values()) == 40
    assert_summaries_match_rollups()
