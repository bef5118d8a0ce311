"""Telling every worker process that a cached thing changed: PostgreSQL LISTEN/NOTIFY.

The execution path keeps connectors and verified credentials in memory per process
(connectors/caching/connector_cache.py, connectors/api/auth.py). A change made in one process (the admin pages, the
API, a management command) must reach the others too. ``announce(topic, key)`` drops the entry in this process at
once and again when the transaction commits, and on PostgreSQL also sends ``NOTIFY connectors_admin_cache,
'<topic>:<key>'`` in the same transaction, so the notice goes out only if the change is committed. Each server
process listens on its own connection (``start_listener``, from the ASGI lifespan) and drops the entry when the
notice arrives.

When the listener has no connection (the database restarted, a network cut) it may miss notices: each handler's
``forget_everything`` runs when it reconnects. Each cache also keeps its own time limit as a backstop, and that
limit is all other processes have on SQLite (where ``make run`` serves from a single process anyway).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

CHANNEL = "connectors_admin_cache"
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)  # then every 5 s

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handler:
    forget: Callable[[str], None]  # drop the entry for one key
    forget_everything: Callable[[], None]  # drop every entry (notices may have been missed)


_handlers: dict[str, Handler] = {}


def register(topic: str, forget: Callable[[str], None], forget_everything: Callable[[], None]) -> None:
    """Route notices about ``topic`` to a cache. ``topic`` is a short word without ':'."""
    _handlers[topic] = Handler(forget, forget_everything)


def dispatch(message: str) -> None:
    topic, _, key = message.partition(":")
    handler = _handlers.get(topic)
    if handler is not None:
        handler.forget(key)


def forget_everything() -> None:
    for handler in _handlers.values():
        handler.forget_everything()


def announce(topic: str, key: str = "", *, using: str | None = None) -> None:
    """Drop ``topic``/``key`` here now and after the commit; on PostgreSQL, in every listening process too."""
    using = using or DEFAULT_DB_ALIAS
    message = f"{topic}:{key}"
    dispatch(message)
    # Again after the commit: a request in this process may have cached the old row between now and then.
    transaction.on_commit(lambda: dispatch(message), using=using)
    if connections[using].vendor == "postgresql":
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, message])


class Listener:
    """A thread with its own PostgreSQL connection, dispatching every notice on CHANNEL."""

    def __init__(self, reconnect_delays: tuple[float, ...] = RECONNECT_DELAYS):
        self.reconnect_delays = reconnect_delays
        self.listening = threading.Event()  # set while LISTEN is in effect
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-invalidation", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        attempt = 0
        while not self._stopping.is_set():
            try:
                params = connection.get_connection_params()
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Whatever changed while nobody listened is unknown: start again from the database.
                    forget_everything()
                    self.listening.set()
                    attempt = 0
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            dispatch(notice.payload)
            except Exception as exc:  # any failure: the caches fall back on their time limits until we are back
                self.listening.clear()
                delay = self.reconnect_delays[min(attempt, len(self.reconnect_delays) - 1)]
                attempt += 1
                logger.warning("cache invalidation listener lost its database connection (%s); retrying in %g s",
                               type(exc).__name__, delay)
                self._stopping.wait(delay)
        self.listening.clear()


_listener: Listener | None = None
_listener_lock = threading.Lock()


def start_listener() -> Listener | None:
    """Start this process's listener (idempotent); None where the database has no LISTEN (SQLite)."""
    global _listener
    if connection.vendor != "postgresql":
        return None
    with _listener_lock:
        if _listener is None:
            _listener = Listener().start()
        return _listener


def stop_listener() -> None:
    global _listener
    with _listener_lock:
        listener, _listener = _listener, None
    if listener is not None:
        listener.stop()
