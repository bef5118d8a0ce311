"""A bounded in-process map whose entries expire: what the credential and connector caches are made of."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

# Told of every lookup of a named cache (name, hit): the metrics register themselves here at start-up
# (usage/apps.py), so the caches know nothing of who counts them.
_lookup_listener: Callable[[str, bool], None] | None = None


def report_lookups_to(listener: Callable[[str, bool], None] | None) -> None:
    global _lookup_listener
    _lookup_listener = listener


class ExpiringCache:
    """Entries live ``ttl`` seconds (0 or less: nothing is kept). Past ``max_entries`` the map starts afresh, which
    bounds memory without bookkeeping on the hot path. Reads take no lock; writes and drops do."""

    def __init__(self, max_entries: int = 10_000, name: str = ""):
        """``name``: lookups are reported under this name (the connectors_cache_requests metric, README)."""
        self.max_entries = max_entries
        self.name = name
        self._entries: dict[Hashable, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] < time.monotonic():
            self._entries.pop(key, None)
            entry = None
        if self.name and _lookup_listener is not None:
            _lookup_listener(self.name, entry is not None)
        return None if entry is None else entry[0]

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (value, time.monotonic() + ttl)

    def drop(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def drop_where(self, condition: Callable[[Any], bool]) -> None:
        """Drop every entry whose value meets ``condition``."""
        with self._lock:
            for key in [key for key, (value, _expires) in self._entries.items() if condition(value)]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
