"""Optional OpenTelemetry tracing: one span per execution, the outbound HTTP call as its child (README,
OpenTelemetry).

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``); then the
SDK and its OTLP/HTTP exporter are imported on first use in each process, and configured by the standard
``OTEL_*`` variables, which the SDK reads itself. With tracing off nothing of OpenTelemetry is imported and the
execution path only tests a flag. With it on, the execution path only notes times (usage/observability/execution.py);
the spans are built from them afterwards, with those times, by a thread of this module.

The execution span follows the OpenTelemetry GenAI semantic conventions (operation ``chat``): provider, request
and response model, token usage, response id, finish reasons. Its parent is the W3C ``traceparent`` of the
incoming request, when it has one. Attributes never carry a prompt, a completion, a body or a secret: only
names, counts, ids and statuses.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from urllib.parse import urlsplit

from django.conf import settings

# gen_ai.provider.name (and the older gen_ai.system) per connector provider, as the conventions name them; a
# server that only speaks OpenAI's API ("Other") is not OpenAI, hence the conventions' _OTHER.
PROVIDER_NAMES = {"OpenAI": ("openai", "openai"), "Azure OpenAI": ("azure.ai.openai", "az.ai.openai")}
OTHER_PROVIDER = ("_OTHER", "_OTHER")

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_provider = None  # opentelemetry.sdk.trace.TracerProvider, once set up
_tracer = None
_propagator = None


def enabled() -> bool:
    return _tracer is not None or settings.TRACING_ENABLED


def _set_up(span_processor=None):
    """The tracer provider of this process: ``span_processor``, or a batch processor with the OTLP exporter."""
    global _provider, _tracer, _propagator
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        span_processor = BatchSpanProcessor(OTLPSpanExporter())  # endpoint, headers, timeout: from OTEL_*
    provider = TracerProvider(resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}))
    provider.add_span_processor(span_processor)
    _propagator = TraceContextTextMapPropagator()
    _provider, _tracer = provider, provider.get_tracer("connectors-admin")
    return provider


def tracer():
    if _tracer is None:
        with _lock:
            if _tracer is None:
                _set_up()
    return _tracer


def install(span_processor):
    """Trace through ``span_processor`` from now on (tests: the SDK's in-memory exporter). Returns the provider."""
    shutdown()  # outside the lock: it waits for the builder thread, which may need the lock to get a tracer
    with _lock:
        return _set_up(span_processor)


def shutdown() -> None:
    """Build and export what is still queued or buffered, and stop (server shutdown); tracing is set up again on
    next use."""
    global _provider, _tracer
    flush()
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def incoming_context(headers):
    """The OpenTelemetry context of an incoming W3C ``traceparent`` (ASGI header pairs), or None."""
    carrier = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    if "traceparent" not in carrier:
        return None
    tracer()  # sets the propagator up
    context = _propagator.extract(carrier)
    from opentelemetry import trace

    return context if trace.get_current_span(context).get_span_context().is_valid else None


class HttpCall:
    """One outbound HTTP exchange of an execution, as its child span will show it."""

    __slots__ = ("method", "url", "start_ns", "end_ns", "status", "error_type")

    def __init__(self, method: str, url: str, start_ns: int):
        self.method, self.url, self.start_ns = method, url, start_ns
        self.end_ns: int | None = None
        self.status: int | None = None
        self.error_type = ""


# Spans are built by one thread per process from the executions' observations (usage/observability/execution.py,
# ``Observation``: the times and facts noted while they ran), after their callers have their answers: the
# SDK's span objects, attributes and locks then cost the execution path nothing (docs/PERFORMANCE.md,
# OpenTelemetry). ``flush`` waits until everything queued is built (tests, shutdown).
_pending: queue.SimpleQueue = queue.SimpleQueue()
_builder: threading.Thread | None = None
_unbuilt = 0
_built = threading.Condition()


def build_spans_later(observation, event, end_ns: int) -> None:
    """Queue the spans of one execution: its ``Observation``, its ExecutionEvent (read only), when it ended."""
    global _builder, _unbuilt
    with _built:
        _unbuilt += 1
    _pending.put((observation, event, end_ns))
    if _builder is None or not _builder.is_alive():
        with _lock:
            if _builder is None or not _builder.is_alive():
                _builder = threading.Thread(target=_build_forever, name="span-builder", daemon=True)
                _builder.start()


# The builder takes what was queued every BUILD_INTERVAL_SECONDS rather than each execution as it comes: woken
# for every execution, it took the interpreter from the event loop as often, each time in the middle of answering
# someone (docs/PERFORMANCE.md, "Metrics and tracing").
BUILD_INTERVAL_SECONDS = 0.05


def _build_forever() -> None:
    global _unbuilt
    while True:
        batch = [_pending.get()]
        time.sleep(BUILD_INTERVAL_SECONDS)
        while True:
            try:
                batch.append(_pending.get_nowait())
            except queue.Empty:
                break
        for execution in batch:
            try:
                build_spans(*execution)
            except Exception:  # a span that cannot be built must not stop the others
                logger.exception("building the spans of an execution failed")
        with _built:
            _unbuilt -= len(batch)
            _built.notify_all()


def flush(timeout: float = 10) -> bool:
    """Wait until every queued execution's spans are built and handed to the span processor."""
    with _built:
        return _built.wait_for(lambda: _unbuilt == 0, timeout)


def build_spans(observation, event, end_ns: int) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    # Named "chat <model>" (or "chat" when no model was asked for), as the GenAI conventions name it.
    span = tracer().start_span(f"chat {event.requested_model}" if event.requested_model else "chat",
                               context=observation.parent, kind=SpanKind.CLIENT, start_time=observation.start_ns)
    parent = trace.set_span_in_context(span)
    for call in observation.calls:
        _build_http_span(parent, call, end_ns)
    finish_execution_span(span, event, observation.provider, observation.response_id, observation.finish_reasons,
                          observation.server, end_ns)


def finish_execution_span(span, event, provider: str, response_id: str, finish_reasons: tuple[str, ...],
                          server: tuple[str, int] | None, end_time_ns: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    provider_name, system = PROVIDER_NAMES.get(provider, OTHER_PROVIDER)
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name,
        "gen_ai.system": system,
        "connectors.connector.id": event.connector_id,
        "connectors.space.id": event.space_id,
        "connectors.sub_action": event.sub_action,
        "connectors.source": event.source,
        "connectors.usage_source": event.usage_source,
    }
    if event.requested_model:
        attributes["gen_ai.request.model"] = event.requested_model
    if event.response_model:
        attributes["gen_ai.response.model"] = event.response_model
    if response_id:
        attributes["gen_ai.response.id"] = response_id
    if finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = finish_reasons
    if event.usage_source != "none":
        attributes["gen_ai.usage.input_tokens"] = event.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = event.completion_tokens
        if event.cached_tokens is not None:
            attributes["gen_ai.usage.cache_read.input_tokens"] = event.cached_tokens
    if server is not None:
        attributes["server.address"], attributes["server.port"] = server
    if event.outcome != "success":
        # A class of error, never the message (a provider's message could quote the prompt).
        attributes["error.type"] = str(event.upstream_status) if event.upstream_status else "execution_failed"
        span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)
    span.end(end_time=end_time_ns)


def server_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _build_http_span(parent_context, call: HttpCall, execution_end_ns: int) -> None:
    """The child span of one outbound HTTP exchange. Only the URL's scheme, host, port and path are kept: its
    userinfo and query (Azure's api-version, or anything a connector's URL may carry) are not."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    parts = urlsplit(call.url)
    host, port = server_of(call.url)
    attributes = {
        "http.request.method": call.method,
        "server.address": host,
        "server.port": port,
        "url.full": f"{parts.scheme}://{host}:{port}{parts.path}",
    }
    if call.status is not None:
        attributes["http.response.status_code"] = call.status
    span = tracer().start_span(call.method, context=parent_context, kind=SpanKind.CLIENT, attributes=attributes,
                               start_time=call.start_ns)
    if call.error_type or (call.status is not None and call.status >= 400):
        span.set_attribute("error.type", call.error_type or str(call.status))
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=call.end_ns or execution_end_ns)
