"""The statement that stores a batch of events (usage/models/events.py, ``insert_batch``): exactly the events given,
each with its own id, its values as given whatever they hold, the rollups and their summaries exact under concurrent
writers; on PostgreSQL, one prepared statement for every batch, rows routed to their day's partition or the default
one, and a value the database refuses reported as a database error."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Sum

from tests.dashboards.test_rollups import assert_summaries_match_rollups, in_thread, shared_database  # noqa: F401 (a fixture)
from tests.helpers.events import build_event
from usage.models import ExecutionEvent, UsageDailyRollup, UsageHourlyTotal, UsageRollup
from usage.models.partitions import (
    DEFAULT_PARTITION,
    TABLE,
    create_day_partition,
    day_partition_name,
    ensure_partitions,
)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the prepared statement and the partitions are PostgreSQL's"
)

# Text that an array or record literal, a JSON encoder or a quoting routine could get wrong.
AWKWARD = '"q", {b}, (p), back\\slash \\" NULL null \t\n\r é ü 中文 🎉 \u2028 \x01\x1f'


def odd_events(moment: datetime) -> list[ExecutionEvent]:
    """Events whose values push every column: the longest names, NULLs where allowed, extreme numbers."""
    return [
        build_event(moment, connector_id="c" * 64, connector_name=("N" + AWKWARD * 10)[:255], user_name="ü" * 150,
                    requested_model=AWKWARD, response_model="", error_message=AWKWARD * 100, sub_action="s" * 32,
                    cached_tokens=None, reasoning_tokens=None, upstream_status=None, cost_nanos=None,
                    duration_ms=0.1 + 0.2, prompt_tokens=2_147_483_647, completion_tokens=0, space_id="s" * 64),
        build_event(moment + timedelta(microseconds=1), connector_id="odd", connector_name="NULL",
                    user_name="", requested_model="m", response_model="r" * 255, error_message="",
                    cached_tokens=0, reasoning_tokens=32_767, upstream_status=32_767, cost_nanos=2**63 - 1,
                    duration_ms=1e-300, request_bytes=2_147_483_647, connector_is_preconfigured=True),
        # NUL and a lone surrogate, which no database stores: replaced by U+FFFD (make_storable), not refused.
        build_event(moment, connector_id="odd", connector_name="nul\x00 and \ud800 surrogate", user_name="\\",
                    requested_model='"', cached_tokens=None, reasoning_tokens=5, cost_nanos=0, duration_ms=31_000.5),
    ]


STORED_FIELDS = [field.attname for field in ExecutionEvent._meta.concrete_fields]


@pytest.mark.django_db
def test_a_batch_of_odd_values_is_stored_exactly_as_given():
    moment = datetime(2025, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    events = odd_events(moment)

    written = ExecutionEvent.objects.insert_batch(events)

    # insert_batch made each event storable in place: what it holds now is what must have been stored.
    assert [event.connector_name for event in written][2] == "nul\ufffd and \ufffd surrogate"
    assert len({event.pk for event in written}) == 3
    for event in written:
        stored = ExecutionEvent.objects.values(*STORED_FIELDS).get(pk=event.pk)
        assert stored == {name: getattr(event, name) for name in STORED_FIELDS}
    assert UsageRollup.objects.aggregate(requests=Sum("requests"), tokens=Sum("prompt_tokens")) == {
        "requests": 3, "tokens": 2_147_483_647 + 10 + 10
    }
    assert UsageRollup.objects.get(connector_id="c" * 64).model == AWKWARD
    assert_summaries_match_rollups()


def totals() -> list[dict]:
    """Requests and tokens as the events, the rollups and both summaries count them: four equal dicts if no count
    was lost."""
    counted = [ExecutionEvent.objects.aggregate(requests=Count("id"), tokens=Sum("prompt_tokens"),
                                                cost=Sum("cost_nanos"))]
    counted += [model.objects.aggregate(requests=Sum("requests"), tokens=Sum("prompt_tokens"), cost=Sum("cost_nanos"))
                for model in (UsageRollup, UsageHourlyTotal, UsageDailyRollup)]
    return counted


@pytest.mark.usefixtures("shared_database")  # tests/dashboards/test_rollups.py: a database several threads write to
def test_concurrent_writers_of_batches_of_every_size_lose_no_count():
    """Threads (connections) writing batches of 1, 5 and 17 events at once into the same rollup rows, across an
    hour's and a day's end, with and without NULLs: every event stored once, every sum exact."""
    writers, rounds = 6, 6
    start = threading.Barrier(writers)
    errors: list[BaseException] = []
    moment = datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)

    def writer(index: int) -> None:
        try:
            start.wait()
            for number in range(rounds):
                size = (1, 5, 17)[(index + number) % 3]
                ExecutionEvent.objects.insert_batch([
                    build_event(moment + timedelta(seconds=n % 2), connector_name="Busy", user_name=f"u{n // 2 % 2}",
                                outcome="failure" if n % 5 < 2 else "success", prompt_tokens=index * 100 + n,
                                cached_tokens=None if n % 3 else n, cost_nanos=None if index % 2 else n * 7,
                                duration_ms=float(n))
                    for n in range(size)
                ])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    expected_events = sum((1, 5, 17)[(index + number) % 3] for index in range(writers) for number in range(rounds))
    counted = in_thread(totals)
    assert counted[0]["requests"] == expected_events
    assert all(total == counted[0] for total in counted), counted
    assert in_thread(lambda: UsageRollup.objects.count()) == 2 * 2 * 2  # hours, users, outcomes
    in_thread(assert_summaries_match_rollups)


def prepared_event_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
                       ["%json_populate_recordset%"])
        return [row[0] for row in cursor.fetchall()]


@postgresql_only
@pytest.mark.django_db
def test_every_batch_shares_one_prepared_statement_whatever_its_size_and_values():
    moment = datetime(2025, 3, 1, 12, tzinfo=UTC)
    for size, tokens, cost in ((1, 3, None), (2, 70_000, 5), (7, 3_000_000_000, None), (40, 0, 2**40)):
        ExecutionEvent.objects.insert_batch([
            build_event(moment, prompt_tokens=tokens % 2**31, cost_nanos=cost, cached_tokens=None if n else tokens % 2**31)
            for n in range(size)
        ])

    assert len(prepared_event_statements()) == 1
    assert ExecutionEvent.objects.count() == 50


@postgresql_only
@pytest.mark.django_db
def test_one_batch_is_routed_to_its_day_partition_and_to_the_default_one_with_each_its_own_id():
    ensure_partitions(connection)
    today = datetime.now(UTC).replace(microsecond=0)
    far = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)  # no partition holds that day
    events = [build_event(today, prompt_tokens=1), build_event(far, prompt_tokens=2), build_event(today, prompt_tokens=3)]

    written = ExecutionEvent.objects.insert_batch(events)

    with connection.cursor() as cursor:
        cursor.execute(f'SELECT id, prompt_tokens, tableoid::regclass::text FROM "{TABLE}" ORDER BY prompt_tokens')
        stored = [(pk, tokens, table.strip('"')) for pk, tokens, table in cursor.fetchall()]
    assert stored == [
        (written[0].pk, 1, day_partition_name(today.date())),
        (written[1].pk, 2, DEFAULT_PARTITION),
        (written[2].pk, 3, day_partition_name(today.date())),
    ]
    assert sorted(UsageRollup.objects.values_list("bucket", "requests")) == [
        (far.replace(minute=0, second=0), 1), (today.replace(minute=0, second=0), 2)
    ]


@postgresql_only
@pytest.mark.django_db
def test_a_partition_created_after_the_statement_was_prepared_takes_its_day():
    ExecutionEvent.objects.insert_batch([build_event(datetime.now(UTC))])  # prepared now
    day = datetime(2031, 5, 6, tzinfo=UTC)
    with connection.cursor() as cursor:
        create_day_partition(cursor, day.date())

    event = ExecutionEvent.objects.insert_batch([build_event(day + timedelta(hours=5))])[0]

    with connection.cursor() as cursor:
        cursor.execute(f'SELECT tableoid::regclass::text FROM "{TABLE}" WHERE id = %s', [event.pk])
        assert cursor.fetchone()[0].strip('"') == day_partition_name(day.date())
    assert len(prepared_event_statements()) == 1


@postgresql_only
@pytest.mark.django_db
def test_a_value_out_of_its_columns_range_is_refused_by_the_database_and_nothing_of_its_batch_is_stored():
    # The event writer splits a batch the database refuses and logs the bad event (tests/recording/
    # test_event_writer.py); the spool's replay does the same for a DatabaseError. Neither must see another error.
    events = [build_event(datetime.now(UTC)), build_event(datetime.now(UTC), cost_nanos=2**70)]
    with pytest.raises(DatabaseError), transaction.atomic():
        ExecutionEvent.objects.insert_batch(events)
    assert not ExecutionEvent.objects.exists() and not UsageRollup.objects.exists()
