"""Who is making changes, how, and from where: set once per request (middleware, API decorator) or command, read
by ``trail.append``. A contextvar, so concurrent requests never see each other's actor, and it follows the
request into ``sync_to_async`` threads.
"""

import contextvars
from contextlib import contextmanager
from typing import NamedTuple

from connectors.audit.choices import Via


class Actor(NamedTuple):
    """A NamedTuple rather than a dataclass: one is made on every API request, and a tuple is cheapest to build."""

    via: str = Via.SYSTEM
    user: object = None  # a User, or None for "system"; read lazily so the API's authentication can set it later
    request: object = None
    api_key_id: int | None = None
    api_key_name: str = ""
    sign_in_method: str = ""  # "sso" while the SSO callback signs a user in
    name: str = ""  # the actor's name when it is no user of the app ("scim": the identity provider's provisioning)


_current: contextvars.ContextVar[Actor] = contextvars.ContextVar(
    "audit_actor", default=Actor()  # noqa: B039 - Actor is an immutable tuple
)


def current() -> Actor:
    return _current.get()


@contextmanager
def acting(**fields):
    """Changes made inside are attributed to these fields (over the current ones)."""
    token = _current.set(_current.get()._replace(**fields))
    try:
        yield
    finally:
        _current.reset(token)


def set_for_request(request, via: str) -> contextvars.Token:
    return _current.set(Actor(via=via, request=request))


def note_api_key(api_key_id: int, api_key_name: str = "") -> None:
    """Called by the API's authentication when a request is made with an API key (connectors/api/auth.py)."""
    actor = _current.get()  # built field by field: _replace costs several times more, on every API-key request
    _current.set(Actor(actor.via, actor.user, actor.request, api_key_id, api_key_name, actor.sign_in_method,
                       actor.name))


def user_agent(request) -> str:
    return (request.META.get("HTTP_USER_AGENT") or "")[:300]


def enter_api(request) -> None:
    """The JSON API's requests: changes they make are "via API", by the user the authentication finds."""
    _current.set(Actor(Via.API, None, request))
