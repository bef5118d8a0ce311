"""The ASGI application served by uvicorn: Django, plus what Django's ASGI handler leaves out.

- The ``lifespan`` protocol (Django's handler refuses it): at start-up the process's event writer is started
  (usage.recording: events are committed in batches, each caller answered after its event's commit), and on
  PostgreSQL the listener that keeps the process's caches in step with changes made by other processes
  (connectors.caching.invalidation); at shutdown, after the server has finished the requests in flight, everything still
  queued is written.
- A short path for the JSON API called with credentials in the ``Authorization`` header (HTTP Basic, ``ApiKey``,
  ``Bearer``), which is how Kibana scripts and SDKs call it. Such a request uses neither the session, nor CSRF,
  nor messages, and the API authenticates it itself; Django's stack of sync middleware would cost it a hop to a
  thread and back for each middleware (about twenty per request, most of the gateway's added latency). It runs
  through Django's own handler (URL resolution, views, exception handling, request signals) with one async
  middleware that sets the security headers the full stack would have set on a JSON response. Browser requests,
  and API calls authenticated by a session, take the full stack.
"""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")

django_application = get_asgi_application()

# Imported once Django is set up: usage.recording imports models.
from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

from connectors.caching.invalidation import start_listener, stop_listener
from connectors.outbound.record import wait_for_detached
from usage.recording import start_event_writer, stop_event_writer

API_PREFIX = "/api/"
SHUTDOWN_EXECUTIONS_WAIT_SECONDS = 30
CREDENTIAL_SCHEMES = (b"basic ", b"apikey ", b"bearer ")


def api_security_headers(get_response):
    """What SecurityMiddleware and XFrameOptionsMiddleware set on a response, for the API's short path."""

    async def middleware(request):
        request.user = AnonymousUser()  # until the API's authentication replaces it
        response = await get_response(request)
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if settings.SECURE_REFERRER_POLICY:
            response.headers.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY)
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            response.headers.setdefault("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY)
        response.headers.setdefault("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY"))
        return response

    return markcoroutinefunction(middleware)


class CredentialedAPIHandler(ASGIHandler):
    """Django's ASGI handler with only ``api_security_headers`` for middleware (see the module docstring)."""

    async def __call__(self, scope, receive, send):
        # Without Django's per-request ThreadSensitiveContext: it starts a thread for each request's sync calls
        # and joins it when the request ends (about 1 ms a request here, 8 ms at p99). These requests' sync calls
        # (the connector lookup, the request signals) go to asgiref's one long-lived thread for sync code instead:
        # still a single thread for all of a request's sync calls, shared with the other such requests. Slow sync
        # work (the password hasher) is kept off that thread (connectors/api/auth.py).
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = convert_exception_to_response(self._get_response_async)
        self._middleware_chain = convert_exception_to_response(api_security_headers(get_response))


api_application = CredentialedAPIHandler()


def takes_short_path(scope) -> bool:
    if not scope["path"].startswith(API_PREFIX):
        return False
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value[:7].lower().startswith(CREDENTIAL_SCHEMES)
    return False


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            start_event_writer()
            start_listener()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # The server has drained its requests. Executions whose callers hung up may still run (they finish
            # their upstream call and record it): wait for them, then store what they all queued.
            await wait_for_detached(timeout=SHUTDOWN_EXECUTIONS_WAIT_SECONDS)
            await asyncio.to_thread(stop_listener)
            flushed = await asyncio.to_thread(stop_event_writer)
            if flushed:
                await send({"type": "lifespan.shutdown.complete"})
            else:
                await send({"type": "lifespan.shutdown.failed", "message": "some execution events were not written; "
                            "they are in the log"})
            return


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and takes_short_path(scope):
        await api_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
