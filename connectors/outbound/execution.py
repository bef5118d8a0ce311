"""Running a sub-action: validate the params, call the provider, build Kibana's envelope, record the event.

Every execution, whatever happens, ends in exactly one ``ExecutionEvent`` written through usage.recording.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.utils import timezone

from connectors.crypto import SecretUnavailable
from connectors.models import CONNECTOR_TYPE_ID, Connector
from connectors.outbound import transport
from connectors.outbound.providers import UpstreamRequest, build_upstream_request
from usage.models import ExecutionEvent, Outcome, UsageSource
from usage.recording import record_event

RUN_SUB_ACTIONS = ("run", "test")
INVOKE_FIELDS = ("model", "temperature", "stop", "tools", "tool_choice", "response_format")
ACTION_ERROR = "an error occurred while running the action"

logger = logging.getLogger(__name__)


class ParamsError(ValueError):
    """Invalid ``params``; the message follows Kibana's ``error validating action params: ...``."""


@dataclass
class Execution:
    """What one execution produced: the envelope for the caller and the event for the log."""

    connector: Connector
    envelope: dict[str, Any]
    event: ExecutionEvent
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return self.event.duration_ms


def ok_envelope(connector_id: str, data: Any) -> dict[str, Any]:
    return {"status": "ok", "connector_id": connector_id, "data": data}


def error_envelope(connector_id: str, message: str, service_message: str | None = None, retry: bool = False,
                   retry_after: float | None = None) -> dict[str, Any]:
    envelope = {"status": "error", "connector_id": connector_id, "message": message, "retry": retry}
    if service_message:
        envelope["service_message"] = service_message
    if retry_after is not None:
        envelope["retry_after"] = retry_after
    return envelope


def call_timeout_ms(sub_params: dict) -> float | None:
    """The per-call ``timeout`` (ms) of subActionParams, or None; ParamsError when it is not a positive number."""
    timeout = sub_params.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ParamsError("error validating action params: [subActionParams.timeout]: expected a positive number of milliseconds")
    return float(timeout)


def parse_body_param(sub_params: dict) -> dict:
    body = sub_params.get("body")
    if not isinstance(body, str):
        raise ParamsError(
            "error validating action params: [subActionParams.body]: expected value of type [string] but got "
            f"[{_type_name(body)}]"
        )
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise ParamsError(f"error validating action params: [subActionParams.body]: body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ParamsError("error validating action params: [subActionParams.body]: body must be a JSON object")
    return parsed


def invoke_body(sub_params: dict) -> dict:
    """The chat body of invokeAI/invokeStream: messages plus the optional fields Kibana passes through."""
    messages = sub_params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ParamsError("error validating action params: [subActionParams.messages]: expected a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ParamsError(
                f"error validating action params: [subActionParams.messages.{index}]: expected an object with a role"
            )
    body = {"messages": messages}
    for name in INVOKE_FIELDS:
        if sub_params.get(name) is not None:
            body[name] = sub_params[name]
    if "temperature" in body and (isinstance(body["temperature"], bool) or not isinstance(body["temperature"], (int, float))):
        raise ParamsError("error validating action params: [subActionParams.temperature]: expected a number")
    return body


def _type_name(value: Any) -> str:
    if value is None:
        return "undefined"
    return {dict: "Object", list: "Array", bool: "boolean", int: "number", float: "number"}.get(type(value), type(value).__name__)


def wants_stream(params: Any) -> bool:
    """Whether ``_execute`` params ask for a streamed answer: ``invokeStream``, or ``stream`` with ``stream: true``."""
    if not isinstance(params, dict):
        return False
    sub_action = params.get("subAction")
    sub_params = params.get("subActionParams")
    return sub_action == "invokeStream" or (
        sub_action == "stream" and isinstance(sub_params, dict) and sub_params.get("stream") is True
    )


def parse_params(connector: Connector, params: Any) -> tuple[str, dict, dict]:
    """(sub-action, subActionParams, chat body) from an ``_execute`` params object, or ParamsError."""
    if not isinstance(params, dict):
        raise ParamsError("error validating action params: [params]: expected an object")
    sub_action = params.get("subAction")
    if not isinstance(sub_action, str) or not sub_action:
        raise ParamsError("error validating action params: [subAction]: expected value of type [string]")
    sub_params = params.get("subActionParams", {})
    if not isinstance(sub_params, dict):
        raise ParamsError("error validating action params: [subActionParams]: expected an object")
    if sub_action in RUN_SUB_ACTIONS or sub_action == "stream":
        body = parse_body_param(sub_params)
        if sub_action == "stream" and not isinstance(sub_params.get("stream", False), bool):
            raise ParamsError(
                "error validating action params: [subActionParams.stream]: expected value of type [boolean] but got "
                f"[{_type_name(sub_params['stream'])}]"
            )
    elif sub_action in ("invokeAI", "invokeStream"):
        body = invoke_body(sub_params)
    else:
        raise ParamsError(
            f'Sub action "{sub_action}" is not registered. Connector id: {connector.pk}. '
            f"Connector name: {connector.name}. Connector type: {CONNECTOR_TYPE_ID}"
        )
    call_timeout_ms(sub_params)
    return sub_action, sub_params, body


def extract_usage(payload: Any) -> dict[str, int] | None:
    """OpenAI's usage object as flat counts, or None when the payload reports none."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    counts = {
        "prompt_tokens": count(usage.get("prompt_tokens")),
        "completion_tokens": count(usage.get("completion_tokens")),
        "total_tokens": count(usage.get("total_tokens")),
    }
    if not counts["total_tokens"]:
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    for details, key, name in (
        ("prompt_tokens_details", "cached_tokens", "cached_tokens"),
        ("completion_tokens_details", "reasoning_tokens", "reasoning_tokens"),
    ):
        if isinstance(usage.get(details), dict) and usage[details].get(key) is not None:
            counts[name] = count(usage[details][key])
    return counts


def provider_error_message(status: int, body: bytes) -> str:
    """Kibana's service_message: ``Status code: 429. Message: API Error: Too Many Requests - <provider's message>``."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    detail = ""
    try:
        payload = json.loads(body)
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            detail = str(error.get("message") or error.get("code") or "")
        elif isinstance(error, str):
            detail = error
        elif isinstance(payload, dict) and payload.get("message"):
            detail = str(payload["message"])
    except ValueError:
        detail = body[:200].decode("utf-8", "replace").strip()
    message = f"Status code: {status}. Message: API Error: {reason}"
    return f"{message} - {detail[:1000]}" if detail else message


def retry_after_seconds(headers) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def new_event(connector: Connector, user, source: str, sub_action: str) -> ExecutionEvent:
    return ExecutionEvent(
        timestamp=timezone.now(),
        connector_id=str(connector.pk),
        connector_name=connector.name,
        connector_is_preconfigured=connector.is_preconfigured,
        user=user if getattr(user, "pk", None) else None,
        user_name=user.get_username() if getattr(user, "pk", None) else "",
        source=source,
        sub_action=str(sub_action)[:32],
        outcome=Outcome.FAILURE,
    )


def apply_usage(event: ExecutionEvent, usage: dict[str, int] | None, source: str = UsageSource.PROVIDER) -> None:
    if not usage:
        event.usage_source = UsageSource.NONE
        return
    event.usage_source = source
    event.prompt_tokens = usage["prompt_tokens"]
    event.completion_tokens = usage["completion_tokens"]
    event.total_tokens = usage["total_tokens"]
    event.cached_tokens = usage.get("cached_tokens")
    event.reasoning_tokens = usage.get("reasoning_tokens")


async def _call_provider(connector: Connector, event: ExecutionEvent, sub_action: str, upstream: UpstreamRequest,
                         timeout_ms: float | None) -> tuple[dict, dict | None]:
    """Send the request; returns (envelope, usage)."""
    connector_id = str(connector.pk)
    try:
        response = await transport.send(upstream, call_timeout_ms=timeout_ms)
    except transport.OutboundError as exc:
        event.error_message = str(exc)
        return error_envelope(connector_id, ACTION_ERROR, str(exc), retry=exc.retry), None
    event.upstream_status = response.status
    event.response_bytes = len(response.body)
    if response.status >= 400:
        retry = response.status == 429 or response.status >= 500
        after = retry_after_seconds(response.headers) if retry else None
        # A provider may echo the key it was sent; it must not reach the caller or the event log.
        service_message = provider_error_message(response.status, scrub_secret(response.body, connector.api_key))
        if after is not None:
            service_message += f" (retry after {after:g} s)"
        event.error_message = service_message
        return error_envelope(connector_id, ACTION_ERROR, service_message, retry=retry, retry_after=after), None
    try:
        payload = json.loads(response.body)
    except ValueError:
        content_type = response.headers.get("content-type", "unknown")
        service_message = (
            f"Status code: {response.status}. Message: the provider's response is not JSON (content-type {content_type})"
        )
        event.error_message = service_message
        return error_envelope(connector_id, ACTION_ERROR, service_message), None
    usage = extract_usage(payload)
    if isinstance(payload, dict) and isinstance(payload.get("model"), str):
        event.response_model = payload["model"][:255]
    event.outcome = Outcome.SUCCESS
    if sub_action == "invokeAI":
        return ok_envelope(connector_id, {"message": _first_message(payload), "usage": payload.get("usage")}), usage
    return ok_envelope(connector_id, payload), usage


def _first_message(payload: Any) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content.strip() if isinstance(content, str) else ""


async def execute(connector: Connector, params: Any, *, user, source: str, request_bytes: int = 0) -> Execution:
    """Run one non-streaming sub-action and record it. Never raises for bad input or upstream failures."""
    started = time.perf_counter()
    sub_action = params.get("subAction") if isinstance(params, dict) else None
    event = new_event(connector, user, source, sub_action if isinstance(sub_action, str) else "")
    event.request_bytes = request_bytes
    usage = None
    try:
        sub_action, sub_params, body = parse_params(connector, params)
        if sub_action == "stream" and sub_params.get("stream") is True:
            raise ParamsError("error validating action params: streaming needs a streaming response; use the stream endpoint")
        upstream = build_upstream_request(connector, body, stream=False)
        event.requested_model = upstream.requested_model
        event.request_bytes = len(upstream.body)
        envelope, usage = await _call_provider(connector, event, sub_action, upstream, call_timeout_ms(sub_params))
    except ParamsError as exc:
        event.error_message = str(exc)
        envelope = error_envelope(str(connector.pk), str(exc), retry=False)
    except SecretUnavailable as exc:
        event.error_message = str(exc)
        envelope = error_envelope(str(connector.pk), ACTION_ERROR, str(exc), retry=False)
    except Exception:  # anything unforeseen is still answered in the envelope and still recorded
        logger.exception("execution of connector %s failed unexpectedly", connector.pk)
        event.error_message = "internal error"
        envelope = error_envelope(str(connector.pk), ACTION_ERROR, "internal error", retry=False)
    apply_usage(event, usage)
    event.duration_ms = (time.perf_counter() - started) * 1000
    await record_event(event)
    return Execution(connector=connector, envelope=envelope, event=event, usage=usage or {})



async def record_rejection(connector: Connector, message: str, *, user, source: str, sub_action: str,
                           request_bytes: int = 0) -> ExecutionEvent:
    """Record an execution refused before it reached the provider (bad body or params): outcome failure."""
    event = new_event(connector, user, source, sub_action)
    event.request_bytes = request_bytes
    event.error_message = message
    apply_usage(event, None)
    await record_event(event)
    return event


def scrub_secret(body: bytes, secret: str) -> bytes:
    """``body`` with every occurrence of ``secret`` masked: a provider may echo the key it was sent."""
    if not secret or len(secret) < 4:
        return body
    return body.replace(secret.encode("utf-8"), b"***")


async def estimated_usage(body: dict, completion_text: str, model: str) -> dict[str, int] | None:
    """Offline token counts (connectors.outbound.tokens), computed in a thread; None if the tokenizer fails."""
    from connectors.outbound import tokens

    try:
        return await asyncio.to_thread(tokens.estimate_usage, body, completion_text, model)
    except Exception:  # an estimate is a nicety; never let it cost the execution or its event
        logger.exception("token estimation failed")
        return None


@dataclass
class PassthroughResult:
    """A non-streamed chat completion relayed as the provider answered it (the OpenAI-compatible endpoint).

    ``failure`` is set when no provider answer can be passed on (connection refused, timeout, allowedHosts, a
    body that is not JSON); otherwise ``status`` and ``body`` are the provider's, with its key masked.
    """

    status: int
    body: bytes
    headers: dict[str, str]
    event: ExecutionEvent
    failure: transport.OutboundError | None = None


# Provider response headers worth passing on: the SDKs read them for back-off and request tracing.
PASSED_HEADERS = ("retry-after", "retry-after-ms", "x-request-id", "apim-request-id")
PASSED_HEADER_PREFIXES = ("x-ratelimit-",)


def passed_headers(headers) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name.lower() in PASSED_HEADERS or name.lower().startswith(PASSED_HEADER_PREFIXES)
    }


async def execute_passthrough(connector: Connector, body: dict, *, user, source: str,
                              request_bytes: int = 0) -> PassthroughResult:
    """Send a chat completion body upstream (not streamed), record the event, return the provider's answer.

    When the provider reports no usage, the counts are estimated with the offline tokenizer.
    """
    from connectors.outbound import tokens

    started = time.perf_counter()
    event = new_event(connector, user, source, "run")
    event.request_bytes = request_bytes
    usage, usage_source = None, UsageSource.PROVIDER
    result = PassthroughResult(status=502, body=b"", headers={}, event=event)
    try:
        upstream = build_upstream_request(connector, body, stream=False)
        event.requested_model = upstream.requested_model
        event.request_bytes = len(upstream.body)
        response = await transport.send(upstream)
        event.upstream_status = response.status
        event.response_bytes = len(response.body)
        result.status, result.headers = response.status, passed_headers(response.headers)
        result.body = response.body
        if response.status >= 400:
            result.body = scrub_secret(response.body, connector.api_key)
            event.error_message = provider_error_message(response.status, result.body)
        else:
            try:
                payload = json.loads(response.body)
            except ValueError:
                content_type = response.headers.get("content-type", "unknown")
                raise transport.OutboundError(
                    f"Status code: {response.status}. Message: the provider's response is not JSON "
                    f"(content-type {content_type})"
                ) from None
            usage = extract_usage(payload)
            if isinstance(payload, dict) and isinstance(payload.get("model"), str):
                event.response_model = payload["model"][:255]
            if usage is None:
                usage_source = UsageSource.ESTIMATED
                usage = await estimated_usage(upstream.payload, tokens.completion_text_of(payload), event.model)
            event.outcome = Outcome.SUCCESS
    except transport.OutboundError as exc:
        event.error_message = str(exc)
        result.failure = exc
    except SecretUnavailable as exc:
        event.error_message = str(exc)
        result.failure = transport.OutboundError(str(exc))
    except Exception:  # still answered and still recorded
        logger.exception("execution of connector %s failed unexpectedly", connector.pk)
        event.error_message = "internal error"
        result.failure = transport.OutboundError("internal error")
    apply_usage(event, usage, usage_source)
    event.duration_ms = (time.perf_counter() - started) * 1000
    await record_event(event)
    return result
