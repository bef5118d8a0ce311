"""A value read from the database once per process, kept for some seconds and dropped when it changes.

The price table and the budget and rate-limit rules are both kept this way: the execution path reads them from
memory without I/O, and reads them again (in a worker thread) only when they are stale or a change notice
(connectors.caching.invalidation) dropped them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from connectors.database_threads import in_a_worker_thread

T = TypeVar("T")


class ProcessCache(Generic[T]):
    def __init__(self, load: Callable[[], T], seconds: float):
        self._load = load
        self.seconds = seconds
        self._value: T | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def fresh(self) -> T | None:
        """The value when it needs no reading, else None."""
        value = self._value
        return value if value is not None and time.monotonic() - self._loaded_at < self.seconds else None

    def get(self) -> T:
        """The value, read from the database when it is stale or was dropped (one reader at a time)."""
        value = self.fresh()
        if value is not None:
            return value
        with self._lock:
            value = self.fresh()
            if value is None:
                value, self._value, self._loaded_at = (loaded := self._load()), loaded, time.monotonic()
            return value

    async def aget(self) -> T:
        """``get`` for async code: no I/O unless stale, and then the read happens in a worker thread."""
        value = self.fresh()
        if value is not None:
            return value
        return await in_a_worker_thread(self.get)()

    def forget(self, _key: str = "") -> None:
        self._value = None
