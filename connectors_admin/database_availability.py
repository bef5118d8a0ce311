"""Whether this process can reach its database, so that an outage costs a caller at most about a second.

Without it, every read or write during an outage waits for a connection as long as the pool lets it, and the
reads of a request run one after the other in Django's one thread for sync code: one stalled read stalls every
caller behind it. Here, a connection is awaited at most ``DATABASE_WAIT_SECONDS`` (the pool's timeout, settings);
when that fails the database is marked down, and for the next ``RETRY_SECONDS`` every new connection is refused at
once (OperationalError, which the APIs answer 503 and the event writer answers by spooling). After that one
attempt at a time goes through: the first that connects marks the database up again. The event writer's replayer
makes such an attempt every second (usage/recording/writer.py), so the database is found again without a call.

Used by the PostgreSQL backend (connectors_admin/postgresql/base.py) for every connection the app opens.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

# How long new connections are refused at once after one could not be had, before one attempt is let through.
RETRY_SECONDS = 1.0


class DatabaseUnavailable(Exception):
    """Raised in place of a connection attempt while the database is known to be down (the backend turns it into
    its OperationalError)."""


class DatabaseAvailability:
    def __init__(self, retry_seconds: float = RETRY_SECONDS):
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self.down = False
        self.last_error = ""
        self._retry_at = 0.0
        self._attempting = False  # while down: one attempt is under way; the others are refused

    def reset(self) -> None:
        """Forget what is known (tests: an outage made by one test must not refuse the next one's connections)."""
        with self._lock:
            self.down, self.last_error, self._retry_at, self._attempting = False, "", 0.0, False

    def before_connecting(self) -> None:
        """Raise DatabaseUnavailable when the database is known down and it is not yet time to try again (or
        another thread is trying); else let this attempt through."""
        with self._lock:
            if not self.down:
                return
            if self._attempting or time.monotonic() < self._retry_at:
                raise DatabaseUnavailable(f"the database is unavailable ({self.last_error})")
            self._attempting = True

    def connected(self) -> None:
        with self._lock:
            self._attempting = False
            if not self.down:
                return
            self.down = False
        logger.warning("the database is reachable again")

    def abandoned(self) -> None:
        with self._lock:
            self._attempting = False

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self._attempting = False
            self._retry_at = time.monotonic() + self.retry_seconds
            self.last_error = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            if self.down:
                return
            self.down = True
        logger.warning("the database is unreachable (%s); connections are refused at once, retried every %g s",
                       self.last_error, self.retry_seconds)


availability = DatabaseAvailability()
