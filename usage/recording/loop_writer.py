"""Group commit on the server's event loop (PostgreSQL): the execution events written without a thread hop.

The event writer thread (usage/recording/writer.py) costs each call two wake-ups between threads: the loop wakes
the thread for the event, the thread wakes the loop for the commit. On a machine whose CPUs sleep when idle each
wake-up costs tens of microseconds, and together with handing the events over and back they were about a sixth of
the worker's CPU a call (docs/PERFORMANCE.md, "Where a call's CPU goes"). Here the loop writes the batch itself,
on a psycopg ``AsyncConnection`` of its own, and resolves its callers' waits directly.

The batching is the thread's: events queued while a batch is written go together in the next one, so under load
one statement carries many events; the statement is the same (``write_statement``, usage/models/events.py),
prepared once on the connection. Only the happy path is here. A batch that fails for any reason (the database away
or refusing, a deadlock with another process's batch, a bug) is handed whole to the writer thread, which has the
answers for each (retries, the spool, splitting a batch around an event the database refuses) and resolves the
callers' waits on this loop; while the thread knows of an outage, batches go to it (and so to the spool) at once.

Started by ``start_event_writer`` when it is called from a running loop (the server's lifespan) on PostgreSQL;
SQLite, management commands and tests without a server keep the thread alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import InvalidStateError

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import pq

from usage.models import ExecutionEvent
from usage.models.events import mark_stored, mark_unstored, write_statement
from usage.observability import metrics

MAX_BATCH = 500  # as the thread's, and EVENTS_PER_STATEMENT: one statement a batch
STATEMENT_NAME = b"connectors_admin_event_write"

logger = logging.getLogger(__name__)


class LoopCompletion:
    """A caller's wait on its event loop, resolved from the writer thread: what the thread's batches resolve when
    the loop writer handed them over. It has the three methods of a concurrent Future the thread uses."""

    __slots__ = ("loop", "waiter", "_settled")

    def __init__(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future):
        self.loop, self.waiter, self._settled = loop, waiter, False

    def done(self) -> bool:
        return self._settled

    def set_result(self, result) -> None:
        self._settle(result, None)

    def set_exception(self, exception: BaseException) -> None:
        self._settle(None, exception)

    def _settle(self, result, exception) -> None:
        if self._settled:
            raise InvalidStateError("already resolved")
        self._settled = True
        try:
            self.loop.call_soon_threadsafe(_resolve_waiter, self.waiter, result, exception)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _resolve_waiter(waiter: asyncio.Future, result, exception) -> None:
    if waiter.done():  # the caller stopped waiting (cancelled, or COMMIT_WAIT_SECONDS passed)
        return
    if exception is not None:
        waiter.set_exception(exception)
    else:
        waiter.set_result(result)


class LoopWriter:
    """The loop's queue of events and its one batch in flight. ``fallback`` is the process's writer thread."""

    def __init__(self, fallback, loop: asyncio.AbstractEventLoop):
        self.fallback = fallback
        self.loop = loop
        self._queue: list[tuple[ExecutionEvent, asyncio.Future]] = []
        self._flushing: asyncio.Task | None = None
        self._connection: psycopg.AsyncConnection | None = None
        self._prepared = False  # the statement, on this connection
        self._watched: int | None = None  # the connection's socket, watched by ``_readable``
        self._reply: asyncio.Future | None = None  # the batch in flight's wait for the database's bytes
        # Django's wrapper of the default database, for its vendor, its value conversions and new_async_connection:
        # no query is made on it. One for the writer's life: ``connections[alias]`` is kept per async context, and
        # each batch's task is a new one, so asking there built a new DatabaseWrapper for every batch.
        self._db = connections.create_connection(DEFAULT_DB_ALIAS)
        self._drained = threading.Event()  # nothing queued or in flight (for flush_events from another thread)
        self._drained.set()
        self.batches_written = 0
        self.events_committed = 0
        self.events_handed_over = 0

    @property
    def pending(self) -> int:
        return len(self._queue) + (0 if self._drained.is_set() else 1)

    def submit(self, event: ExecutionEvent) -> asyncio.Future:
        """Queue ``event`` (on the loop's thread); the future ends as the thread's would: COMMITTED or SPOOLED, or
        EventNotRecorded."""
        waiter = self.loop.create_future()
        self._queue.append((event, waiter))
        if self._flushing is None:
            self._drained.clear()
            self._flushing = self.loop.create_task(self._flush())
        return waiter

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                metrics.set_event_queue_depth(len(batch) + len(self._queue))
                try:
                    await self._write(batch)
                except BaseException:  # cancelled (the loop is being torn down): the thread still writes it
                    self._hand_over(batch)
                    raise
            metrics.set_event_queue_depth(0)
        finally:
            self._flushing = None
            if self._queue:  # queued while a cancellation went through: not left behind
                batch, self._queue = self._queue, []
                self._hand_over(batch)
            self._drained.set()

    async def _write(self, batch: list[tuple[ExecutionEvent, asyncio.Future]]) -> None:
        if self.fallback.outage:  # the thread spools while the database is away, and knows when it is back
            self._hand_over(batch)
            return
        events = [event for event, _waiter in batch]
        try:
            db = self._db
            for event in events:
                event.make_storable()
            statement, parameters = write_statement(events, db)
            pgconn = (await self._connection_of(db)).pgconn
            ids = await self._run(pgconn, statement, parameters)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the thread knows what to do with the batch
            await self._discard_connection()
            if not isinstance(exc, psycopg.Error):
                logger.exception("the event loop's writer failed on a batch of %d events; the thread writes it",
                                 len(batch))
            self._hand_over(batch)
            return
        mark_stored(events, ids, db.alias)
        for _event, waiter in batch:
            if not waiter.done():
                waiter.set_result(_COMMITTED)
        self.batches_written += 1
        self.events_committed += len(batch)

    async def _connection_of(self, db) -> psycopg.AsyncConnection:
        """The loop's connection, opened as the backend opens its own (connectors_admin/postgresql/base.py), and
        watched for its replies from then on (``_readable``)."""
        if self._connection is not None and self._connection.closed:
            await self._discard_connection()
        if self._connection is None:
            self._connection = await db.new_async_connection()
            self._prepared = False
            self._watched = self._connection.pgconn.socket
            self.loop.add_reader(self._watched, self._readable)
        return self._connection

    async def _run(self, pgconn: pq.abc.PGconn, statement: str, parameters: list[str]) -> list[int]:
        """The batch's statement on libpq directly: prepared once per connection, then sent with its two text
        parameters, its reply awaited, the ids it returns read (as ints, in the order of the events).

        psycopg's cursor did the same through its generators and a reader added to and removed from the loop for
        each wait (eight system calls a batch): half the CPU of the statement's round trip on the loop, measured
        with the same statement (docs/PERFORMANCE.md, "The event write on libpq"). The connection is watched for
        readability for its whole life instead. Any failure raises, and the caller hands the batch to the thread.
        """
        if not self._prepared:
            pgconn.send_prepare(STATEMENT_NAME, _numbered_placeholders(statement))
            self._check(await self._reply_of(pgconn), pq.ExecStatus.COMMAND_OK)
            self._prepared = True
        pgconn.send_query_prepared(STATEMENT_NAME, [parameter.encode() for parameter in parameters])
        result = self._check(await self._reply_of(pgconn), pq.ExecStatus.TUPLES_OK)
        return [int(result.get_value(row, 0)) for row in range(result.ntuples)]

    async def _reply_of(self, pgconn: pq.abc.PGconn) -> list:
        """What the database answered to what was just sent: every result, until libpq has none left."""
        while pgconn.flush():  # a batch larger than the socket's buffer: wait until it takes more (or has bytes)
            self._reply = self.loop.create_future()
            self.loop.add_writer(self._watched, _resolve_waiter, self._reply, None, None)
            try:
                await self._reply
            finally:
                self.loop.remove_writer(self._watched)
                self._reply = None
            pgconn.consume_input()
        # Nothing has been read since the statement went out (reading at once would only find the socket empty):
        # wait for the socket to be readable, then read. The reader is level-triggered, so bytes that came before
        # the wait still wake it; a broken connection is readable too, and consume_input raises then.
        while pgconn.is_busy():
            self._reply = self.loop.create_future()
            try:
                await self._reply
            finally:
                self._reply = None
            pgconn.consume_input()
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        return results

    def _readable(self) -> None:
        """The connection's socket has bytes: they are the reply a batch waits for, or, between batches, the
        server's own (a notice, or the end of the connection, which marks it closed)."""
        if self._reply is not None:
            if not self._reply.done():
                self._reply.set_result(None)
            return
        connection = self._connection
        try:
            connection.pgconn.consume_input()
            while connection.pgconn.notifies() is not None:
                pass
        except psycopg.Error:  # closed by the server: the next batch opens another one
            self._unwatch()

    def _unwatch(self) -> None:
        if self._watched is not None:
            self.loop.remove_reader(self._watched)
            self._watched = None

    @staticmethod
    def _check(results: list, expected: pq.ExecStatus):
        if len(results) != 1 or results[0].status != expected:
            states = [pq.ExecStatus(result.status).name for result in results]
            # The database's own message may quote the events' values: the thread's retry says what it needs to.
            raise psycopg.DatabaseError(f"the events' statement got {states}, not {expected.name}")
        return results[0]

    async def _discard_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._unwatch()
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped all the same
                pass

    def _hand_over(self, batch: list[tuple[ExecutionEvent, asyncio.Future]]) -> None:
        """Give ``batch`` to the writer thread, whose outcome resolves each caller's wait on this loop."""
        mark_unstored([event for event, _waiter in batch])  # the thread inserts them afresh
        for event, waiter in batch:
            try:
                self.fallback.submit(event, LoopCompletion(self.loop, waiter))
            except RuntimeError:  # the thread is stopped (shutdown ran out of time): logged whole, never dropped
                self.fallback.lose(event, LoopCompletion(self.loop, waiter), "the event writer is stopped")
        self.events_handed_over += len(batch)

    async def drain(self) -> None:
        """Wait until everything queued here is written or handed over, then close the connection (shutdown)."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)
        await self._discard_connection()

    def wait_drained(self, timeout: float | None) -> bool:
        """From another thread: wait until nothing is queued or in flight here."""
        return self._drained.wait(timeout)

    def health(self) -> dict:
        return {"loop_batches_written": self.batches_written, "loop_events_committed": self.events_committed,
                "loop_events_handed_over": self.events_handed_over, "loop_queued": len(self._queue)}


_COMMITTED = "committed"  # usage.recording.writer.COMMITTED (that module imports this one)


def _numbered_placeholders(statement: str) -> bytes:
    """psycopg's ``%s`` placeholders as PostgreSQL's ``$1``, ``$2``... (and ``%%`` as ``%``), as psycopg sends them."""
    numbers = iter(range(1, 1000))
    return re.sub(r"%(%|s)", lambda found: "%" if found[1] == "%" else f"${next(numbers)}", statement).encode()
