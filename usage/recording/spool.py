"""The event spool: events the database could not take, kept in local files until it can.

When the event writer (usage.recording.writer) cannot reach the database, it appends the batch to this process's spool
file (JSON lines, flushed and fsync'd before the waiting callers are answered) instead of holding it in memory.
The file survives a restart and a ``kill -9``. A replayer thread puts spooled events into the database as soon
as it answers again, and at start-up takes over the files of processes that are gone.

Replays are idempotent: every event carries a unique ``uid`` (usage.models.events), and a replay inserts only the
events whose uid (with its timestamp) is not stored yet, in the same transaction as their rollups. A replay interrupted anywhere
(after the commit, before the file is removed) is therefore simply done again.

Files are named ``events-<pid>-<random>-<n>.jsonl`` in ``EVENT_SPOOL_DIR``. The process that writes a file holds
an exclusive ``flock`` on it from before it has that name; a replayer only takes files it can lock, so two
processes never replay the same file at once, and a file whose writer died (its lock went with it) is taken by the
next process that looks.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from django.contrib.auth import get_user_model
from django.db import DatabaseError, InterfaceError, OperationalError, transaction

from usage.models import ExecutionEvent

REPLAY_CHUNK = 500
EVENT_FIELDS = tuple(field.attname for field in ExecutionEvent._meta.concrete_fields if not field.primary_key)

logger = logging.getLogger(__name__)


def event_as_json(event: ExecutionEvent) -> str:
    """An event's stored fields as one JSON line (also the last-resort log line of an event that is lost)."""
    return json.dumps({name: getattr(event, name) for name in EVENT_FIELDS}, default=str, sort_keys=True)


def event_from_json(line: str | bytes) -> ExecutionEvent:
    fields = json.loads(line)
    fields = {name: value for name, value in fields.items() if name in EVENT_FIELDS}
    fields["timestamp"] = datetime.fromisoformat(fields["timestamp"])
    fields["uid"] = uuid.UUID(fields["uid"]) if fields.get("uid") else uuid.uuid4()
    return ExecutionEvent(**fields)


class EventSpool:
    """This process's spool files in ``directory``: append (fsync'd), then claim files for replay."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._rotations = 0

    @property
    def has_active_file(self) -> bool:
        return self._file is not None

    def pending_files(self) -> int:
        try:
            return sum(1 for _ in self.directory.glob("events-*.jsonl"))
        except OSError:
            return 0

    def append(self, events: list[ExecutionEvent]) -> None:
        """Write ``events`` durably (flushed and fsync'd) to this process's current spool file. OSError if not."""
        data = "".join(event_as_json(event) + "\n" for event in events).encode()
        with self._lock:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"events-{self._name}-{self._rotations}.jsonl"
                # Created under a name no replayer looks at, locked, then renamed into view: a file named
                # events-*.jsonl is always locked by its writer. (Created under its name, another process could
                # claim it between the open and the lock, replay it empty and remove it: this process would then
                # lock and fill a file with no name, whose events no replay would ever find.)
                hidden = self.directory / f".writing-{self._name}-{self._rotations}"
                handle = open(hidden, "a+b")  # noqa: SIM115 - kept open (and locked) until it is claimed
                fcntl.flock(handle, fcntl.LOCK_EX)
                os.rename(hidden, path)
                self._file, self._path = handle, path
                _fsync_directory(self.directory)  # the new file's name must survive a crash too
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Stop appending to the current file and release its lock (a later process or writer replays it)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = self._path = None
                self._rotations += 1

    def claim(self) -> list[tuple[Path, BinaryIO]]:
        """Files to replay, each open and locked by the caller: this process's current file (later events go to
        a new one) and every file no live process holds."""
        claimed: list[tuple[Path, BinaryIO]] = []
        with self._lock:
            if self._file is not None:
                claimed.append((self._path, self._file))
                self._file = self._path = None
                self._rotations += 1
        try:
            paths = sorted(self.directory.glob("events-*.jsonl"))
        except OSError:
            paths = []
        for path in paths:
            if any(path == taken for taken, _handle in claimed):
                continue
            try:
                handle = open(path, "r+b")  # noqa: SIM115 - closed by replay_file or release
            except FileNotFoundError:
                continue  # replayed by another process meanwhile
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()  # a live process writes or replays it
                continue
            if not os.path.exists(path):  # replayed and removed between the open and the lock
                handle.close()
                continue
            claimed.append((path, handle))
        return claimed


def replay_file(path: Path, handle: BinaryIO) -> int:
    """Store the events of a claimed spool file that are not stored yet, then remove it. Returns how many were
    new. Raises OperationalError/InterfaceError when the database is away (the file stays for a later replay)."""
    handle.seek(0)
    events = []
    for number, line in enumerate(handle.read().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(event_from_json(line))
        except (ValueError, KeyError, TypeError):
            # A line cut short by a crash while it was written: its caller had not been answered yet.
            logger.warning("spool file %s line %d is not an event; skipped", path.name, number)
    stored = 0
    for start in range(0, len(events), REPLAY_CHUNK):
        stored += store_once(events[start : start + REPLAY_CHUNK])
    os.unlink(path)
    handle.close()
    return stored


def store_once(events: list[ExecutionEvent]) -> int:
    """Insert the events whose (uid, timestamp) is not stored yet, with their rollups, in one transaction."""
    unique = {event.uid: event for event in events}
    try:
        with transaction.atomic():
            present = set(_stored(list(unique.values())).values_list("uid", flat=True))
            fresh = [event for uid, event in unique.items() if uid not in present]
            _forget_deleted_users(fresh)
            ExecutionEvent.objects.insert_batch(fresh)
        return len(fresh)
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        if len(unique) == 1:
            if not _stored(events[:1]).exists():  # else: replayed elsewhere meanwhile
                logger.error("spooled execution event rejected by the database: %s", event_as_json(events[0]))
            return 0
        values = list(unique.values())
        middle = len(values) // 2
        return store_once(values[:middle]) + store_once(values[middle:])


def _stored(events: list[ExecutionEvent]):
    """The stored events among ``events``: looked up by uid within their connectors and time span, so that on the
    partitioned table (usage/models/partitions.py) only the days they belong to are read (and, on a distributed
    PostgreSQL, only their connectors' shards: docs/SCALING.md)."""
    times = [event.timestamp for event in events]
    return ExecutionEvent.objects.filter(
        uid__in=[event.uid for event in events],
        connector_id__in={event.connector_id for event in events},
        timestamp__gte=min(times),
        timestamp__lte=max(times),
    )


def _forget_deleted_users(events: list[ExecutionEvent]) -> None:
    """A user deleted since the event was spooled: keep the event with its user name, without the link."""
    user_ids = {event.user_id for event in events if event.user_id is not None}
    if not user_ids:
        return
    existing = set(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    for event in events:
        if event.user_id is not None and event.user_id not in existing:
            event.user_id = None


def release(claimed: list[tuple[Path, BinaryIO]]) -> None:
    for _path, handle in claimed:
        try:
            handle.close()
        except OSError:
            pass


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
