"""Throttling of failed authentication: the login page and HTTP Basic on the JSON APIs (README "Throttles").

Each attempt that is going to run the password hasher is counted first, per client address and per username, in
a fixed window of AUTH_THROTTLE_WINDOW_SECONDS shared by all processes (one upserted row per key in the
database); a success takes it back. Once a key has AUTH_THROTTLE_FAILURES_PER_ADDRESS (or ..._PER_USERNAME)
attempts in its window, further attempts are refused with ``Throttled`` until the window ends, without running
the hasher. Counting before checking makes the limit exact under concurrency: N attempts in flight at once can
never run the hasher more than the limit allows.

Credentials already verified and cached (connectors/api/auth.py) never get here, so a locked username does not
stop a script whose credentials are already cached.

The client address is connectors.client_address's, the audit trail's too: the connecting address, or behind a
reverse proxy listed in TRUSTED_PROXIES the address it forwarded (uvicorn's ``--proxy-headers --forwarded-allow-ips
<proxy>`` works as well: it puts the forwarded address in the connecting address). README "Running in production".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import F

from connectors.client_address import client_address as request_client_address
from connectors.throttling.models import AuthFailureWindow

logger = logging.getLogger("connectors.throttling")

_PRUNE_EVERY = 200  # attempts counted by this process between two deletions of expired windows
_counted = 0
_counted_lock = threading.Lock()
# Buckets this process has seen over their limit, until their window ends: a flood of attempts that are refused
# anyway then costs no database write each (on SQLite those would queue behind the event writer).
_locked_until: dict[str, tuple[float, str]] = {}
_MAX_LOCKED = 10_000


class Throttled(Exception):
    """Too many failed attempts: refuse without checking the password. The message is safe to show."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass(frozen=True)
class _Key:
    bucket: str
    limit: int
    what: str  # for messages: "this address" / "this username"


def client_address(request) -> str:
    return request_client_address(request) or "unknown"


def _keys(address: str, username: str) -> list[_Key]:
    digest = hmac.new(settings.SECRET_KEY.encode(), username.casefold().encode("utf-8", "replace"),
                      hashlib.sha256).hexdigest()[:40]
    return [
        _Key(f"address:{address[:64]}", settings.AUTH_THROTTLE_FAILURES_PER_ADDRESS, "this address"),
        _Key(f"username:{digest}", settings.AUTH_THROTTLE_FAILURES_PER_USERNAME, "this username"),
    ]


def _upsert_sql() -> str:
    table = connection.ops.quote_name(AuthFailureWindow._meta.db_table)
    # The SET expressions read the row as it was, so both CASEs see the same expired-or-not window.
    return (
        f"INSERT INTO {table} (bucket, failures, window_started) VALUES (%s, 1, %s) "
        f"ON CONFLICT (bucket) DO UPDATE SET "
        f"failures = CASE WHEN {table}.window_started <= %s THEN 1 ELSE {table}.failures + 1 END, "
        f"window_started = CASE WHEN {table}.window_started <= %s THEN %s ELSE {table}.window_started END "
        f"RETURNING failures, window_started"
    )


def count_attempt(address: str, username: str) -> None:
    """Count an attempt that is about to check a password; Throttled when a limit is already reached.

    Synchronous (database); call it from a thread. A refused attempt is logged, without the password.
    """
    now = time.time()
    keys = _keys(address, username)
    for key in keys:
        until, message_of = _locked_until.get(key.bucket, (0.0, ""))
        if until > now:
            raise Throttled(message_of.format(math.ceil(until - now)), until - now)
    window = settings.AUTH_THROTTLE_WINDOW_SECONDS
    expired_before = now - window
    refusal = None
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute(_upsert_sql(), [key.bucket, now, expired_before, expired_before, now])
            failures, started = cursor.fetchone()
            if failures > key.limit and refusal is None:
                refusal = (key, started + window - now)
    _prune_now_and_then(expired_before)
    if refusal is not None:
        key, remaining = refusal
        retry_after = math.ceil(remaining)
        message_of = f"Too many failed login attempts for {key.what}. Try again in {{}} seconds."
        _remember_lock(key.bucket, now + remaining, message_of)
        logger.warning("authentication throttled: too many failed attempts from %s for username %r (limit %d per "
                       "%d s for %s); refused for %d s", address, username[:150], key.limit, window, key.what,
                       retry_after)
        raise Throttled(message_of.format(retry_after), retry_after)


def _remember_lock(bucket: str, until: float, message_of: str) -> None:
    if len(_locked_until) >= _MAX_LOCKED:
        now = time.time()
        for stale in [name for name, (end, _message) in _locked_until.items() if end <= now]:
            _locked_until.pop(stale, None)
        if len(_locked_until) >= _MAX_LOCKED:
            _locked_until.clear()
    _locked_until[bucket] = (until, message_of)


def forget_locks() -> None:
    """Drop this process's memory of locked buckets (the database keeps the counts); for tests."""
    _locked_until.clear()


def succeeded(address: str, username: str) -> None:
    """The password was right: take this attempt back from the address, and clear the username's count."""
    address_key, username_key = _keys(address, username)
    AuthFailureWindow.objects.filter(bucket=username_key.bucket).delete()
    AuthFailureWindow.objects.filter(bucket=address_key.bucket, failures__gt=0).update(
        failures=F("failures") - 1
    )


def failed(address: str, username: str) -> None:
    """The password was wrong (the attempt stays counted); logged without the password."""
    logger.info("authentication failed from %s for username %r", address, username[:150])


def _prune_now_and_then(expired_before: float) -> None:
    global _counted
    with _counted_lock:
        _counted += 1
        due = _counted % _PRUNE_EVERY == 0
    if due:
        AuthFailureWindow.objects.filter(window_started__lte=expired_before).delete()

