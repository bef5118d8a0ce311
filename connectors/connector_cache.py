"""Stored connectors kept in memory per process for the execution path (``Connector.objects.afind``).

Looking a connector up costs a hop to a thread, a pooled connection and a query for every execution: most of
what the gateway adds to a call. A connector found once is kept here until it changes: saving or deleting one
announces it (connectors/invalidation.py), which drops it here at once and, on PostgreSQL, in every other server
process as soon as the change is committed. ``CONNECTOR_CACHE_SECONDS`` bounds how long an entry is trusted in any
case (the backstop when a notice cannot arrive: SQLite with several processes, a listener reconnecting); 0 turns
the cache off. Ids that match no connector are not cached, so a connector created elsewhere is found at once.

The pages that show and edit connectors read the database directly (``Connector.objects.find``).
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from connectors import invalidation

TOPIC = "connector"
MAX_ENTRIES = 10_000

_entries: dict[str, tuple[object, float]] = {}  # id -> (Connector, expires at, on the monotonic clock)
_lock = threading.Lock()


def get(connector_id: str):
    entry = _entries.get(connector_id)
    if entry is None:
        return None
    connector, expires_at = entry
    if expires_at < time.monotonic():
        _entries.pop(connector_id, None)
        return None
    return connector


def put(connector) -> None:
    ttl = settings.CONNECTOR_CACHE_SECONDS
    if ttl <= 0:
        return
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[str(connector.pk)] = (connector, time.monotonic() + ttl)


def forget(connector_id: str) -> None:
    _entries.pop(connector_id, None)


def forget_everything() -> None:
    _entries.clear()


def announce_change(sender, instance, **kwargs) -> None:
    """post_save / post_delete of a Connector: drop it here and in every other process."""
    invalidation.announce(TOPIC, str(instance.pk), using=kwargs.get("using") or "default")


invalidation.register(TOPIC, forget, forget_everything)
