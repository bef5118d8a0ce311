"""The ASGI application served by uvicorn: Django, plus what Django's ASGI handler leaves out.

- The ``lifespan`` protocol (Django's handler refuses it): at start-up the process's event writer is started
  (usage.recording.writer: events are committed in batches, each caller answered after its event's commit), and on
  PostgreSQL the listener that keeps the process's caches in step with changes made by other processes
  (connectors.caching.invalidation), and the event log's keeper (usage.operations.event_log_keeper: partitions
  ahead, the retention); in the background, the budgets' rules, the price table and Redis's counter
  script are read (usage.governance.enforcement.admission.warm_up) and a change of the preconfigured connectors is audited; at
  shutdown, after the server has finished the requests in flight, everything still queued is written.
- The request's arrival time and W3C ``traceparent`` are noted for the metrics and spans of its execution
  (usage/observability).
- A short path for the JSON API called with credentials in the ``Authorization`` header (HTTP Basic, ``ApiKey``,
  ``Bearer``), which is how Kibana scripts and SDKs call it. Such a request uses neither the session, nor CSRF,
  nor messages, and the API authenticates it itself; Django's stack of sync middleware would cost it a hop to a
  thread and back for each middleware (about twenty per request, most of the gateway's added latency). It runs
  through Django's own handler (URL resolution, views, exception handling, ``request_finished`` when a receiver has
  work) with one async middleware that does what the full stack's security middleware would have done for a JSON
  response: the ALLOWED_HOSTS check, the HTTPS redirect and HSTS, the security headers and the
  Content-Security-Policy; and the space of the URL (``/s/<id>/api/...``, connectors/spaces/middleware.py). Browser
  requests, and API calls authenticated by a session, take the full stack.
- A path holding a control character (``/api/actions/connector/%00``) is answered 400 before either stack sees it:
  no URL of this application has one, and PostgreSQL refuses NUL in any text it would be compared with.
"""

import asyncio
import io
import logging
import os
import re
import tempfile
import weakref

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")

django_application = get_asgi_application()

# Imported once Django is set up: usage.recording.writer imports models.
from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.core.handlers.exception import convert_exception_to_response
from django.db import close_old_connections
from django.db.backends.signals import connection_created
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import get_resolver, set_script_prefix
from django.utils.log import log_response

from connectors.audit.preconfigured import record_preconfigured_changes
from connectors.caching.invalidation import start_listener, stop_listener
from connectors.outbound.detached_tasks import wait_for_detached
from connectors.spaces.middleware import space_middleware, split_space
from connectors_admin.csp import add_content_security_policy
from connectors_admin.worker_warm_up import prepare_worker
from usage.governance.alerts import start_alert_sender, stop_alert_sender
from usage.governance.enforcement.admission import warm_up as governance_warm_up
from usage.observability import metrics, tracing
from usage.observability.execution import request_arrived
from usage.operations.event_log_keeper import start_event_log_keeper, stop_event_log_keeper
from usage.recording.writer import drain_loop_writer, start_event_writer, stop_event_writer

API_PREFIX = "/api/"
SPACE_URL_PREFIX = "/s/"
SHUTDOWN_EXECUTIONS_WAIT_SECONDS = 30
CREDENTIAL_SCHEMES = (b"basic ", b"apikey ", b"bearer ")
NO_CONTENT_LENGTH = frozenset((204, 304))
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
RESOLVED_PATHS_KEPT = 4096  # distinct API paths (one per connector and route) whose URL resolution is kept

# Set when a database connection is taken in a thread (the sync thread's lookups on a cache miss, a key's "last
# used"): the short path then closes its response on that thread, which gives the connection back to the pool.
_connection_taken = False


def _note_connection_taken(sender, **kwargs) -> None:
    global _connection_taken
    _connection_taken = True


connection_created.connect(_note_connection_taken, dispatch_uid="asgi_short_path_connection_taken")


def api_security_headers(get_response):
    """What the full stack's SecurityMiddleware, CommonMiddleware (ALLOWED_HOSTS, Content-Length),
    XFrameOptionsMiddleware and the CSP middleware do to a JSON request and response, for the API's short path.

    Django's own middleware methods are called directly: they are plain functions of the request or response
    (no I/O), so calling them costs nothing, while running them as middleware would cost a thread hop each.
    """
    security = SecurityMiddleware(get_response)
    frame_options = XFrameOptionsMiddleware(get_response)

    async def middleware(request):
        request.user = AnonymousUser()  # until the API's authentication replaces it
        request.get_host()  # DisallowedHost for a Host outside ALLOWED_HOSTS: 400, as on the full stack
        response = security.process_request(request) or await get_response(request)  # SECURE_SSL_REDIRECT
        response = security.process_response(request, response)  # HSTS, nosniff, Referrer-Policy, COOP
        response = frame_options.process_response(request, response)
        # As CommonMiddleware sets it, but never on a 204 or a 304 (RFC 9110 8.6: the 204 the API answers a DELETE
        # with has no Content-Length, as Kibana's has none).
        if (not response.streaming and response.status_code not in NO_CONTENT_LENGTH
                and "Content-Length" not in response.headers):
            response.headers["Content-Length"] = str(len(response.content))
        return add_content_security_policy(response)

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

    async def read_body(self, receive):
        """Django's ``read_body``, without a temporary file for a body that came in one message (all of an API
        call's, in practice): it is wrapped as it is. Longer bodies go to Django's spooled file, as before."""
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            return io.BytesIO(message.get("body", b""))
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        body_file.write(message.get("body", b""))
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            body_file.write(message.get("body", b""))
        body_file.seek(0)
        return body_file

    def resolve_request(self, request):
        """Django's URL resolution, kept per path: an API path (a route and a connector id) resolves to the same
        view and arguments every time, and walking the URL patterns' regular expressions is a tenth of a call's
        CPU. Paths that do not resolve (404) are not kept."""
        if hasattr(request, "urlconf"):  # set by a middleware; none runs on this path
            return super().resolve_request(request)
        resolver = get_resolver()
        key = (resolver, request.path_info)
        match = _resolved.get(key)
        if match is None:
            match = resolver.resolve(request.path_info)
            if match.url_name == UNKNOWN_API_PATH:  # any path reaches the JSON 404: junk paths are not kept
                request.resolver_match = match
                return match
            if len(_resolved) >= RESOLVED_PATHS_KEPT:
                _resolved.clear()
            _resolved[key] = match
        request.resolver_match = match
        return match

    async def get_response_async(self, request):
        """Django's, without ``set_urlconf(settings.ROOT_URLCONF)``: no middleware on this path sets a URLconf of its
        own, so the default one is what URL resolution and ``reverse`` use anyway, and ``request_finished`` has no
        URLconf to reset afterwards (``close_response``)."""
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            await sync_to_async(log_response, thread_sensitive=False)(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return response

    async def close_response(self, response, request=None) -> None:
        """Close the response, which sends ``request_finished``. Its receivers give the thread's database connection
        back to the pool, so it runs on the sync thread when a connection may have been taken there since the
        last time, or when the response holds resources other than the request (a stream); otherwise here,
        without the hop (about 0.2 ms of CPU a call). Here, when Django's own receivers are the only ones, they
        have nothing to do, and the response is closed without them (``close_quietly``)."""
        global _connection_taken
        own = [closer for closer in response._resource_closers if getattr(closer, "__self__", None) is not request]
        if _connection_taken or response.streaming or own:
            _connection_taken = False
            await sync_to_async(response.close)()
        elif only_djangos_own_receivers(signals.request_finished) and not hasattr(request, "urlconf"):
            close_quietly(response)
        else:
            response.close()

    async def handle(self, scope, receive, send):
        """Django's ``ASGIHandler.handle`` (5.2) without sending ``request_started``.

        That signal's receivers (``close_old_connections``, ``reset_queries``) are sync, so sending it costs every
        request a hop to the sync thread and back before its view runs (0.2 ms of CPU and latency, measured with
        bench/latency.py). They have nothing to do here: the sync thread gives its database connection back to the
        pool when a request finishes (``request_finished``, sent when the response is closed and a receiver has work:
        ``close_response``), so the next request starts without one. Everything else is Django's: the body, the
        request, the response, and the view cancelled when the client disconnects.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        prefix = get_script_prefix(scope)
        if prefix not in ("", "/"):  # "/" is what get_script_prefix() gives when none was set
            set_script_prefix(prefix)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await self.close_response(error_response)
            return

        # The view runs in this task, and a task of its own listens for the client's disconnect meanwhile and
        # cancels it (Django starts a second task for the view and waits for either: a task and a wait more a call).
        this_task = asyncio.current_task()
        state = {"disconnected": False, "finished": False}

        def on_disconnect(listener: asyncio.Task) -> None:
            if listener.cancelled():
                return
            # RequestAborted: the client went away. (Once the response is complete, uvicorn answers the listener's
            # receive() with a disconnect too: ignored then.)
            if isinstance(listener.exception(), RequestAborted) and not state["finished"]:
                state["disconnected"] = True
                this_task.cancel()

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        listener.add_done_callback(on_disconnect)
        response = None
        try:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                if not state["disconnected"]:
                    raise
                # the client disconnected while the response was being sent
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise  # the server cancels the request: as Django, let it through
            response = None  # the view was cancelled because the client went away
        finally:
            state["finished"] = True
            listener.cancel()
            if state["disconnected"]:
                this_task.uncancel()  # the one cancellation on_disconnect asked for, delivered
        if response is None:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            await self.close_response(response, request)
        body_file.close()

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = convert_exception_to_response(self._get_response_async)
        # The space of the URL (/s/<id>/api/...), as the full stack's space middleware does.
        get_response = convert_exception_to_response(space_middleware(get_response))
        self._middleware_chain = convert_exception_to_response(api_security_headers(get_response))


# What request_finished's receivers in Django do, and why none of it is needed after a short-path request whose
# response is closed on the event loop (``CredentialedAPIHandler.close_response``):
# - close_old_connections: the request's context on the loop holds no database connection (Django refuses
#   synchronous queries there; the event writer's connection is its own, and a connection taken on the sync thread
#   sends the signal there);
# - close_caches: nothing in the project uses Django's cache framework;
# - reset_urlconf: the short path sets no URLconf (``get_response_async``; a request with ``urlconf`` still sends).
# Sending the signal to them anyway cost 5 % of a call's instructions: each asks an asgiref ``Local`` for a value
# the request's context does not have (docs/PERFORMANCE.md, "The settings and the request's end").
DJANGOS_OWN_FINISHED_RECEIVERS = (close_old_connections, close_caches, reset_urlconf)


def only_djangos_own_receivers(signal) -> bool:
    """Whether ``signal``'s receivers are Django's own three (any other receiver, a test's included, gets it sent)."""
    for _key, receiver, _is_async in signal.receivers:
        if isinstance(receiver, weakref.ReferenceType):
            receiver = receiver()
        if receiver not in DJANGOS_OWN_FINISHED_RECEIVERS:
            return False
    return True


def close_quietly(response) -> None:
    """``HttpResponseBase.close`` without sending ``request_finished``."""
    for closer in response._resource_closers:
        try:
            closer()
        except Exception:  # noqa: BLE001, S110 - as Django's close: a closer's failure does not stop the others
            pass
    response._resource_closers.clear()
    response.closed = True


_resolved: dict = {}
UNKNOWN_API_PATH = "api_unknown_path"  # connectors/api/urls.py's catch-all
api_application = CredentialedAPIHandler()


def takes_short_path(scope) -> bool:
    path = scope["path"]
    if not path.startswith(API_PREFIX) and not (path.startswith(SPACE_URL_PREFIX) and split_space(path)[1].startswith(API_PREFIX)):
        return False
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value[:7].lower().startswith(CREDENTIAL_SCHEMES)
    return False


async def _record_preconfigured_changes() -> None:
    """A change of ACTIONS_CONFIG's preconfigured connectors goes into the audit trail once (not once a start)."""

    try:
        await sync_to_async(record_preconfigured_changes, thread_sensitive=False)()
    except Exception:  # noqa: BLE001 - the server still serves; the next start (or migrate) records the change
        logging.getLogger(__name__).exception("audit: could not record the preconfigured connectors")


_startup_work: set[asyncio.Future] = set()


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            metrics.forget_dead_workers()
            prepare_worker()  # before the first request, not during it (connectors_admin/worker_warm_up.py)
            start_event_writer()
            start_listener()
            start_alert_sender()
            start_event_log_keeper()  # partitions ahead and EVENT_RETENTION_DAYS, in a thread of its own
            # Both read the database: in the background, so that a server (re)started while the database is away
            # serves at once (calls are answered and their events spooled) instead of waiting for the pool's timeout.
            for work in (governance_warm_up(), _record_preconfigured_changes()):
                task = asyncio.ensure_future(work)
                _startup_work.add(task)
                task.add_done_callback(_startup_work.discard)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # The server has drained its requests. Executions whose callers hung up may still run (they finish
            # their upstream call and record it): wait for them, then store what they all queued.
            await wait_for_detached(timeout=SHUTDOWN_EXECUTIONS_WAIT_SECONDS)
            for task in list(_startup_work):
                task.cancel()  # still waiting for an absent database: the next start does it again
            await asyncio.to_thread(stop_listener)
            await asyncio.to_thread(stop_alert_sender)
            await asyncio.to_thread(stop_event_log_keeper)
            await drain_loop_writer()
            flushed = await asyncio.to_thread(stop_event_writer)
            metrics.worker_stopping()
            await asyncio.to_thread(tracing.shutdown)  # export the spans still buffered
            if flushed:
                await send({"type": "lifespan.shutdown.complete"})
            else:
                await send({"type": "lifespan.shutdown.failed", "message": "some execution events were not written; "
                            "they are in the log"})
            return


async def bad_path(send) -> None:
    body = b"Bad Request: the path contains a control character.\n"
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] in ("http", "websocket") and _CONTROL_CHARACTER.search(scope["path"]):
        if scope["type"] == "http":
            await bad_path(send)
    elif scope["type"] == "http":
        request_arrived(scope)  # for the added-latency metric and a traceparent to continue (usage/observability)
        if takes_short_path(scope):
            await api_application(scope, receive, send)
        else:
            await django_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
