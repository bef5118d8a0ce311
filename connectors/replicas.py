"""Read replicas: the pages and APIs that only read the event log read from a streaming replica when one is healthy.

``DATABASE_REPLICA_URLS`` names the replicas (settings.py makes them the database aliases in
``settings.DATABASE_REPLICAS``). A view marked ``@reads_from_replica`` (the dashboards, the Logs tab, the exports,
the usage API) reads from one of them; everything else, and everything that writes, uses the primary. Within a
marked request a replica is chosen once, when the first read is routed:

- a replica that cannot be reached is skipped (and not tried again for ``DOWN_RECHECK_SECONDS``);
- one whose replay is more than ``REPLICA_MAX_LAG_SECONDS`` behind is skipped;
- with none left, the primary answers.

Read-your-writes: a request that wrote (or any POST, PUT, PATCH, DELETE) pins the browser to the primary for the
next ``REPLICA_MAX_LAG_SECONDS`` (a cookie), so a page shown right after its own write never reads a replica that
has not replayed it yet; within the request itself, reads after a write go to the primary too.

When the replica read lags more than a minute, pages say so (``replica_notice``, a template context processor).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import random
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.utils.deprecation import MiddlewareMixin

PIN_COOKIE = "primary_reads_until"
DOWN_RECHECK_SECONDS = 5.0
NOTICE_AFTER_SECONDS = 60.0
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Seconds the replica's data is behind the primary. 0 when it has replayed everything it received and is still
# streaming (an idle primary sends nothing new); otherwise the age of the last transaction it replayed (an
# upper bound). Needs the pg_monitor role (or a superuser) to read pg_stat_wal_receiver's status.
LAG_SQL = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
  ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 1e9)
END
"""

_request_state: contextvars.ContextVar[dict | None] = contextvars.ContextVar("replica_request_state", default=None)
_down_until: dict[str, float] = {}


def _state() -> dict:
    state = _request_state.get()
    if state is None:
        state = {"replica": False, "pinned": False, "wrote": False, "alias": None, "lag": None}
        _request_state.set(state)
    return state


def reads_from_replica(view):
    """Mark a view (sync or async) whose reads may go to a replica."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request, *args, **kwargs):
            _state()["replica"] = True
            return await view(request, *args, **kwargs)

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        _state()["replica"] = True
        return view(request, *args, **kwargs)

    return wrapper


def replica_lag(alias: str) -> float | None:
    """The replica's lag in seconds, or None when it cannot be reached."""
    if time.monotonic() < _down_until.get(alias, 0.0):
        return None
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(LAG_SQL)
            return float(cursor.fetchone()[0])
    except (OperationalError, InterfaceError):
        _down_until[alias] = time.monotonic() + DOWN_RECHECK_SECONDS
        try:
            connections[alias].close()
        except (OperationalError, InterfaceError):
            pass
        return None


def choose_replica() -> tuple[str, float] | None:
    """A healthy replica (reachable, lagging no more than REPLICA_MAX_LAG_SECONDS) and its lag, or None."""
    aliases = list(getattr(settings, "DATABASE_REPLICAS", ()))
    random.shuffle(aliases)  # spread the readers over the replicas
    for alias in aliases:
        lag = replica_lag(alias)
        if lag is not None and lag <= settings.REPLICA_MAX_LAG_SECONDS:
            return alias, lag
    return None


class ReplicaRouter:
    """Django database router: reads of a ``@reads_from_replica`` request go to a healthy replica, the rest to
    the primary."""

    def db_for_read(self, model, **hints):
        state = _request_state.get()
        if state is None or not state["replica"] or state["pinned"] or state["wrote"]:
            return None
        if state["alias"] is None:
            chosen = choose_replica()
            state["alias"], state["lag"] = chosen if chosen else ("default", None)
        return state["alias"]

    def db_for_write(self, model, **hints):
        state = _request_state.get()
        if state is not None:
            state["wrote"] = True
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replicas hold the primary's data

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"


class ReadAfterWriteMiddleware(MiddlewareMixin):
    """Starts each request's routing state, and pins a browser that just wrote to the primary for a while."""

    def process_request(self, request):
        state = {"replica": False, "pinned": False, "wrote": False, "alias": None, "lag": None}
        try:
            state["pinned"] = float(request.COOKIES.get(PIN_COOKIE, "0")) > time.time()
        except ValueError:
            pass  # a cookie this app did not set: ignored
        _request_state.set(state)
        request.replica_state = state

    def process_response(self, request, response):
        state = getattr(request, "replica_state", None)
        if state is not None and getattr(settings, "DATABASE_REPLICAS", ()) and (
            state["wrote"] or request.method in UNSAFE_METHODS
        ):
            seconds = max(int(settings.REPLICA_MAX_LAG_SECONDS), 1)
            response.set_cookie(
                PIN_COOKIE, str(int(time.time()) + seconds), max_age=seconds, httponly=True, samesite="Lax",
                secure=request.is_secure(),
            )
        return response


def replica_notice(request) -> dict:
    """Template context: ``replica_lag_notice``, a sentence when the data shown is more than a minute old."""
    state = getattr(request, "replica_state", None) or _request_state.get()
    lag = state and state.get("lag")
    if not lag or lag <= NOTICE_AFTER_SECONDS:
        return {"replica_lag_notice": ""}
    minutes = int(lag // 60)
    age = f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes < 120 else f"{minutes // 60} hours"
    return {"replica_lag_notice": f"The data shown may be up to {age} old: it was read from a database replica."}
