"""Who is making changes, how, and from where: set once per request (middleware, API decorator) or command, read
by ``recording.record``. A contextvar, so concurrent requests never see each other's actor, and it follows the
request into ``sync_to_async`` threads.
"""

import contextvars
import ipaddress
from contextlib import contextmanager
from dataclasses import dataclass, replace

from django.conf import settings

from connectors.audit.choices import Via


@dataclass(frozen=True)
class Actor:
    via: str = Via.SYSTEM
    user: object = None  # a User, or None for "system"; read lazily so the API's authentication can set it later
    request: object = None
    api_key_id: int | None = None
    api_key_name: str = ""
    sign_in_method: str = ""  # "sso" while the SSO callback signs a user in


_current: contextvars.ContextVar[Actor] = contextvars.ContextVar(
    "audit_actor", default=Actor()  # noqa: B039 - Actor is a frozen dataclass
)


def current() -> Actor:
    return _current.get()


@contextmanager
def acting(**fields):
    """Changes made inside are attributed to these fields (over the current ones)."""
    token = _current.set(replace(_current.get(), **fields))
    try:
        yield
    finally:
        _current.reset(token)


def set_for_request(request, via: str) -> contextvars.Token:
    return _current.set(Actor(via=via, request=request))


def note_api_key(api_key_id: int, api_key_name: str = "") -> None:
    """Called by the API's authentication when a request is made with an API key (connectors/api/auth.py)."""
    _current.set(replace(_current.get(), api_key_id=api_key_id, api_key_name=api_key_name))


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def client_address(request) -> str | None:
    """The client's IP address: REMOTE_ADDR, or, when that is a trusted proxy (TRUSTED_PROXIES), the right-most
    address of X-Forwarded-For that is not one of the trusted proxies (the left part can be forged by the client).
    """
    remote = request.META.get("REMOTE_ADDR") or ""
    if remote and _trusted(remote):
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        for address in reversed(forwarded):
            if not _trusted(address):
                remote = address
                break
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return None


def user_agent(request) -> str:
    return (request.META.get("HTTP_USER_AGENT") or "")[:300]


def enter_api(request) -> None:
    """The JSON API's requests: changes they make are "via API", by the user the authentication finds."""
    _current.set(Actor(via=Via.API, request=request))
