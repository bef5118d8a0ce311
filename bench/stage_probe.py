"""The ASGI application with a CPU-time probe around each stage of an execution, for ``bench.stages`` only.

Loaded instead of ``connectors_admin.asgi:application`` (bench/harness.py ``start_app(app=...)``): it imports the
real application, then wraps the functions that make up each stage of a call (docs/PERFORMANCE.md, "Where a call's
CPU goes") so that the event loop thread's CPU time (``time.thread_time_ns``) between entering and leaving them is
charged to that stage. Stages nest: time spent in an inner stage is charged to it, not to the outer one. Whatever
runs on the loop thread outside every stage (uvicorn, httptools, Django's ASGI handler, the view's glue) is the
rest of the thread's CPU, reported as "ASGI, handler and view glue". Other threads (the event writer, asgiref's
sync thread, the database pool) are read from /proc by bench.stages.

The probe costs about a microsecond per stage boundary (some forty a call): compare the whole-process figure with
``bench.server_cpu``'s, which runs without it. Requests are sequential (one in flight), so the loop thread's CPU
between two boundaries belongs to the one call.

``GET /__stages`` answers the totals since the previous such request, as JSON, and starts new ones.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
import time

from connectors_admin import asgi as real

_clock = time.thread_time_ns
_totals: dict[str, int] = {}
_stack: list[list] = []  # [stage, started_ns]
_loop_thread: int | None = None
_calls = 0


def _enter(stage: str) -> None:
    now = _clock()
    if _stack:
        top = _stack[-1]
        _totals[top[0]] = _totals.get(top[0], 0) + now - top[1]
    _stack.append([stage, now])


def _leave() -> None:
    now = _clock()
    stage, started = _stack.pop()
    _totals[stage] = _totals.get(stage, 0) + now - started
    if _stack:
        _stack[-1][1] = now


def _on_loop_thread() -> bool:
    return threading.get_ident() == _loop_thread


def _wrap(stage: str, function):
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def probed(*args, **kwargs):
            if not _on_loop_thread():
                return await function(*args, **kwargs)
            _enter(stage)
            try:
                return await function(*args, **kwargs)
            finally:
                _leave()
    else:
        @functools.wraps(function)
        def probed(*args, **kwargs):
            if not _on_loop_thread():
                return function(*args, **kwargs)
            _enter(stage)
            try:
                return function(*args, **kwargs)
            finally:
                _leave()
    probed.__probed__ = True
    return probed


def probe_thread(stage: str, owner, name: str) -> None:
    """Wrap ``owner.name``, which runs on a thread of its own (the event writer), so that its CPU goes to ``stage``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def probed(*args, **kwargs):
        started = _clock()
        try:
            return function(*args, **kwargs)
        finally:
            _totals[stage] = _totals.get(stage, 0) + _clock() - started

    setattr(owner, name, probed)


def probe(stage: str, owner, name: str) -> None:
    """Wrap ``owner.name`` (a module's function or a class's method) so that its CPU goes to ``stage``."""
    function = getattr(owner, name, None)
    if function is None or getattr(function, "__probed__", False):
        return
    setattr(owner, name, _wrap(stage, function))


AUTHENTICATION = "authentication and its cache"
LOOKUP = "connector lookup (permission, cache)"
BODY = "body parsing and validation"
ADMISSION = "admission and counters"
BUILD = "building the upstream request"
SEND = "sending the upstream request (the HTTP client)"
READ = "reading the answer (and its JSON)"
MASKING = "masking"
RECORD = "execution record: the event opened and ended"
PRICE = "execution record: its price"
HANDOVER = "execution record: handed to the writer, its commit awaited"
LOOP_WRITE = "execution record: the loop writes the batch (statement, psycopg)"
METRICS = "metrics"
TRACING = "tracing hooks"
AUDIT = "audit context"
RESPONSE = "the response (JSON, security headers, send)"
ROUTING = "routing (URL resolution)"
WRITER = "[event-writer thread] writing the batch"
DETACH = "the execution's own code (its task and shield, envelope)"


# (stage, "module:attribute" or "module:Class.method"); what a version of the code lacks is skipped, so the same
# probe measures an older commit too.
PROBES = [
    (AUTHENTICATION, "connectors.api.endpoint:authenticate_request"),
    (AUDIT, "connectors.audit.context:enter_api"),
    (AUDIT, "connectors.audit.context:note_api_key"),
    (LOOKUP, "connectors.outbound.execution:aget_connector_or_404"),
    (BODY, "connectors.api.kibana:read_json_body"),
    (BODY, "connectors.outbound.execution:parse_params"),
    (BODY, "connectors.outbound.execution:call_timeout_for"),
    (BODY, "connectors.outbound.execution:configuration_error"),
    (ADMISSION, "usage.governance.enforcement.admission:admit"),
    (ADMISSION, "usage.governance.admission:admit"),
    (BUILD, "connectors.outbound.execution:build_upstream_request"),
    (BUILD, "connectors.api.openai_compat:build_upstream_request"),
    (SEND, "connectors.outbound.transport:_send_once"),
    (READ, "connectors.outbound.transport:_read_limited"),
    (READ, "connectors.outbound.execution:extract_usage"),
    (MASKING, "connectors.outbound.transport:masked_headers"),
    (MASKING, "connectors.outbound.masking:StreamMasker.feed"),
    (MASKING, "connectors.outbound.masking:StreamMasker.close"),
    (RECORD, "connectors.outbound.record:ExecutionRecord.__init__"),
    (RECORD, "connectors.outbound.record:ExecutionRecord._end"),
    (PRICE, "usage.governance.pricing.prices:acost_of_event"),
    (PRICE, "usage.governance.pricing:acost_of_event"),
    (HANDOVER, "connectors.outbound.record:record_execution"),
    (LOOP_WRITE, "usage.recording.loop_writer:LoopWriter._write"),
    (METRICS, "usage.observability.metrics:observe_execution"),
    (METRICS, "usage.observability.metrics:set_event_queue_depth"),
    (METRICS, "usage.observability.metrics:count_cache_lookup"),
    (TRACING, "connectors_admin.asgi:request_arrived"),
    (TRACING, "connectors.outbound.record:execution_opened"),
    (TRACING, "connectors.outbound.transport:upstream_call"),
    (TRACING, "usage.observability.execution:UpstreamCall.end"),
    (TRACING, "connectors.outbound.execution:note_response"),
    (TRACING, "usage.recording.writer:execution_recorded"),
    (RESPONSE, "django.core.handlers.asgi:ASGIHandler.send_response"),
    (RESPONSE, "connectors.api.kibana:JsonResponse"),
    (RESPONSE, "connectors.api.kibana:json_response"),
    (RESPONSE, "connectors_admin.asgi:add_content_security_policy"),
    (ROUTING, "django.core.handlers.base:BaseHandler.resolve_request"),
    (ROUTING, "connectors_admin.asgi:CredentialedAPIHandler.resolve_request"),
    (DETACH, "connectors.outbound.execution:complete_despite_hangup"),
    (DETACH, "connectors.outbound.detached_tasks:keep_until_done"),
    (DETACH, "connectors.outbound.record:keep_until_done"),
]


def install() -> None:
    import importlib

    for stage, target in PROBES:
        module_name, _, path = target.partition(":")
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            continue
        *classes, name = path.split(".")
        for class_name in classes:
            owner = getattr(owner, class_name, None)
        if owner is not None and name in vars(owner):
            probe(stage, owner, name)
    for module_name in ("usage.recording.writer", "usage.recording"):
        try:
            writer = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(writer, "EventWriter"):
            probe_thread(WRITER, writer.EventWriter, "_write")
            break


install()


async def application(scope, receive, send):
    global _loop_thread, _calls, _totals
    _loop_thread = threading.get_ident()
    if scope["type"] == "http" and scope["path"] == "/__stages":
        threads = {thread.native_id: thread.name for thread in threading.enumerate()}
        body = json.dumps({"calls": _calls, "stages": _totals, "threads": threads}).encode()
        _totals, _calls = {}, 0
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http":
        _calls += 1
    await real.application(scope, receive, send)
