"""One execution followed from its opening to its recorded event: where metrics and tracing hook in.

``ExecutionRecord`` (connectors/outbound/record.py) calls ``execution_opened`` when it opens an execution's
event, and ``usage.recording.writer.record_execution``, the one door of the event log, calls ``execution_recorded``;
outbound HTTP calls in between report through ``upstream_call``. Spans are built after the fact, off the
execution's path (``Observation``). Nothing here may fail an execution: ``execution_recorded`` logs and swallows its own errors.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

from django.conf import settings

from usage.observability import metrics, tracing

logger = logging.getLogger(__name__)

# Set by the ASGI application for each HTTP request: (arrival, perf_counter; the trace context of its traceparent).
_incoming: ContextVar[tuple[float, object] | None] = ContextVar("connectors_incoming_request", default=None)
# The execution this task is running, for the outbound calls it makes.
_current: ContextVar[Observation | None] = ContextVar("connectors_execution", default=None)


def request_arrived(scope) -> None:
    """Note an HTTP request's arrival (for the added latency) and, with tracing on, its W3C trace context."""
    context = tracing.incoming_context(scope["headers"]) if tracing.enabled() else None
    _incoming.set((time.perf_counter(), context))


class Observation:
    """What one execution's metrics and span need beyond its event.

    With tracing on, its spans are not made while it runs: the times and facts are kept here, and once the event is
    recorded the spans are built with those times by tracing's builder thread (usage/observability/tracing.py), so
    the caller's answer never waits for the OpenTelemetry SDK."""

    __slots__ = ("provider", "started", "upstream_seconds", "traced", "parent", "start_ns", "calls", "response_id",
                 "finish_reasons", "server")

    def __init__(self, provider: str, started: float, traced: bool, parent, start_ns: int):
        self.provider = provider
        self.started = started
        self.upstream_seconds: float | None = None  # None: the provider was never called
        self.traced = traced
        self.parent = parent  # the incoming request's trace context, or None
        self.start_ns = start_ns
        self.calls: list[tracing.HttpCall] = []
        self.response_id = ""
        self.finish_reasons: tuple[str, ...] = ()
        self.server: tuple[str, int] | None = None


def execution_opened(connector) -> Observation | None:
    """Start following an execution: its observation, which its record keeps and hands to ``execution_recorded``
    (None when neither metrics nor tracing is on)."""
    traced = tracing.enabled()
    if not (traced or settings.METRICS_ENABLED):
        _current.set(None)
        return None
    incoming = _incoming.get()
    observation = Observation(connector.provider, incoming[0] if incoming else time.perf_counter(), traced,
                              incoming[1] if incoming else None, time.time_ns())
    _current.set(observation)
    return observation


def note_response(payload) -> None:
    """A provider's chat completion (non-streamed) was parsed: keep its id and finish reasons for the span."""
    observation = _current.get()
    if observation is None or not observation.traced or not isinstance(payload, dict):
        return
    note_response_meta(observation, payload.get("id"), [
        choice.get("finish_reason") for choice in payload.get("choices") or () if isinstance(choice, dict)
    ])


def note_response_meta(observation: Observation | None, response_id, finish_reasons) -> None:
    if observation is None or not observation.traced:
        return
    if isinstance(response_id, str):
        observation.response_id = response_id[:255]
    observation.finish_reasons = tuple(str(reason)[:64] for reason in finish_reasons if isinstance(reason, str))


def current() -> Observation | None:
    return _current.get()


def execution_recorded(event, observation: Observation | None) -> None:
    """The execution's event goes to the event log: count it, hand its spans to the builder."""
    if observation is None:
        return
    try:
        if settings.METRICS_ENABLED:
            total = time.perf_counter() - observation.started
            metrics.observe_execution(event, observation.provider, observation.upstream_seconds, total)
        if observation.traced:
            tracing.build_spans_later(observation, event, time.time_ns())
    except Exception:  # monitoring must never cost an execution its answer or its event
        logger.exception("observing the execution of connector %s failed", event.connector_id)


class UpstreamCall:
    """One outbound exchange of the current execution: its time goes to the execution's upstream time, and with
    tracing on it becomes a child span of the execution's span (built later, with these times)."""

    __slots__ = ("_observation", "_started", "_call")

    def __init__(self, observation: Observation | None, method: str, url: str):
        self._observation = observation
        self._started = time.perf_counter()
        self._call = None
        if observation is not None and observation.traced:
            observation.server = tracing.server_of(url)
            self._call = tracing.HttpCall(method, url, time.time_ns())
            observation.calls.append(self._call)

    def responded(self, status: int) -> None:
        if self._call is not None:
            self._call.status = status

    def end(self, error: BaseException | None = None) -> None:
        """Once: later calls (an exception raised while the exchange closes) change nothing."""
        observation, self._observation = self._observation, None
        if observation is None:
            return
        elapsed = time.perf_counter() - self._started
        observation.upstream_seconds = (observation.upstream_seconds or 0.0) + elapsed
        if self._call is not None:
            self._call.end_ns = time.time_ns()
            if error is not None:
                self._call.error_type = type(error).__name__


def upstream_call(method: str, url: str) -> UpstreamCall:
    return UpstreamCall(_current.get(), method, url)
