"""The event loop's own writer (usage/recording/loop_writer.py), on PostgreSQL: group commit without a thread hop,
the writer thread taking over every batch it cannot write, and the shutdown that writes what it holds.

Each test runs the ASGI lifespan as uvicorn does (startup in a running loop: that is what starts the loop's writer),
records events in that loop, then shuts down. The database is the test database, for real.
"""

import asyncio
import time

import pytest
from django.db import connection
from django.utils import timezone

from connectors_admin import asgi
from tests.helpers.events import build_event
from tests.recording.test_database_outage_bounds import BOUND_SECONDS
from usage.models import ExecutionEvent, UsageRollup
from usage.recording import loop_writer as loop_writing
from usage.recording import writer as recording

pytestmark = pytest.mark.django_db(transaction=True)

CONNECTOR = "loop-writer-test"


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the loop writes on a psycopg AsyncConnection: PostgreSQL only (SQLite keeps the writer thread)")


def make_event(index: int) -> ExecutionEvent:
    return build_event(timezone.now(), connector_id=CONNECTOR, connector_name="Loop writer test",
                       error_message=f"event {index}", prompt_tokens=2, completion_tokens=3)


def stored_messages() -> list[str]:
    return sorted(ExecutionEvent.objects.filter(connector_id=CONNECTOR).values_list("error_message", flat=True))


def rollup_requests() -> int:
    return sum(UsageRollup.objects.filter(connector_id=CONNECTOR).values_list("requests", flat=True))


async def served(body, before_shutdown=None):
    """Start the lifespan, run ``body()`` in its loop, shut down; what the lifespan sent, and body's result."""
    messages, sent, started = asyncio.Queue(), [], asyncio.Event()

    async def send(message):
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await messages.put({"type": "lifespan.startup"})
    server = asyncio.ensure_future(asgi.application({"type": "lifespan"}, messages.get, send))
    await started.wait()
    try:
        result = await body()
    finally:
        if before_shutdown is not None:
            before_shutdown()
        await messages.put({"type": "lifespan.shutdown"})
        await server
    return sent, result


def test_the_loop_writes_concurrent_events_in_batches_each_once():
    events = [make_event(i) for i in range(300)]

    async def body():
        loop_writer = recording._loop_writer
        assert loop_writer is not None and loop_writer.loop is asyncio.get_running_loop()
        outcomes = await asyncio.gather(*(recording.record_execution(event) for event in events))
        # Answered after the commit: the events are in the database now, before any flush.
        count = await asyncio.to_thread(_stored_count)
        return outcomes, count, loop_writer, recording._writer.batches_written

    sent, (outcomes, count, loop_writer, thread_batches) = asyncio.run(served(body))

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert outcomes == [recording.COMMITTED] * 300 and count == 300
    assert stored_messages() == sorted(f"event {i}" for i in range(300))
    assert rollup_requests() == 300
    assert all(event.pk is not None for event in events)
    assert loop_writer.events_committed == 300 and loop_writer.batches_written < 300  # batched
    assert thread_batches == 0  # no event went through the thread
    assert loop_writer._connection is None  # closed at shutdown


def test_with_the_setting_off_the_thread_writes_them():
    from django.test import override_settings

    async def body():
        assert recording._loop_writer is None
        await asyncio.gather(*(recording.record_execution(make_event(i)) for i in range(20)))
        return recording._writer.events_committed

    with override_settings(EVENT_WRITER_ON_LOOP=False):
        _sent, committed_by_thread = asyncio.run(served(body))

    assert committed_by_thread == 20
    assert len(stored_messages()) == 20


def test_a_connection_the_database_cut_hands_the_batch_to_the_thread_and_nothing_is_lost_or_doubled():
    """The server ends the loop's connection as a batch is about to be sent on it (as a restarted database or a
    failover does): the batch fails on it and goes to the writer thread, which writes it; the batch after that
    reconnects. (A connection ended between batches is noticed before the next one: the test after this one.)"""
    original = loop_writing.LoopWriter._run

    async def cut_first(self, pgconn, statement, parameters):
        if not cut:
            cut.append(self._connection.info.backend_pid)
            await asyncio.to_thread(_terminate, cut[0])
        return await original(self, pgconn, statement, parameters)

    cut = []

    async def body():
        loop_writer = recording._loop_writer
        await recording.record_execution(make_event(0))  # opens the loop's connection
        cut.clear()
        loop_writing.LoopWriter._run = cut_first
        try:
            first = await asyncio.gather(*(recording.record_execution(make_event(i)) for i in range(1, 11)))
            second = await asyncio.gather(*(recording.record_execution(make_event(i)) for i in range(11, 21)))
        finally:
            loop_writing.LoopWriter._run = original
        return first + second, loop_writer, recording._writer.events_committed

    _sent, (outcomes, loop_writer, committed_by_thread) = asyncio.run(served(body))

    assert outcomes == [recording.COMMITTED] * 20
    assert stored_messages() == sorted(f"event {i}" for i in range(21))  # each once
    assert rollup_requests() == 21
    assert loop_writer.events_handed_over >= 1 and committed_by_thread == loop_writer.events_handed_over
    assert loop_writer.events_committed == 21 - loop_writer.events_handed_over
    assert loop_writer.events_committed > 1  # the loop reconnected for the later batches


def test_a_connection_the_database_ends_between_batches_is_noticed_and_the_next_batch_reconnects():
    """The loop watches its connection between batches (usage/recording/loop_writer.py, ``_readable``): the server's
    end of it is read when it comes, the socket is no longer watched (no busy loop on a closed socket), and the next
    batch opens a new connection and is written by the loop, not handed over."""

    async def body():
        loop_writer = recording._loop_writer
        await recording.record_execution(make_event(0))
        backend = loop_writer._connection.info.backend_pid
        await asyncio.to_thread(_terminate, backend)
        for _ in range(100):
            if loop_writer._watched is None:
                break
            await asyncio.sleep(0.01)
        noticed = loop_writer._watched is None and loop_writer._connection.closed
        cpu_before = time.process_time()
        await asyncio.sleep(0.3)  # nothing to write: nothing should run
        idle_cpu = time.process_time() - cpu_before
        outcome = await recording.record_execution(make_event(1))
        return noticed, idle_cpu, outcome, loop_writer

    _sent, (noticed, idle_cpu, outcome, loop_writer) = asyncio.run(served(body))

    assert noticed
    assert idle_cpu < 0.1, idle_cpu
    assert outcome == recording.COMMITTED
    assert loop_writer.events_committed == 2 and loop_writer.events_handed_over == 0
    assert stored_messages() == ["event 0", "event 1"]


def _stored_count() -> int:
    """From a thread of the loop's executor, its connection closed after (see ``_terminate``)."""
    try:
        return ExecutionEvent.objects.filter(connector_id=CONNECTOR).count()
    finally:
        connection.close()


def _terminate(backend_pid: int) -> None:
    """From a thread of the loop's executor: its connection is closed here, or the test database would still
    have a session when it is dropped."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
    finally:
        connection.close()


def test_a_caller_cancelled_while_it_waits_still_gets_its_event_written():
    event = make_event(0)

    async def body():
        release = asyncio.Event()
        original = loop_writing.LoopWriter._connection_of

        async def held(self, db):
            await release.wait()
            return await original(self, db)

        loop_writing.LoopWriter._connection_of = held
        try:
            waiting = asyncio.ensure_future(recording.record_execution(event))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            release.set()
            while recording._loop_writer.pending:
                await asyncio.sleep(0.01)
        finally:
            loop_writing.LoopWriter._connection_of = original

    asyncio.run(served(body))

    assert stored_messages() == ["event 0"]


def test_shutdown_writes_what_the_loop_still_holds():
    """Write-behind: the callers are answered at once and the loop's batch is held until shutdown begins;
    ``lifespan.shutdown.complete`` comes only once all 50 are committed."""
    from django.test import override_settings

    gate = {}
    original = loop_writing.LoopWriter._connection_of

    async def held(self, db):
        await gate["open"].wait()
        return await original(self, db)

    async def body():
        gate["open"] = asyncio.Event()
        loop_writing.LoopWriter._connection_of = held
        await asyncio.gather(*(recording.record_execution(make_event(i)) for i in range(50)))
        return await asyncio.to_thread(_stored_count)

    try:
        with override_settings(EVENT_WRITE_BEHIND=True):
            sent, before = asyncio.run(served(body, before_shutdown=lambda: gate["open"].set()))
    finally:
        loop_writing.LoopWriter._connection_of = original

    assert before == 0
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(stored_messages()) == 50 and rollup_requests() == 50


def test_a_database_outage_sends_the_loops_events_to_the_spool_within_the_bound_and_they_are_replayed_once(
        database_behind_proxy, tmp_path, settings):
    """PostgreSQL reached through a TCP proxy that is stopped (open connections cut, new ones refused), as in
    tests/recording/test_database_outage_bounds.py: the loop's connection breaks, its batch goes to the writer
    thread, which spools it within the bound; the next batches go to the spool at once; once the proxy is back the
    replayer stores each event once, with no further call, and the loop writes again."""
    from django.db import connection as django_connection

    settings.EVENT_SPOOL_DIR = tmp_path
    proxy = database_behind_proxy
    events = [make_event(i) for i in range(13)]

    async def body():
        loop_writer = recording._loop_writer
        assert await recording.record_execution(events[0]) == recording.COMMITTED  # the loop's connection, via the proxy
        proxy.stop()
        await asyncio.to_thread(django_connection.close_pool)
        started = time.monotonic()
        during = [await recording.record_execution(events[1])]  # the loop finds its connection cut
        during += await asyncio.gather(*(recording.record_execution(event) for event in events[2:11]))
        took = time.monotonic() - started
        thread = recording._writer
        outage_seen = thread.outage
        proxy.start()
        replayed = await asyncio.to_thread(thread.wait_for_replay, 30)
        after = await asyncio.gather(*(recording.record_execution(event) for event in events[11:]))
        return during, took, outage_seen, replayed, after, loop_writer

    _sent, (during, took, outage_seen, replayed, after, loop_writer) = asyncio.run(served(body))

    assert during == [recording.SPOOLED] * 10 and outage_seen
    assert took < BOUND_SECONDS, took
    assert replayed
    assert after == [recording.COMMITTED] * 2
    assert loop_writer.events_committed >= 2  # the first event, and the loop again after the outage
    assert stored_messages() == sorted(f"event {i}" for i in range(13))  # each once
    assert rollup_requests() == 13
