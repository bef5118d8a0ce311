"""Sign-ins and failed sign-ins, with their method: ``password`` (the login page), ``basic`` and ``api_key`` (the
JSON APIs), ``sso`` (OpenID Connect).

The APIs verify a credential once and then remember it (BASIC_AUTH_CACHE_SECONDS, connectors/api/auth.py), so a
sign-in through the API is recorded when the credential is verified, not on every request.

Failed attempts are what an attacker produces by the thousand, so they are recorded cheaply: the first failure
of a (method, client address, username) is recorded at once; further ones within FAILURE_WINDOW seconds are only
counted in memory, and the next record after the window says how many there were
(``changes.attempts_since_last_record``). One INSERT a minute per attacked name and address, at most.
"""

import threading
import time

from asgiref.sync import sync_to_async

from connectors.audit import context, trail
from connectors.client_address import client_address

FAILURE_WINDOW = 60.0
_MAX_TRACKED = 10_000

_lock = threading.Lock()
_recent_failures: dict[tuple, list] = {}  # (method, client, username) -> [window start, attempts not recorded]

# Signing in is to the installation, not to a space, whatever URL it came through: sign-ins are recorded in the
# default space, so that nobody can add records to a space where they hold no role (README "Spaces").
SIGN_IN_SPACE = "default"


def signed_in(user, method: str, *, request=None, api_key_id: int | None = None) -> None:
    actor = context.current()
    actor = context.Actor(
        via=actor.via, user=user, request=request or actor.request, api_key_id=api_key_id or actor.api_key_id,
        sign_in_method=actor.sign_in_method,
    )
    trail.append("user", "sign_in", object_id=user.pk, object_repr=user.get_username(), space_id=SIGN_IN_SPACE,
                     changes={"method": method}, by=actor)


def _due(method: str, username: str, request) -> int | None:
    """None when this failure is only counted; else the number of failures counted since the last record."""
    client = client_address(request) if request is not None else None
    key = (method, client, username)
    now = time.monotonic()
    with _lock:
        entry = _recent_failures.get(key)
        if entry is not None and now - entry[0] < FAILURE_WINDOW:
            entry[1] += 1
            return None
        earlier = entry[1] if entry is not None else 0
        if len(_recent_failures) >= _MAX_TRACKED:
            _recent_failures.clear()
        _recent_failures[key] = [now, 0]
    return earlier


def failed(username: str, method: str, *, request=None) -> None:
    earlier = _due(method, username, request or context.current().request)
    if earlier is not None:
        _write_failure(username, method, request, earlier)


async def afailed(username: str, method: str) -> None:
    """``failed`` for async callers: no thread hop unless a record is due."""
    earlier = _due(method, username, context.current().request)
    if earlier is not None:
        await sync_to_async(_write_failure)(username, method, None, earlier)


def _write_failure(username: str, method: str, request, earlier: int) -> None:
    actor = context.current()
    request = request or actor.request
    changes = {"method": method}
    if earlier:
        changes["attempts_since_last_record"] = earlier
    attempted = context.Actor(via=actor.via, request=request, sign_in_method=actor.sign_in_method)
    trail.append("user", "sign_in_failed", object_id=username[:150], object_repr=username[:300], space_id=SIGN_IN_SPACE,
                     changes=changes, by=attempted)


def api_credential_checked(method: str, username: str, user, *, api_key_id: int | None = None) -> None:
    """The JSON API's one hook (connectors/api/auth.py), called when a Basic credential or API key was verified
    against the database (a cache miss): records the sign-in, or the failure."""
    if user is None:
        failed(username, method)
    else:
        signed_in(user, method, api_key_id=api_key_id)


def forget_failures() -> None:
    with _lock:
        _recent_failures.clear()
