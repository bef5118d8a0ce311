"""The one door for execution events: ``record_execution(event)``, from async code, for every execution.

Under a server the event goes to this process's writer thread (group commit, below); elsewhere it is written
directly. Either way it ends in ``ExecutionEvent.objects.insert_batch`` (usage.models.events), which inserts the
events and adds them to the usage rollups in one transaction, after making each one storable
(``ExecutionEvent.make_storable``: lone surrogates and NUL replaced, lengths and counts bounded), so no string a
caller or a provider sends can make the database refuse it. That step runs in the writer thread, off the event
loop that answers callers.
"""

import asyncio
import logging
import random
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from usage.models import ExecutionEvent
from usage.models.events import mark_unstored
from usage.observability import metrics
from usage.observability.execution import execution_recorded
from usage.recording.loop_writer import LoopCompletion, LoopWriter
from usage.recording.spool import EventSpool, event_as_json, release, replay_file


def _insert(events: list[ExecutionEvent]) -> list[ExecutionEvent]:
    return ExecutionEvent.objects.insert_batch(events)


# --- Group commit -------------------------------------------------------------------------------------------------
#
# Under a server, executions hand their event to one writer thread per process instead of each opening a
# transaction from a thread hop of its own. The writer takes everything queued so far (up to MAX_BATCH events),
# writes it with ExecutionEvent.objects.insert_batch (one transaction: the inserts and the rollup upsert), and only
# then wakes the executions that are waiting: a caller gets its answer after its event is stored (group commit).
# Under load one transaction carries hundreds of events; alone, an event costs one transaction.
#
# "Stored" means committed, or, while the database cannot be reached, appended and fsync'd to the spool
# (usage/recording/spool.py): the writer does not hold events in memory through an outage. It learns of an outage within
# DATABASE_WAIT_SECONDS (the longest a connection is awaited), at once when the process already knows the
# database is down (connectors_admin/database_availability.py), and spools from then on without trying. A
# replayer thread tries the database every second and puts spooled events into it as soon as it answers (and, at
# start-up, those a previous process left), each exactly once. An event the database refuses for its content
# (which make_storable should make impossible) is split from its batch, logged whole as JSON, and its caller's
# wait ends with EventNotRecorded: never a pretended commit.
#
# The writer runs only where it has been started (connectors_admin/asgi.py starts it for the server process and
# flushes it at shutdown). Elsewhere (management commands, Django's test client) record_execution writes in the
# caller's own database connection and transaction.

MAX_BATCH = 500
# How long an execution waits for its event to be stored before it answers anyway (the event stays queued).
# With the spool this only happens when neither the database nor the local disk takes the event.
COMMIT_WAIT_SECONDS = 10.0
# A batch that lost a deadlock or a serialization conflict to another process's batch (SQLSTATE 40P01, 40001) is
# written again at once, up to this many times, after a random pause of up to this many seconds times the try:
# the database is there. Seen under load at an hour's start, when several processes' first batches of the hour
# insert the same new summary rows (bench.writer_rate, docs/PERFORMANCE.md).
CONFLICT_RETRIES = 5
CONFLICT_BACKOFF_SECONDS = 0.005
CONFLICT_STATES = frozenset({"40P01", "40001"})
# Without a spool, a batch is retried at these intervals (then every 2 s) while the database stays away.
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# While the database is away, the replayer tries it again at these intervals (then every second), on its own: the
# spool is replayed within about a second of the database's return, whether or not calls come.
REPLAY_DELAYS = (0.1, 0.25, 0.5, 1.0)

logger = logging.getLogger(__name__)


REJECTED = "rejected by the database"


class EventNotRecorded(Exception):
    """An event could be neither committed nor spooled; its fields are in the log (as JSON)."""


COMMITTED, SPOOLED = "committed", "spooled"


class EventWriter:
    """A thread that writes queued events in batches through insert_batch, and one that replays the spool."""

    def __init__(self, max_batch: int = MAX_BATCH, retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 spool: EventSpool | None = None):
        self.max_batch = max_batch
        self.retry_delays = retry_delays
        self.spool = spool
        self._queue: deque[tuple[ExecutionEvent, Future]] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._pending = 0  # queued or being written
        self._thread: threading.Thread | None = None
        self._replayer: threading.Thread | None = None
        # The replayer waits on a condition of its own, so that queuing an event wakes the writer thread only.
        self._replay_signal = threading.Condition()
        self._replay_wanted = spool is not None  # at start-up: files a previous process may have left
        self._spool_gate = threading.Lock()  # orders "spool this batch" against "the outage is over"
        self.outage = False  # the database is away: batches go straight to the spool until a replay succeeds
        self.batches_written = 0
        self.restarts = 0
        self.events_committed = 0
        self.events_spooled = 0
        self.events_replayed = 0
        self.events_lost = 0
        self.last_error = ""

    # -- used by executions --------------------------------------------------------------------------------------
    def submit(self, event: ExecutionEvent, future: Future | LoopCompletion | None = None) -> Future | LoopCompletion:
        """Queue ``event``; the future ends with COMMITTED or SPOOLED, or raises EventNotRecorded. ``future``: the
        wait to resolve (a loop writer's hand-over, usage/recording/loop_writer.py), else a new Future."""
        if future is None:
            future = Future()
        with self._wakeup:
            if self._stopping:
                raise RuntimeError("the event writer is stopped")
            self._queue.append((event, future))
            self._pending += 1
            metrics.set_event_queue_depth(self._pending)
            self._wakeup.notify_all()
        return future

    # -- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> "EventWriter":
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()
        if self.spool is not None and (self._replayer is None or not self._replayer.is_alive()):
            self._replayer = threading.Thread(target=self._replay_loop, name="event-replayer", daemon=True)
            self._replayer.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def healthy(self) -> bool:
        """Both threads alive (the replayer only where there is a spool)."""
        return self.running and (self.spool is None or (self._replayer is not None and self._replayer.is_alive()))

    def ensure_running(self) -> bool:
        """Restart a thread that died (neither should: they survive any exception). False when stopped."""
        with self._wakeup:
            if self._stopping:
                return False
            if self.healthy:
                return True
            self.restarts += 1
            logger.error("an event writer thread had died; restarting it (restart %d)", self.restarts)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
                self._thread.start()
            if self.spool is not None and (self._replayer is None or not self._replayer.is_alive()):
                self._want_replay()
                self._replayer = threading.Thread(target=self._replay_loop, name="event-replayer", daemon=True)
                self._replayer.start()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far is stored. True if it happened within ``timeout``."""
        with self._wakeup:
            return self._wakeup.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        """Store what is queued (committed or spooled), then end the threads. Events still unstored after
        ``timeout`` are logged. True when nothing was lost."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        with self._replay_signal:
            self._replay_signal.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._replayer is not None:
            # A replay blocked on an unreachable database is left to the next start (its file stays).
            self._replayer.join(min(timeout, 1.0))
        with self._wakeup:
            left = list(self._queue)
            self._queue.clear()
        for event, future in left:
            self._lose(event, future, "not stored before shutdown")
        if self.spool is not None:
            self.spool.close()
        return not left and not self.events_lost and (self._thread is None or not self._thread.is_alive())

    def health(self) -> dict:
        return {
            "running": self.healthy,
            "restarts": self.restarts,
            "queued": self._pending,
            "database_reachable": not self.outage,
            "spool_files": self.spool.pending_files() if self.spool is not None else 0,
            "events_committed": self.events_committed,
            "events_spooled": self.events_spooled,
            "events_replayed": self.events_replayed,
            "events_lost": self.events_lost,
            "last_error": self.last_error,
        }

    # -- the writer thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._wakeup:
                    self._wakeup.wait_for(lambda: self._queue or self._stopping)
                    if not self._queue:
                        break  # stopping, and everything is stored
                    batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                try:
                    self._write(batch)
                except BaseException as exc:  # a bug of ours must not take the writer, or its batch, down
                    logger.exception("the event writer failed on a batch of %d events", len(batch))
                    self._last_resort(batch, f"writer error: {exc!r}")
                    if not isinstance(exc, Exception):
                        raise  # the thread ends; ensure_running starts another one (see record_execution)
                finally:
                    with self._wakeup:
                        self._pending -= len(batch)
                        metrics.set_event_queue_depth(self._pending)
                        self._wakeup.notify_all()
        finally:
            connection.close()

    def _write(self, batch: list[tuple[ExecutionEvent, Future]]) -> None:
        """Commit ``batch`` in one transaction; spool it while the database is away; split it when the database
        refuses its content, so that every good event is stored and a bad one is logged, never dropped silently."""
        events = [event for event, _future in batch]
        if self.outage and self._spool(batch):
            return
        attempt = conflicts = 0
        while True:
            try:
                _insert(events)
            except (OperationalError, InterfaceError) as exc:
                mark_unstored(events)
                if is_write_conflict(exc) and conflicts < CONFLICT_RETRIES:
                    # Another process's batch held rows this one needed: PostgreSQL rolled this one back whole.
                    # The database is there; write the batch again at once instead of spooling it.
                    conflicts += 1
                    metrics.count_event_write_failure("conflict_retried")
                    time.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * conflicts))
                    continue
                connection.close()  # the next attempt opens (or takes from the pool) a fresh connection
                self.last_error = f"database unreachable: {exc}"
                metrics.count_event_write_failure("database_unavailable")
                if self.spool is not None and self._spool(batch, outage=True):
                    return
                if self._stopping and attempt >= len(self.retry_delays):
                    for event, future in batch:
                        self._lose(event, future, f"giving up at shutdown after {attempt + 1} attempts: {exc}")
                    return
                delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
                logger.warning("writing %d execution events failed (%s); retrying in %g s", len(events), exc, delay)
                attempt += 1
                time.sleep(delay)
                continue
            except Exception as exc:  # the content: no retry fixes it
                mark_unstored(events)
                connection.close()
                if len(batch) == 1:
                    self._lose(events[0], batch[0][1], f"{REJECTED}: {exc}")
                    return
                middle = len(batch) // 2
                self._write(batch[:middle])
                self._write(batch[middle:])
                return
            self.batches_written += 1
            self.events_committed += len(events)
            for _event, future in batch:
                _resolve(future, COMMITTED)
            return

    def _spool(self, batch: list[tuple[ExecutionEvent, Future]], *, outage: bool = False) -> bool:
        """Append ``batch`` to the spool (fsync'd). False when there is no spool, or the disk failed too."""
        if self.spool is None:
            return False
        with self._spool_gate:
            if not (self.outage or outage):
                return False  # the outage ended meanwhile: back to the database
            try:
                self.spool.append([event for event, _future in batch])
            except OSError as exc:
                metrics.count_event_write_failure("spool_unavailable")
                self.last_error = f"spool unavailable: {exc}"
                logger.error("spooling %d execution events failed: %s", len(batch), exc)
                return False
            if not self.outage:
                logger.warning("the database is unreachable; execution events go to the spool in %s",
                               self.spool.directory)
            self.outage = True
        self.events_spooled += len(batch)
        for _event, future in batch:
            _resolve(future, SPOOLED)
        self._want_replay()
        return True

    def _last_resort(self, batch: list[tuple[ExecutionEvent, Future]], reason: str) -> None:
        unresolved = [(event, future) for event, future in batch if not future.done()]
        if unresolved and not self._spool(unresolved, outage=True):
            for event, future in unresolved:
                self._lose(event, future, reason)

    def lose(self, event: ExecutionEvent, future: Future | LoopCompletion, reason: str) -> None:
        """Log ``event`` whole as not stored (for a batch the loop writer could not hand over: shutdown)."""
        self._lose(event, future, reason)

    def _lose(self, event: ExecutionEvent, future: Future | LoopCompletion, reason: str) -> None:
        # The last resort: the event's fields in the log, where they can be replayed from.
        self.events_lost += 1
        metrics.count_event_write_failure("rejected" if reason.startswith(REJECTED) else "lost")
        self.last_error = reason
        logger.error("execution event not stored (%s): %s", reason, event_as_json(event))
        try:
            future.set_exception(EventNotRecorded(reason))
        except InvalidStateError:
            pass

    # -- the replayer thread -------------------------------------------------------------------------------------
    def _want_replay(self) -> None:
        with self._replay_signal:
            self._replay_wanted = True
            self._replay_signal.notify_all()

    def wait_for_replay(self, timeout: float) -> bool:
        """Wait until nothing is left to replay and the database is in use again (for tests and operators)."""
        with self._replay_signal:
            return self._replay_signal.wait_for(
                lambda: not self.outage and not self._replay_wanted and self.spool.pending_files() == 0, timeout
            )

    def _replay_loop(self) -> None:
        failures = 0
        try:
            while True:
                with self._replay_signal:
                    self._replay_signal.wait_for(lambda: self._stopping or self._replay_wanted)
                    if self._stopping:
                        return
                    self._replay_wanted = False
                if self._replay_once():
                    failures = 0
                    continue
                with self._replay_signal:
                    self._replay_wanted = True
                    delay = REPLAY_DELAYS[min(failures, len(REPLAY_DELAYS) - 1)]
                    failures += 1
                    if self._replay_signal.wait_for(lambda: self._stopping, delay):
                        return
        finally:
            connection.close()

    def _replay_once(self) -> bool:
        """Replay every claimable spool file. True when the database took them all (the outage is over)."""
        claimed = self.spool.claim()
        try:
            if not claimed and self.outage:
                _probe()  # nothing of ours to replay (another process holds the files): is the database back?
            while claimed:
                path, handle = claimed[0]
                self.events_replayed += replay_file(path, handle)
                claimed.pop(0)
        except (OperationalError, InterfaceError) as exc:
            connection.close()
            self.last_error = f"database unreachable: {exc}"
            logger.info("replaying the event spool failed, will try again: %s", exc)
            release(claimed)
            return False
        except Exception:
            logger.exception("replaying the event spool failed")
            release(claimed)
            return False
        with self._spool_gate:
            if self.spool.has_active_file:
                self._want_replay()  # spooled while we replayed: once more
                return True
            if self.outage:
                logger.warning("the database is reachable again; the spooled execution events are stored")
            self.outage = False
        with self._replay_signal:
            self._replay_signal.notify_all()  # for wait_for_replay
        return True


def _probe() -> None:
    """A query that needs the database; OperationalError (within DATABASE_WAIT_SECONDS) while it is away."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def is_write_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the statement was rolled back because of another transaction, and
    runs again as it is (Django's error keeps the driver's, whose ``sqlstate`` says which)."""
    return getattr(exc.__cause__, "sqlstate", None) in CONFLICT_STATES


def _resolve(future: Future, result: str) -> None:
    try:
        future.set_result(result)
    except InvalidStateError:  # already resolved
        pass


_writer: EventWriter | None = None
_loop_writer: LoopWriter | None = None
_writer_lock = threading.Lock()


def start_event_writer() -> EventWriter:
    """Start this process's event writer (idempotent), with the spool in EVENT_SPOOL_DIR; it replays what a
    previous process left there. From now on record_execution goes through it. Called from a running event loop
    (the server's lifespan) on PostgreSQL, that loop writes its events itself, with the thread behind it for
    every failure (usage/recording/loop_writer.py)."""
    global _writer, _loop_writer
    with _writer_lock:
        if _writer is None or not _writer.running:
            _writer = EventWriter(spool=EventSpool(Path(settings.EVENT_SPOOL_DIR))).start()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and connection.vendor == "postgresql" and settings.EVENT_WRITER_ON_LOOP:
            if _loop_writer is None or _loop_writer.loop is not loop or _loop_writer.fallback is not _writer:
                _loop_writer = LoopWriter(_writer, loop)
        return _writer


async def drain_loop_writer() -> None:
    """Write what the event loop's writer holds (the server's shutdown, before ``stop_event_writer``)."""
    loop_writer = _loop_writer
    if loop_writer is not None and loop_writer.loop is asyncio.get_running_loop():
        await loop_writer.drain()


def stop_event_writer(timeout: float = 30.0) -> bool:
    """Store everything queued and stop the writer; record_execution writes directly again. True if nothing was
    lost."""
    global _writer, _loop_writer
    with _writer_lock:
        writer, _writer = _writer, None
        loop_writer, _loop_writer = _loop_writer, None
    if loop_writer is not None and not loop_writer.wait_drained(timeout):
        logger.error("the event loop's writer still held events at shutdown")
    return writer.stop(timeout) if writer is not None else True


def flush_events(timeout: float | None = 30.0) -> bool:
    """Wait until every event recorded so far is stored (for tests and shutdown). Not from the loop's own thread."""
    loop_writer, writer = _loop_writer, _writer
    started = time.monotonic()
    if loop_writer is not None and not loop_writer.wait_drained(timeout):
        return False
    if timeout is not None:
        timeout = max(0.0, timeout - (time.monotonic() - started))
    return writer.flush(timeout) if writer is not None else True


def writer_health() -> dict:
    """The event writer's state, for the health endpoint."""
    writer, loop_writer = _writer, _loop_writer
    if writer is None:
        return {"running": False, "started": False}
    health = {"started": True, **writer.health()}
    if loop_writer is not None:
        loop = loop_writer.health()
        health["events_committed"] += loop["loop_events_committed"]
        health["queued"] += loop["loop_queued"]
    return health


def recording_in_background() -> bool:
    """Whether this process's event writer runs (under a server): then work that follows an answer, such as
    settling budget counters, can run after it, in the server's loop."""
    writer = _writer
    return writer is not None and writer.running


async def record_execution(event: ExecutionEvent, observation=None) -> str:
    """Record one execution's event: through the writer when it runs (group commit), else directly.

    Returns once the event is stored: COMMITTED, or SPOOLED while the database is away (unless
    EVENT_WRITE_BEHIND, or storing takes longer than COMMIT_WAIT_SECONDS: then "queued"). Raises
    EventNotRecorded when the event could not be stored at all (it is in the log). The wait is shielded: a caller
    cancelled while it waits does not take its event with it. ``observation``: what metrics and tracing noted
    while the execution ran (usage/observability/execution.py), None when neither is on.
    """
    execution_recorded(event, observation)  # metrics and the execution's span (usage/observability)
    writer = _writer
    if writer is not None and not writer.healthy:
        writer.ensure_running()
    if writer is None or not writer.running:
        await sync_to_async(_insert)([event])
        return COMMITTED
    loop = asyncio.get_running_loop()
    loop_writer = _loop_writer
    if loop_writer is not None and loop_writer.loop is loop:
        waiter = loop_writer.submit(event)
    else:
        waiter = loop.create_future()
        try:
            writer.submit(event, LoopCompletion(loop, waiter))
        except RuntimeError:  # stopped between the check and the submit
            await sync_to_async(_insert)([event])
            return COMMITTED
    if settings.EVENT_WRITE_BEHIND:
        return "queued"
    # The wait ends with the write, or after COMMIT_WAIT_SECONDS. A caller cancelled meanwhile cancels only its
    # wait: the event stays queued and is written all the same (the writers skip a wait that ended).
    deadline = loop.call_later(COMMIT_WAIT_SECONDS, _stop_waiting, waiter)
    try:
        return await waiter
    finally:
        deadline.cancel()


def _stop_waiting(waiter: asyncio.Future) -> None:
    if not waiter.done():
        logger.warning("answering before the execution event is stored; it stays queued")
        waiter.set_result("queued")
