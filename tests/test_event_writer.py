"""The server's event writer (usage.recording.EventWriter): group commit, shutdown flush, database failures.

These tests use committed transactions (``transactional_db``): the writer is a thread with its own connection.
"""

import asyncio
import logging
import threading

import pytest
from django.db import OperationalError
from django.utils import timezone

from connectors_admin import asgi
from usage import recording
from usage.models import ExecutionEvent, UsageRollup

pytestmark = pytest.mark.django_db(transaction=True)


def make_event(index: int = 0, **fields) -> ExecutionEvent:
    values = {
        "timestamp": timezone.now(),
        "connector_id": "writer-test",
        "connector_name": "Writer test",
        "source": "api",
        "sub_action": "run",
        "outcome": "success",
        "duration_ms": 12.5,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "error_message": f"event {index}",
    }
    return ExecutionEvent(**{**values, **fields})


def rollup_requests() -> int:
    return sum(UsageRollup.objects.filter(connector_id="writer-test").values_list("requests", flat=True))


@pytest.fixture
def writer():
    started = recording.start_event_writer()
    yield started
    recording.stop_event_writer(timeout=10)


async def record_all(events) -> None:
    await asyncio.gather(*(recording.record_event(event) for event in events))


def test_concurrent_executions_through_the_writer_produce_exactly_one_event_each(writer):
    events = [make_event(i) for i in range(300)]

    asyncio.run(record_all(events))

    # Group commit: every caller was answered after its event's commit, so no flush is needed to see them.
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 300
    assert sorted(ExecutionEvent.objects.values_list("error_message", flat=True)) == sorted(f"event {i}" for i in range(300))
    assert rollup_requests() == 300
    assert all(event.pk is not None for event in events)
    assert writer.batches_written < 300  # they were written in batches, not one transaction each


def test_without_a_running_writer_events_are_written_directly():
    assert recording.flush_events(timeout=1)  # nothing to wait for

    asyncio.run(record_all([make_event(0)]))

    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 1


def test_write_behind_answers_before_the_commit_and_flush_waits_for_it(writer, settings, monkeypatch):
    settings.EVENT_WRITE_BEHIND = True
    gate = threading.Event()
    original = recording.record_events

    def held_record_events(events):
        gate.wait(10)
        return original(events)

    monkeypatch.setattr(recording, "record_events", held_record_events)

    asyncio.run(record_all([make_event(i) for i in range(5)]))  # returns although nothing is committed yet
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 0

    gate.set()
    assert recording.flush_events(timeout=10)
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 5


def test_the_queue_is_written_when_the_server_shuts_down(settings, monkeypatch):
    """The ASGI lifespan: startup starts the writer, shutdown writes everything still queued before completing."""
    settings.EVENT_WRITE_BEHIND = True
    gate = threading.Event()
    original = recording.record_events

    def slow_record_events(events):
        gate.wait(0.3)  # still queued when shutdown begins
        return original(events)

    monkeypatch.setattr(recording, "record_events", slow_record_events)

    async def lifespan_run():
        messages = asyncio.Queue()
        sent = []

        async def send(message):
            sent.append(message["type"])

        await messages.put({"type": "lifespan.startup"})
        server = asyncio.ensure_future(asgi.application({"type": "lifespan"}, messages.get, send))
        while "lifespan.startup.complete" not in sent:
            await asyncio.sleep(0.01)
        await record_all([make_event(i) for i in range(50)])
        await messages.put({"type": "lifespan.shutdown"})
        await server
        return sent

    sent = asyncio.run(lifespan_run())

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 50
    assert rollup_requests() == 50


def test_a_database_outage_during_a_batch_loses_no_event(monkeypatch, caplog):
    failures = {"left": 3}
    original = recording.record_events

    def flaky_record_events(events):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return original(events)

    monkeypatch.setattr(recording, "record_events", flaky_record_events)
    writer = recording.EventWriter(retry_delays=(0.01,)).start()
    futures = [writer.submit(make_event(i)) for i in range(40)]

    assert writer.flush(timeout=10)
    writer.stop(timeout=5)

    assert all(future.done() for future in futures)
    assert failures["left"] == 0
    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 40
    assert rollup_requests() == 40
    assert "retrying" in caplog.text


def test_an_event_the_database_rejects_does_not_take_its_batch_down(caplog):
    caplog.set_level(logging.ERROR, logger="usage.recording")
    writer = recording.EventWriter()
    bad = make_event(99, connector_name="x" * 300)  # longer than the column: PostgreSQL refuses it
    futures = [writer.submit(event) for event in (make_event(0), bad, make_event(1))]
    writer.start()  # started after the three are queued, so that they form one batch

    assert writer.flush(timeout=10)
    writer.stop(timeout=5)

    assert all(future.done() for future in futures)
    stored = set(ExecutionEvent.objects.filter(connector_id="writer-test").values_list("error_message", flat=True))
    assert {"event 0", "event 1"} <= stored
    if "event 99" not in stored:  # SQLite does not enforce lengths; PostgreSQL does, and then the event is logged
        assert '"error_message": "event 99"' in caplog.text


def test_stopping_writes_what_is_queued():
    writer = recording.EventWriter().start()
    for i in range(20):
        writer.submit(make_event(i))

    assert writer.stop(timeout=10)

    assert ExecutionEvent.objects.filter(connector_id="writer-test").count() == 20
    with pytest.raises(RuntimeError):
        writer.submit(make_event(21))
