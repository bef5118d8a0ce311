"""The server's event writer (usage.recording.writer.EventWriter): group commit, shutdown flush, database failures.

These tests use committed transactions (``transactional_db``): the writer is a thread with its own connection.
"""

import asyncio
import threading

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from connectors_admin import asgi
from tests.helpers.events import build_event
from usage.models import ExecutionEvent, UsageRollup
from usage.models.events import ExecutionEventManager
from usage.recording import writer as recording

pytestmark = pytest.mark.django_db(transaction=True)


WRITER_TEST = {"connector_id": "writer-test", "connector_name": "Writer test", "duration_ms": 12.5,
               "prompt_tokens": 3, "completion_tokens": 4}


def make_event(index: int = 0, **fields) -> ExecutionEvent:
    """An event of this file's connector, not stored, told apart by its error message."""
    return build_event(timezone.now(), **{**WRITER_TEST, "error_message": f"event {index}", **fields})


def rollup_requests() -> int:
    return sum(UsageRollup.objects.filter(connector_id="writer-test").values_list("requests", flat=True))


async def record_all(events) -> None:
    await asyncio.gather(*(recording.record_execution(event) for event in events))


def test_concurrent_executions_through_the_writer_produce_exactly_one_event_each(event_writer):
    events = [make_event(i) for i in range(300)]

    asyncio.run(record_all(events))

    # Group commit: every caller was answered after its event's commit, so no flush is needed to see them.
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 300
    assert sorted(ExecutionEvent.objects.values_list("error_message", flat=True)) == sorted(f"event {i}" for i in range(300))
    assert rollup_requests() == 300
    assert all(event.pk is not None for event in events)
    assert event_writer.batches_written < 300  # they were written in batches, not one transaction each


def test_without_a_running_writer_events_are_written_directly():
    assert recording.flush_events(timeout=1)  # nothing to wait for

    asyncio.run(record_all([make_event(0)]))

    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 1


def test_write_behind_answers_before_the_commit_and_flush_waits_for_it(event_writer, settings, monkeypatch):
    settings.EVENT_WRITE_BEHIND = True
    gate = threading.Event()
    original = ExecutionEventManager.insert_batch

    def held_insert_batch(manager, events):
        gate.wait(10)
        return original(manager, events)

    monkeypatch.setattr(ExecutionEventManager, "insert_batch", held_insert_batch)

    asyncio.run(record_all([make_event(i) for i in range(5)]))  # returns although nothing is committed yet
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 0

    gate.set()
    assert recording.flush_events(timeout=10)
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 5


def test_the_queue_is_written_when_the_server_shuts_down(settings, monkeypatch):
    """The ASGI lifespan: startup starts the writer, shutdown writes everything still queued before completing.

    The writes are held until the lifespan asks the writer to stop, so the 50 events are still queued when shutdown
    begins; ``lifespan.shutdown.complete`` must then find all of them committed. A shutdown that does not flush
    (no stop, or a stop that does not wait for the writer) finds none.
    """
    settings.EVENT_WRITE_BEHIND = True
    settings.EVENT_WRITER_ON_LOOP = False  # the thread's queue (the loop's: tests/recording/test_loop_writer.py)
    stop_requested = threading.Event()
    committed = []
    original_insert, original_stop = ExecutionEventManager.insert_batch, recording.stop_event_writer

    def held_insert_batch(manager, events):
        assert stop_requested.wait(30), "the lifespan never stopped the writer"
        written = original_insert(manager, events)
        committed.extend(written)
        return written

    def observed_stop(*args, **kwargs):
        stop_requested.set()
        return original_stop(*args, **kwargs)

    monkeypatch.setattr(ExecutionEventManager, "insert_batch", held_insert_batch)
    monkeypatch.setattr(asgi, "stop_event_writer", observed_stop)

    async def lifespan_run():
        messages = asyncio.Queue()
        sent = []
        started = asyncio.Event()

        async def send(message):
            # What was committed at the moment the server is told it may exit.
            sent.append((message["type"], len(committed)))
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await messages.put({"type": "lifespan.startup"})
        server = asyncio.ensure_future(asgi.application({"type": "lifespan"}, messages.get, send))
        await started.wait()
        await record_all([make_event(i) for i in range(50)])  # write-behind: queued, not committed
        assert not committed
        await messages.put({"type": "lifespan.shutdown"})
        await server
        return sent

    sent = asyncio.run(lifespan_run())

    assert sent == [("lifespan.startup.complete", 0), ("lifespan.shutdown.complete", 50)]
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 50
    assert rollup_requests() == 50


def test_a_database_outage_during_a_batch_loses_no_event(monkeypatch, caplog):
    failures = {"left": 3}
    original = ExecutionEventManager.insert_batch

    def flaky_insert_batch(manager, events):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return original(manager, events)

    monkeypatch.setattr(ExecutionEventManager, "insert_batch", flaky_insert_batch)
    writer = recording.EventWriter(retry_delays=(0.01,)).start()
    futures = [writer.submit(make_event(i)) for i in range(40)]

    assert writer.flush(timeout=10)
    writer.stop(timeout=5)

    assert all(future.done() for future in futures)
    assert failures["left"] == 0
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 40
    assert rollup_requests() == 40
    assert "retrying" in caplog.text


def test_a_name_longer_than_its_column_is_cut_to_fit_and_its_batch_is_stored():
    writer = recording.EventWriter()
    long_name = make_event(99, connector_name="x" * 300)  # PostgreSQL would refuse it as it is
    futures = [writer.submit(event) for event in (make_event(0), long_name, make_event(1))]
    writer.start()  # started after the three are queued, so that they form one batch

    assert writer.flush(timeout=10)
    writer.stop(timeout=5)

    assert [future.result() for future in futures] == [recording.COMMITTED] * 3
    stored = dict(ExecutionEvent.objects.filter(connector_id="writer-test").values_list("error_message", "connector_name"))
    assert set(stored) == {"event 0", "event 1", "event 99"}
    assert stored["event 99"] == "x" * 255


def test_stopping_writes_what_is_queued():
    writer = recording.EventWriter().start()
    for i in range(20):
        writer.submit(make_event(i))

    assert writer.stop(timeout=10)

    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 20
    with pytest.raises(RuntimeError):
        writer.submit(make_event(21))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="deadlocks and their SQLSTATE are PostgreSQL's; CI runs the suite on PostgreSQL too")
def test_a_batch_that_loses_a_deadlock_is_written_again_not_spooled(tmp_path, monkeypatch):
    """Several processes' batches can deadlock on new summary rows (seen with bench.writer_rate). PostgreSQL rolls
    one back with SQLSTATE 40P01; its writer writes it again instead of taking the database for gone."""
    from usage.observability import metrics
    from usage.recording.spool import EventSpool

    original, calls = ExecutionEventManager.insert_batch, []

    def insert_batch(manager, events):
        calls.append(len(events))
        if len(calls) <= 2:  # the server's own deadlock error, twice
            with connection.cursor() as cursor:
                cursor.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$")
        return original(manager, events)

    monkeypatch.setattr(ExecutionEventManager, "insert_batch", insert_batch)
    retried_before = metrics.EVENT_WRITE_FAILURES.labels("conflict_retried")._value.get()
    writer = recording.EventWriter(spool=EventSpool(tmp_path)).start()
    try:
        future = writer.submit(make_event(1))
        assert future.result(timeout=10) == recording.COMMITTED
    finally:
        writer.stop(timeout=10)

    assert len(calls) == 3 and not writer.outage and writer.events_spooled == 0
    assert list(tmp_path.iterdir()) == []
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 1 and rollup_requests() == 1
    assert metrics.EVENT_WRITE_FAILURES.labels("conflict_retried")._value.get() == retried_before + 2


def test_a_write_conflict_is_told_from_an_outage():
    class Driver(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    def wrapped(sqlstate):
        error = OperationalError("from the driver")
        error.__cause__ = Driver(sqlstate)
        return error

    assert recording.is_write_conflict(wrapped("40P01")) and recording.is_write_conflict(wrapped("40001"))
    assert not recording.is_write_conflict(wrapped("08006"))  # connection failure: an outage
    assert not recording.is_write_conflict(OperationalError("connection refused"))
