"""``/s/<space id>/...``: every page and API route answers inside a space, the Kibana way.

The prefix is taken off ``path_info`` before URL resolution (``request.path`` keeps it, so a sign-in's ``next``
returns into the space), ``request.space`` and the current space (connectors/spaces/current.py) are set, and the
script prefix becomes ``<prefix>/s/<id>/`` so that ``reverse()`` and ``{% url %}`` link inside the space. Without
the prefix the request is in the default space. A space that does not exist is a 404: Kibana's JSON body under
``/api/``, the ordinary 404 page elsewhere.

The same middleware runs on both stacks: the full one (settings.MIDDLEWARE) and the API's short path
(connectors_admin/asgi.py).
"""

from __future__ import annotations

import re

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from django.urls import get_script_prefix, set_script_prefix

from connectors.caller import current_key_scope
from connectors.spaces import directory
from connectors.spaces.current import current_space_id

SPACE_PREFIX = re.compile(r"^/s/([^/]+)(/.*)?$", re.DOTALL)


def split_space(path: str) -> tuple[str | None, str]:
    """The space id of a path under ``/s/<id>/`` (None otherwise) and the path without the prefix."""
    match = SPACE_PREFIX.match(path)
    if match is None:
        return None, path
    return match.group(1), match.group(2) or "/"


def space_not_found(space_id: str, rest: str):
    if rest.startswith("/api/"):
        message = f"Saved object [space/{space_id}] not found"
        return JsonResponse({"statusCode": 404, "error": "Not Found", "message": message}, status=404)
    raise Http404("No such space.")


class _Entered:
    """What entering a request's space changed, to be undone when the response is ready."""

    def __init__(self, request, space, rest: str | None):
        # The script prefix is read and set only for a URL under /s/<id>/: each is a lookup in an asgiref Local,
        # about 1.5 % of an API call's instructions when the URL names no space (docs/PERFORMANCE.md).
        self.previous_prefix = None
        if rest is not None:
            request.path_info = rest
            self.previous_prefix = get_script_prefix()
            set_script_prefix(f"{self.previous_prefix.rstrip('/')}/s/{space.id}/")
        request.space = space
        self.token = current_space_id.set(space.id)
        # No API key acts in this request until its authentication says so (connectors/api/auth.py).
        self.key_token = current_key_scope.set(None)

    def leave(self) -> None:
        current_key_scope.reset(self.key_token)
        current_space_id.reset(self.token)
        if self.previous_prefix is not None:
            set_script_prefix(self.previous_prefix)


def spaces_unavailable(rest: str):
    """The list of spaces cannot be read (a database outage): 503, as the rest of the app answers an outage."""
    message = "The database is unavailable. Retry later."
    if rest.startswith("/api/"):
        response = JsonResponse({"statusCode": 503, "error": "Service Unavailable", "message": message}, status=503)
    else:
        response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "5"
    return response


def _resolve(request):
    """(space, path without prefix or None, error response or None)."""
    space_id, rest = split_space(request.path_info)
    if space_id is None:
        return directory.default_space(), None, None
    try:
        space = directory.get(space_id)
    except (OperationalError, InterfaceError):
        return None, rest, spaces_unavailable(rest)
    if space is None:
        return None, rest, space_not_found(space_id, rest)
    return space, rest, None


async def _aresolve(request):
    space_id, rest = split_space(request.path_info)
    if space_id is None:
        return directory.default_space(), None, None
    try:
        spaces = await directory.aall_spaces()
    except (OperationalError, InterfaceError):
        return None, rest, spaces_unavailable(rest)
    space = spaces.get(space_id)
    if space is None:
        return None, rest, space_not_found(space_id, rest)
    return space, rest, None


def space_middleware(get_response):
    if iscoroutinefunction(get_response):

        async def middleware(request):
            space, rest, refusal = await _aresolve(request)
            if refusal is not None:
                return refusal
            entered = _Entered(request, space, rest)
            try:
                return await get_response(request)
            finally:
                entered.leave()

        return markcoroutinefunction(middleware)

    def middleware(request):
        space, rest, refusal = _resolve(request)
        if refusal is not None:
            return refusal
        entered = _Entered(request, space, rest)
        try:
            return get_response(request)
        finally:
            entered.leave()

    return middleware


space_middleware.sync_capable = True
space_middleware.async_capable = True
