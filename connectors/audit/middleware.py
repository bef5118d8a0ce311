"""Tells the audit trail who is behind a browser request (the page or /admin/) and where it comes from.

The JSON API's requests with credentials skip the middleware stack (connectors_admin/asgi.py); the API decorator
sets the same context for them (connectors/api/endpoint.py).
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from connectors.audit import context
from connectors.audit.choices import Via


def _via(request) -> str:
    path = request.path_info
    if path.startswith("/admin/"):
        return Via.ADMIN
    if path.startswith("/api/"):
        return Via.API
    return Via.PAGE


class AuditContextMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = context.set_for_request(request, _via(request))
        try:
            return self.get_response(request)
        finally:
            context._current.reset(token)

    async def __acall__(self, request):
        token = context.set_for_request(request, _via(request))
        try:
            return await self.get_response(request)
        finally:
            context._current.reset(token)
