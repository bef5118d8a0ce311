"""Streaming executions: the provider's SSE bytes relayed as they arrive, with the usage accounted on the way.

One ``StreamingExecution`` per request. ``start()`` opens the upstream exchange and reads the response head, so
that a failure before the first byte (bad params, upstream 4xx/5xx, refused connection, timeout, allowedHosts)
is answered like a non-streamed one. After that, ``relay()`` yields each chunk as it comes off the upstream
socket (never the whole response) while an ``SSEUsageTracker`` watches the events for usage, the model, the
generated text and the end marker. Four bounds end a stream whatever the provider sends (its size, its duration, one
event's size, and silence: connectors.outbound.stream_bounds), and what a stream holds in memory is bounded too.

Exactly one event is recorded per execution, when the stream ends, fails, or the caller goes away. A caller who
disconnects is seen as a cancellation (uvicorn reports the disconnect and Django cancels the request task) or as
the relay generator being closed unfinished; both close the upstream response, which closes its connection, and
record outcome failure with ``client disconnected``. When the provider sent no usage (an ``Other`` server, a
stream cut short, a caller who left), the counts are estimated offline (connectors.outbound.tokens) and the event says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import StreamingHttpResponse

from connectors.crypto import SecretUnavailable
from connectors.models import Connector
from connectors.outbound import tokens, transport
from connectors.outbound.detached_tasks import keep_until_done
from connectors.outbound.envelopes import (
    FRAMEWORK,
    config_error_envelope,
    failure_envelope,
    refusal_envelope,
    rejection_envelope,
)
from connectors.outbound.execution import INTERNAL_ERROR, configuration_error, estimated_usage, extract_usage
from connectors.outbound.masking import loads_provider_json
from connectors.outbound.providers import UpstreamRequest, build_upstream_request
from connectors.outbound.record import CLIENT_DISCONNECTED, ExecutionRecord
from connectors.outbound.stream_bounds import EventTooLarge, SSELineReader, StreamBounds, StreamCut
from connectors.outbound.sub_actions import ParamsError, SubActionError, call_timeout_for, parse_params
from connectors.outbound.upstream_errors import UpstreamError, scrub_secret, unexpected_error_message, upstream_error
from usage.governance.enforcement.admission import Refusal
from usage.models import Outcome, UsageSource
from usage.observability.execution import note_response_meta

ERROR_BODY_LIMIT = 64 * 1024  # an upstream error body is read up to this much, to report it

logger = logging.getLogger(__name__)


class SSEUsageTracker:
    """Follows an OpenAI chat completion SSE stream: usage, model, generated text, [DONE], errors.

    Usage is taken from any event with a non-null ``usage``, whatever its ``choices`` holds (OpenAI sends it in a
    last chunk with empty choices, some servers on the last chunk with choices, Azure may lead with a chunk whose
    choices are empty and which carries only ``prompt_filter_results``).

    ``feed()`` returns the bytes to pass on: the chunk itself as it came, or with ``whole_events`` whole events
    at a time, so that the stream can always be ended with an event of its own (the OpenAI-compatible endpoint's
    ``stream_interrupted``) that is not glued to half of one (an SSE client acts only on complete events, so
    holding back a part costs it nothing). With ``drop_usage_only_events`` (which implies whole events), the
    usage-only event that the gateway asked for on the caller's behalf is left out: a caller who did not ask for
    usage does not expect an event without choices.

    Memory stays bounded whatever the provider sends: lines are read by ``SSELineReader`` (linear time, at most
    ``max_event_bytes`` of an unfinished event held, ``EventTooLarge`` past it), and the generated text goes into
    a ``StreamedCompletion``, which the relay counts in pieces instead of keeping it.
    """

    def __init__(self, *, max_event_bytes: int, whole_events: bool = False,
                 drop_usage_only_events: bool = False) -> None:
        self._reader = SSELineReader(max_event_bytes)
        self._data: list[bytes] = []
        self._drop_usage_only = drop_usage_only_events
        self._whole_events = whole_events or drop_usage_only_events
        self._event_bytes = bytearray()  # the current event's raw lines, when passed whole events at a time
        self._passed = bytearray()
        self.usage: dict[str, int] | None = None
        self.model = ""
        self.done = False  # data: [DONE] seen
        self.finish_reason_seen = False
        self.error_message = ""
        self.completion = tokens.StreamedCompletion()
        self.response_id = ""  # for the execution's span (usage/observability)
        self.finish_reasons: list[str] = []

    @property
    def complete(self) -> bool:
        return self.done or self.finish_reason_seen

    def feed(self, chunk: bytes) -> bytes:
        """Read ``chunk``; the bytes to pass on. Raises EventTooLarge (and passes nothing of ``chunk``)."""
        for line in self._reader.lines(chunk):
            if self._whole_events:
                self._event_bytes += line + b"\n"
            self._line(line.rstrip(b"\r"))
        return self._take_passed() if self._whole_events else chunk

    def close(self, *, clean: bool = True) -> bytes:
        """The stream ended; returns bytes still to pass on.

        After a clean end, an event not followed by a blank line still counts. After a failure (a bound, a broken
        or stalled connection) the unfinished event is dropped: it was cut off, and SSE discards it too.
        """
        rest = self._reader.rest()
        if not clean:
            self._data = []
            self._event_bytes.clear()
            return self._take_passed() if self._whole_events else b""
        if rest:
            if self._whole_events:
                self._event_bytes += rest
            self._line(rest.rstrip(b"\r"))
        self._line(b"")
        if self._whole_events:
            self._passed += self._event_bytes
            self._event_bytes.clear()
            return self._take_passed()
        return b""

    def _take_passed(self) -> bytes:
        passed = bytes(self._passed)
        self._passed.clear()
        return passed

    def _line(self, line: bytes) -> None:
        if not line:
            keep = True
            if self._data:
                keep = self._event(b"\n".join(self._data))
                self._data = []
            if self._whole_events:
                if keep or not self._drop_usage_only:
                    self._passed += self._event_bytes
                self._event_bytes.clear()
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)

    def _event(self, data: bytes) -> bool:
        """Take what the event tells; False for a usage-only event (no choices, nothing else to show)."""
        if data.strip() == b"[DONE]":
            self.done = True
            return True
        try:
            payload = loads_provider_json(data)
        except ValueError:
            return True
        if not isinstance(payload, dict):
            return True
        if payload.get("usage") is not None:
            self.usage = extract_usage(payload) or self.usage
        if isinstance(payload.get("model"), str) and payload["model"]:
            self.model = payload["model"][:255]
        if not self.response_id and isinstance(payload.get("id"), str):
            self.response_id = payload["id"][:255]
        error = payload.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            self.error_message = f"The provider reported an error mid-stream: {str(message or error)[:1000]}"
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                self.finish_reason_seen = True
                self.finish_reasons.append(str(choice["finish_reason"]))
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._collect(delta)
        return not (payload.get("usage") is not None and choices == [] and not error
                    and not payload.get("prompt_filter_results"))

    def _collect(self, delta: dict) -> None:
        for key in ("content", "refusal", "reasoning_content"):
            if isinstance(delta.get(key), str):
                self.completion.add(delta[key])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    if isinstance(function.get(key), str):
                        self.completion.add(function[key])
        function_call = delta.get("function_call")
        if isinstance(function_call, dict):
            for key in ("name", "arguments"):
                if isinstance(function_call.get(key), str):
                    self.completion.add(function_call[key])


@dataclass
class StreamFailure:
    """Why a streaming execution ended before its first byte was relayed. ``message`` is safe to show."""

    message: str
    # "params" (top-level params), "sub_action" (unknown or invalid sub-action params), "config" (the URL's host
    # left allowedHosts), "refused" (a budget or a rate limit), "outbound", "upstream_status", "not_sse" or "internal"
    kind: str
    error_source: str = FRAMEWORK
    retry: bool = False
    retry_after: float | None = None
    upstream_status: int | None = None
    upstream_body: bytes = b""
    upstream_headers: Mapping[str, str] = field(default_factory=dict)
    error: Exception | None = None
    upstream: UpstreamError | None = None  # kind "upstream_status": the provider's error, read once
    refusal: Refusal | None = None  # kind "refused": a budget or a rate limit refused the execution


class StreamingExecution:
    """One streamed execution: ``await start(...)``, then either ``failure`` is set or ``relay()`` is served."""

    def __init__(self, connector: Connector, *, user, source: str, sub_action: str, request_bytes: int = 0,
                 openai_caller: bool = False):
        self.connector = connector
        self.record = ExecutionRecord(connector, user=user, source=source, sub_action=sub_action,
                                      request_bytes=request_bytes)
        self.failure: StreamFailure | None = None
        # For callers of the OpenAI-compatible endpoint: a stream that breaks ends with a ``data: {"error": ...}``
        # event, which the OpenAI SDKs raise (Kibana's stream just ends), and the usage event the gateway asked
        # for is not passed on unless the caller asked for it too.
        self._openai_caller = openai_caller
        self._bounds = StreamBounds.from_settings()
        self.tracker = SSEUsageTracker(max_event_bytes=self._bounds.max_event_bytes, whole_events=openai_caller)
        self._deadline = time.monotonic() + self._bounds.max_seconds  # STREAM_MAX_SECONDS counts from the request
        self._upstream: UpstreamRequest | None = None
        self._response: transport.Exchange | None = None
        self._exit_stack = AsyncExitStack()
        self._finished = False
        self._body: AsyncIterator[bytes] | None = None

    @property
    def event(self):
        return self.record.event

    # --- the caller's side ------------------------------------------------------------------------------
    async def start(self, body: dict, *, timeout_ms: float | None = None, as_kibana: bool = True) -> bool:
        """Open the upstream stream. True when ``relay()`` is ready; False when it failed (event recorded).
        ``as_kibana``: shape the body as Kibana's connector does (providers.shape_body)."""
        try:
            self._upstream = build_upstream_request(self.connector, body, stream=True, as_kibana=as_kibana)
        except SecretUnavailable as exc:
            return await self._fail_early(StreamFailure(str(exc), "internal"))
        except Exception:  # anything unforeseen is still answered and still recorded
            logger.exception("shaping the stream request of connector %s failed unexpectedly", self.connector.pk)
            return await self._fail_early(StreamFailure(INTERNAL_ERROR, "internal"))
        refusal = await self.record.sending(self._upstream.requested_model, len(self._upstream.body),
                                            self._upstream.completion_cap)
        if refusal is not None:  # the record has ended as rejected already
            self.failure = StreamFailure(refusal.message, "refused", retry=True, retry_after=refusal.retry_after,
                                         refusal=refusal)
            return False
        # Whatever the provider: a caller of the OpenAI-compatible API gets the usage-only event exactly when it
        # asked for it (README, "OpenAI-compatible endpoint"), whether the gateway asked on its behalf (OpenAI,
        # Azure) or the server sends one unasked (some Other servers).
        if self._openai_caller and not _asks_for_usage(body):
            self.tracker = SSEUsageTracker(max_event_bytes=self._bounds.max_event_bytes, drop_usage_only_events=True)
        # The relay generator does the opening too, so that from here on one place owns the upstream response
        # and its cleanup: if the response is abandoned, closing (or collecting) the generator runs it.
        self._body = self._run(timeout_ms)
        try:
            await anext(self._body)
        except StopAsyncIteration:
            return False
        return True

    async def reject(self, message: str, kind: str = "params", error_source: str = FRAMEWORK) -> None:
        """Refuse the execution before contacting the provider (invalid params or config); records the failure."""
        await self._fail_early(StreamFailure(message, kind, error_source=error_source))

    def relay(self) -> AsyncIterator[bytes]:
        assert self._body is not None and self.failure is None, "relay() needs a successful start()"
        return self._body

    def envelope(self) -> dict[str, Any]:
        """Kibana's error envelope for a stream that failed before it started."""
        failure, connector_id = self.failure, str(self.connector.pk)
        if failure.kind == "params":
            return rejection_envelope(connector_id, failure.message)
        if failure.refusal is not None:
            return refusal_envelope(connector_id, failure.refusal)
        if failure.kind == "config":
            return config_error_envelope(connector_id, failure.message)
        return failure_envelope(connector_id, failure.message, error_source=failure.error_source,
                                retry_after=failure.retry_after)

    # --- the relay ----------------------------------------------------------------------------------------
    async def _run(self, timeout_ms: float | None) -> AsyncIterator[bytes]:
        idle_timeout = transport.effective_timeout(settings.ACTIONS_CONFIG, timeout_ms)
        try:
            self.failure = await self._open(timeout_ms, idle_timeout)
        except (asyncio.CancelledError, GeneratorExit):  # while waiting for the response head: the caller left
            await self._finish(Outcome.FAILURE, CLIENT_DISCONNECTED)
            raise
        except Exception:  # anything unforeseen is still answered and still recorded
            logger.exception("opening the stream of connector %s failed unexpectedly", self.connector.pk)
            self.failure = StreamFailure(INTERNAL_ERROR, "internal")
        if self.failure is not None:
            await self._finish(Outcome.FAILURE, self.failure.message)
            return
        error, relayed_done = "", False
        try:
            yield b""  # opened; start() consumes this
            chunks = self._response.chunks()
            while (chunk := await self._next_chunk(chunks, idle_timeout)) is not None:
                self.record.received(len(chunk))
                if self.event.response_bytes > self._bounds.max_bytes:
                    raise StreamCut.too_large(self._where(), self.event.response_bytes, self._bounds.max_bytes)
                try:
                    passed = self.tracker.feed(chunk)
                except EventTooLarge:
                    raise StreamCut.event_too_large(self._where(), self._bounds.max_event_bytes) from None
                await self._count_completion()
                if passed:
                    yield passed
                    # The caller has [DONE]: it may now hang up (the OpenAI SDK does) before the upstream ends.
                    relayed_done = self.tracker.done
        except StreamCut as exc:
            error = exc.reason
        except (TimeoutError, transport.OutboundError) as exc:
            error = self._mid_stream_error(exc, idle_timeout)
        except (asyncio.CancelledError, GeneratorExit):  # the caller went away mid-stream (or after [DONE])
            if relayed_done and not self.tracker.error_message:
                await self._finish(Outcome.SUCCESS, "")
            else:
                await self._finish(Outcome.FAILURE, CLIENT_DISCONNECTED)
            raise
        except Exception:
            logger.exception("relaying the stream of connector %s failed unexpectedly", self.connector.pk)
            error = INTERNAL_ERROR
        tail = self.tracker.close(clean=not error)
        if not error:
            error = self.tracker.error_message
        if not error and not self.tracker.complete:
            error = "The provider's stream ended before it was complete (no finish_reason and no [DONE])."
        if error and self._openai_caller:
            body = {"error": {"message": error, "type": "api_error", "param": None, "code": "stream_interrupted"}}
            tail += b"data: " + json.dumps(body).encode() + b"\n\n"
        if tail:
            try:
                yield tail
            except (asyncio.CancelledError, GeneratorExit):
                await self._finish(Outcome.FAILURE, error or CLIENT_DISCONNECTED)
                raise
        await self._finish(Outcome.FAILURE if error else Outcome.SUCCESS, error)

    async def _open(self, timeout_ms: float | None, idle_timeout: float) -> StreamFailure | None:
        try:
            self._response = response = await self._exit_stack.enter_async_context(
                transport.open_stream(self._upstream, call_timeout_ms=timeout_ms)
            )
        except transport.OutboundError as exc:
            # An _execute caller reads Kibana's sentence; an OpenAI SDK caller gets this app's (openai_compat.py).
            message = str(exc) if self._openai_caller else unexpected_error_message(exc.code, str(exc))
            return StreamFailure(message, "outbound", retry=exc.retry, error=exc)
        self.record.answered(response.status)
        if response.status < 400 and response.headers.get("content-type", "").startswith("text/event-stream"):
            return None
        try:
            async with asyncio.timeout(idle_timeout):
                body = await self._read_error_body(response)
        except (TimeoutError, transport.OutboundError):
            body = b""
        self.record.answered(response.status, len(body))
        if response.status >= 400:
            error = upstream_error(response.status, response.headers, body, self.connector.api_key,
                                   response.reason)
            return StreamFailure(error.message, "upstream_status", retry=error.retry, retry_after=error.retry_after,
                                 upstream_status=response.status, upstream_body=error.body,
                                 upstream_headers=response.headers, upstream=error)
        body = scrub_secret(body, self.connector.api_key)
        content_type = response.headers.get("content-type", "unknown")
        return StreamFailure(
            f"Status code: {response.status}. Message: the provider answered a streaming request with "
            f"content-type {content_type} instead of text/event-stream",
            "not_sse", upstream_status=response.status, upstream_body=body, upstream_headers=response.headers,
        )

    @staticmethod
    async def _read_error_body(response: transport.Exchange) -> bytes:
        body = b""
        async for chunk in response.chunks():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                return body[:ERROR_BODY_LIMIT]
        return body

    async def _next_chunk(self, chunks: AsyncIterator[bytes], idle_timeout: float) -> bytes | None:
        """The provider's next chunk, None at its end; StreamCut past STREAM_MAX_SECONDS, TimeoutError when idle.

        The wait is bounded by whichever comes first, the idle bound or the stream's deadline; the time the caller
        takes to read counts towards the deadline too, which is checked before each wait.
        """
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise StreamCut.too_long(self._where(), self._bounds.max_seconds)
        try:
            async with asyncio.timeout(min(idle_timeout, remaining)):
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if remaining < idle_timeout:
                raise StreamCut.too_long(self._where(), self._bounds.max_seconds) from None
            raise

    async def _count_completion(self) -> None:
        """Count the generated text in pieces as it arrives, so that it is never held whole (README, "Limits on
        streams"). Answers shorter than a piece are not counted here: they are counted at the end, and only if the
        provider reports no usage, as before."""
        completion = self.tracker.completion
        while completion.piece_ready:
            if self.tracker.usage is not None:
                completion.forget_pending()  # the provider's counts will be recorded; no estimate is needed
                return
            piece = completion.ready_piece()
            model = self.tracker.model or self.event.requested_model
            try:
                count = await asyncio.to_thread(tokens.count_tokens, piece, model)
            except Exception:  # an estimate is a nicety; a failing tokenizer fails the final estimate too
                logger.exception("counting the tokens of a stream of connector %s failed", self.connector.pk)
                completion.give_up()
                return
            completion.counted(piece, count)

    def _where(self) -> str:
        return urlsplit(self._upstream.url).netloc.rpartition("@")[2]

    def _mid_stream_error(self, exc: BaseException, idle_timeout: float) -> str:
        where = self._where()
        if isinstance(exc, TimeoutError):
            return (f"The provider's stream from {where} stalled: no data for {idle_timeout:g} s "
                    "(responseTimeout/timeout).")
        reason = exc.__cause__ or exc  # the client's own error, not OutboundError's sentence about it
        return f"The provider's stream from {where} broke: {reason or type(reason).__name__}."

    # --- the end ----------------------------------------------------------------------------------------
    async def _fail_early(self, failure: StreamFailure) -> bool:
        self.failure = failure
        await self._finish(Outcome.FAILURE, failure.message)
        return False

    async def _finish(self, outcome: str, error_message: str) -> None:
        """Close the upstream exchange and record the event, once, whatever called it and however often."""
        if self._finished:
            return
        self._finished = True
        try:
            await self._exit_stack.aclose()
        except BaseException:  # a broken upstream connection may fail to close cleanly; it is gone either way
            logger.debug("closing the upstream stream of connector %s failed", self.connector.pk, exc_info=True)
        # Shielded: a second cancellation of the request (server shutdown) must not lose the event.
        await asyncio.shield(keep_until_done(self._record(outcome, error_message)))

    async def _record(self, outcome: str, error_message: str) -> None:
        """End the execution's record with what the stream came to."""
        usage, usage_source = self.tracker.usage, UsageSource.PROVIDER
        if usage is None and self._response is not None and self.failure is None:
            # The stream was open: the prompt was sent and some output may have been produced.
            model = self.tracker.model or self.record.event.requested_model
            usage = await estimated_usage(self._upstream.payload, self.tracker.completion, model)
            usage_source = UsageSource.ESTIMATED
        counted = {"usage": usage, "usage_source": usage_source, "response_model": self.tracker.model}
        note_response_meta(self.record.observation, self.tracker.response_id,
                           self.tracker.finish_reasons)
        failure = self.failure
        if outcome == Outcome.SUCCESS:
            await self.record.succeeded(**counted)
        elif error_message == CLIENT_DISCONNECTED:
            await self.record.cancelled(**counted)
        elif failure is not None and failure.kind in ("params", "sub_action", "config"):
            await self.record.rejected(error_message)
        elif failure is not None and failure.upstream is not None:
            await self.record.upstream_error(failure.upstream)
        else:
            await self.record.failed(error_message, **counted)


def _asks_for_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


async def start_execute_stream(connector: Connector, params: Any, *, user, source: str,
                               request_bytes: int = 0) -> StreamingExecution:
    """A streamed ``_execute`` (``stream`` with ``stream: true``, or ``invokeStream``), started."""
    sub_action = params.get("subAction") if isinstance(params, dict) else ""
    stream = StreamingExecution(connector, user=user, source=source, sub_action=str(sub_action or ""),
                                request_bytes=request_bytes)
    try:
        sub_action, sub_params, body = parse_params(connector, params)
        timeout_ms = call_timeout_for(connector, sub_action, sub_params)
    except ParamsError as exc:
        await stream.reject(str(exc))
        return stream
    except SubActionError as exc:
        await stream.reject(str(exc), "sub_action", exc.error_source)
        return stream
    config_problem = configuration_error(connector)
    if config_problem:
        await stream.reject(config_problem, "config")
        return stream
    await stream.start(body, timeout_ms=timeout_ms)
    return stream


def sse_response(chunks: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx and similar proxies must not buffer the stream either
    return response
