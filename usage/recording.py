"""The one write path for execution events: insert the events and add them to the usage rollups atomically.

Rollups are updated with an upsert that adds in SQL (``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x``),
so concurrent writers on PostgreSQL and SQLite never lose a count.
"""

import asyncio
import json
import logging
import threading
import time
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)

from usage.models import (
    LATENCY_BIN_BOUNDS_MS,
    ROLLUP_KEY_FIELDS,
    ROLLUP_SUM_FIELDS,
    ExecutionEvent,
    UsageRollup,
    latency_bin_field,
)

SUM_FIELDS = ROLLUP_SUM_FIELDS
KEY_FIELDS = ROLLUP_KEY_FIELDS


def latency_bin(duration_ms: float) -> int:
    return bisect_left(LATENCY_BIN_BOUNDS_MS, duration_ms)


def rollup_key(event: ExecutionEvent) -> tuple:
    bucket = event.timestamp.replace(minute=0, second=0, microsecond=0)
    return (event.connector_id, bucket, event.model[:255], event.user_name, event.outcome)


def rollup_deltas(events: Iterable[ExecutionEvent]) -> dict[tuple, dict[str, float]]:
    """Sum events into per-rollup-row increments."""
    deltas: dict[tuple, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SUM_FIELDS, 0))
    for event in events:
        row = deltas[rollup_key(event)]
        row["requests"] += 1
        row["prompt_tokens"] += event.prompt_tokens
        row["completion_tokens"] += event.completion_tokens
        row["total_tokens"] += event.total_tokens
        row["cached_tokens"] += event.cached_tokens or 0
        row["reasoning_tokens"] += event.reasoning_tokens or 0
        row["estimated_requests"] += 1 if event.usage_source == "estimated" else 0
        row["duration_ms_sum"] += event.duration_ms
        row[latency_bin_field(latency_bin(event.duration_ms))] += 1
    return deltas


ROLLUP_ROWS_PER_STATEMENT = 200
EVENTS_PER_STATEMENT = 500  # with their rollup rows, well under PostgreSQL's 65,535 parameters a statement


def _sorted_deltas(deltas: dict[tuple, dict[str, float]]) -> list[tuple[tuple, dict[str, float]]]:
    # Sorted so that concurrent batches take row locks in the same order (no deadlocks on PostgreSQL).
    return sorted(deltas.items(), key=lambda item: tuple(str(part) for part in item[0]))


def _rollup_upsert(items: list[tuple[tuple, dict[str, float]]]) -> tuple[str, list]:
    """The statement adding ``items`` (rollup key, increments) to the rollup rows, creating missing ones."""
    table = connection.ops.quote_name(UsageRollup._meta.db_table)
    quoted = [connection.ops.quote_name(c) for c in KEY_FIELDS + SUM_FIELDS]
    updates = ", ".join(f"{q} = {table}.{q} + excluded.{q}" for q in quoted[len(KEY_FIELDS):])
    row_placeholder = "(" + ", ".join(["%s"] * len(quoted)) + ")"
    bucket_field = UsageRollup._meta.get_field("bucket")
    params: list = []
    for (connector_id, bucket, model, user_name, outcome), sums in items:
        params += [connector_id, bucket_field.get_db_prep_value(bucket, connection), model, user_name, outcome]
        params += [sums[field] for field in SUM_FIELDS]
    sql = (
        f"INSERT INTO {table} ({', '.join(quoted)}) VALUES {', '.join([row_placeholder] * len(items))} "
        f"ON CONFLICT ({', '.join(quoted[: len(KEY_FIELDS)])}) DO UPDATE SET {updates}"
    )
    return sql, params


def add_to_rollups(deltas: dict[tuple, dict[str, float]]) -> None:
    """Add increments to the rollup rows, creating missing rows. Safe under concurrent writers."""
    items = _sorted_deltas(deltas)
    with connection.cursor() as cursor:
        for start in range(0, len(items), ROLLUP_ROWS_PER_STATEMENT):
            cursor.execute(*_rollup_upsert(items[start : start + ROLLUP_ROWS_PER_STATEMENT]))


def _insert_and_roll_up(events: list[ExecutionEvent]) -> None:
    """PostgreSQL: insert ``events`` and add them to the rollups in one statement (the upsert in a data-modifying
    WITH, which PostgreSQL always runs), atomic on its own: one round trip to the database instead of four
    (BEGIN, the inserts, the upsert, COMMIT). It is what an execution waits for before it is answered, and the
    fewer exchanges with the database, the less the gateway adds (docs/PERFORMANCE.md)."""
    rollup_sql, rollup_params = _rollup_upsert(_sorted_deltas(rollup_deltas(events)))
    fields = [field for field in ExecutionEvent._meta.concrete_fields if not field.primary_key]
    params: list = []
    for event in events:
        params += [field.get_db_prep_save(field.pre_save(event, True), connection) for field in fields]
    row_placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    quote = connection.ops.quote_name
    sql = (
        f"WITH rollups AS ({rollup_sql} RETURNING 1) "
        f"INSERT INTO {quote(ExecutionEvent._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES {', '.join([row_placeholder] * len(events))} RETURNING {quote(ExecutionEvent._meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, rollup_params + params)
        ids = [row[0] for row in cursor.fetchall()]
    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding, event._state.db = False, connection.alias


def record_events(events: list[ExecutionEvent]) -> list[ExecutionEvent]:
    """Insert ``events`` and add them to the rollups, atomically."""
    if not events:
        return events
    for event in events:
        event.total_tokens = event.total_tokens or (event.prompt_tokens + event.completion_tokens)
        event.error_message = (event.error_message or "")[:4000]
    if connection.vendor == "postgresql" and len(events) <= EVENTS_PER_STATEMENT:
        _insert_and_roll_up(events)
        return events
    with transaction.atomic():
        if connection.vendor == "postgresql":
            for start in range(0, len(events), EVENTS_PER_STATEMENT):
                _insert_and_roll_up(events[start : start + EVENTS_PER_STATEMENT])
            return events
        created = ExecutionEvent.objects.bulk_create(events)
        add_to_rollups(rollup_deltas(created))
    return created


# --- Group commit -------------------------------------------------------------------------------------------------
#
# Under a server, executions hand their event to one writer thread per process instead of each opening a
# transaction from a thread hop of its own. The writer takes everything queued so far (up to MAX_BATCH events),
# writes it with record_events (one transaction: the inserts and the rollup upsert), and only then wakes the
# executions that are waiting: a caller gets its answer after its event is committed (group commit), so a crash
# loses no event of an answered request. Under load one transaction carries hundreds of events; alone, an event
# costs one transaction, as before, without a thread being started for it.
#
# The writer runs only where it has been started (connectors_admin/asgi.py starts it for the server process and
# flushes it at shutdown). Elsewhere (management commands, Django's test client) record_event writes in the
# caller's own database connection and transaction, as it always did.

MAX_BATCH = 500
# How long an execution waits for its event's commit before it answers anyway. The event stays queued and is
# written when the database is back; the caller's answer must not be held hostage by the event log.
COMMIT_WAIT_SECONDS = 10.0
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # then every 2 s, for as long as the database stays away

logger = logging.getLogger(__name__)


class EventWriter:
    """A thread that writes queued events in batches through record_events. See the note above."""

    def __init__(self, max_batch: int = MAX_BATCH, retry_delays: tuple[float, ...] = RETRY_DELAYS):
        self.max_batch = max_batch
        self.retry_delays = retry_delays
        self._queue: deque[tuple[ExecutionEvent, Future]] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._pending = 0  # queued or being written
        self._thread: threading.Thread | None = None
        self.batches_written = 0

    # -- used by executions --------------------------------------------------------------------------------------
    def submit(self, event: ExecutionEvent) -> Future:
        """Queue ``event``; the future completes once it is committed (or given up on, see _write_alone)."""
        future: Future = Future()
        with self._wakeup:
            if self._stopping:
                raise RuntimeError("the event writer is stopped")
            self._queue.append((event, future))
            self._pending += 1
            self._wakeup.notify()
        return future

    # -- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> "EventWriter":
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far is written. True if it happened within ``timeout``."""
        with self._wakeup:
            return self._wakeup.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        """Write what is queued, then end the thread. Events still unwritten after ``timeout`` are logged."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._wakeup:
            left = list(self._queue)
            self._queue.clear()
        for event, _future in left:
            # The last resort: the event's fields in the log, where they can be replayed from.
            logger.error("execution event not written before shutdown: %s", event_as_json(event))
        return not left and (self._thread is None or not self._thread.is_alive())

    # -- the thread ----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wakeup:
                self._wakeup.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    break  # stopping, and everything is written
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                self._write(batch)
            finally:
                for _event, future in batch:
                    _complete(future)
                with self._wakeup:
                    self._pending -= len(batch)
                    self._wakeup.notify_all()
        connection.close()

    def _write(self, batch: list[tuple[ExecutionEvent, Future]]) -> None:
        """Write ``batch`` in one transaction, retrying while the database is unreachable.

        A batch the database rejects for its content (which no retry fixes) is split so that every good event
        is still written; an event rejected on its own is logged whole, never silently dropped.
        """
        events = [event for event, _future in batch]
        attempt = 0
        while True:
            try:
                record_events(events)
                self.batches_written += 1
                return
            except (OperationalError, InterfaceError) as exc:
                _forget_ids(events)
                connection.close()  # the next attempt opens (or takes from the pool) a fresh connection
                if self._stopping and attempt >= len(self.retry_delays):
                    reason = f"giving up at shutdown after {attempt + 1} attempts: {exc}"
                    for event in events:
                        logger.error("execution event not written (%s): %s", reason, event_as_json(event))
                    return
                delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
                logger.warning("writing %d execution events failed (%s); retrying in %g s", len(events), exc, delay)
                attempt += 1
                time.sleep(delay)
            except DatabaseError as exc:
                _forget_ids(events)
                connection.close()
                if len(batch) == 1:
                    logger.error("execution event rejected by the database (%s): %s", exc, event_as_json(events[0]))
                    return
                middle = len(batch) // 2
                self._write(batch[:middle])
                self._write(batch[middle:])
                return


def _forget_ids(events: list[ExecutionEvent]) -> None:
    for event in events:
        event.pk = None  # bulk_create may have assigned ids before the transaction was rolled back
        event._state.adding, event._state.db = True, None


def _complete(future: Future) -> None:
    try:
        future.set_result(None)
    except InvalidStateError:  # the waiting execution was cancelled; the event is written all the same
        pass


def event_as_json(event: ExecutionEvent) -> str:
    fields = {f.attname: getattr(event, f.attname) for f in ExecutionEvent._meta.concrete_fields if f.attname != "id"}
    return json.dumps(fields, default=str, sort_keys=True)


_writer: EventWriter | None = None
_writer_lock = threading.Lock()


def start_event_writer() -> EventWriter:
    """Start this process's event writer (idempotent). From now on record_event goes through it."""
    global _writer
    with _writer_lock:
        if _writer is None or not _writer.running:
            _writer = EventWriter().start()
        return _writer


def stop_event_writer(timeout: float = 30.0) -> bool:
    """Write everything queued and stop the writer; record_event writes directly again. True if nothing was left."""
    global _writer
    with _writer_lock:
        writer, _writer = _writer, None
    return writer.stop(timeout) if writer is not None else True


def flush_events(timeout: float | None = 30.0) -> bool:
    """Wait until every event recorded so far is committed (for tests and shutdown)."""
    writer = _writer
    return writer.flush(timeout) if writer is not None else True


async def record_event(event: ExecutionEvent) -> None:
    """Record one execution from async code: through the writer when it runs (group commit), else directly."""
    writer = _writer
    if writer is None or not writer.running:
        await sync_to_async(record_events)([event])
        return
    try:
        future = writer.submit(event)
    except RuntimeError:  # stopped between the check and the submit
        await sync_to_async(record_events)([event])
        return
    if settings.EVENT_WRITE_BEHIND:
        return
    try:
        async with asyncio.timeout(COMMIT_WAIT_SECONDS):
            await asyncio.shield(asyncio.wrap_future(future))
    except TimeoutError:
        logger.warning("answering before the execution event is committed; it stays queued for the database")
