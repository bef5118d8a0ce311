"""Running a sub-action: validate the params, call the provider, build Kibana's envelope, record the event.

Every execution opens an ``ExecutionRecord`` (connectors.outbound.record) and ends it once, whatever happens, so
it is written exactly once with the reason its caller was told.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import InterfaceError, OperationalError

from connectors import untrusted_json
from connectors.crypto import SecretUnavailable
from connectors.lookup import aget_connector_or_404
from connectors.models import CONNECTOR_TYPE_ID, Connector
from connectors.outbound import transport
from connectors.outbound.envelopes import failure_envelope, ok_envelope, refusal_envelope, rejection_envelope
from connectors.outbound.providers import build_upstream_request
from connectors.outbound.record import ExecutionRecord, complete_despite_hangup
from connectors.outbound.upstream_errors import not_json_message, upstream_error
from usage.governance.admission import Refusal
from usage.models import ExecutionEvent, UsageSource
from usage.observability.execution import note_response

DATABASE_UNAVAILABLE = "The connector could not be read: the database is unavailable. Retry later."
RUN_SUB_ACTIONS = ("run", "test")
INVOKE_FIELDS = ("model", "temperature", "stop", "tools", "tool_choice", "response_format")
INTERNAL_ERROR = "internal error"

logger = logging.getLogger(__name__)


class ConnectorUnavailable(Exception):
    """The connector could not be read because the database is unreachable (a cache miss during an outage)."""


async def connector_to_execute(request_or_user, connector_id: str, permission: str, *, source: str,
                               sub_action: str = "", request_bytes: int = 0, executing: bool = True) -> Connector:
    """``connectors.lookup.aget_connector_or_404`` for an execution, with what a database outage needs.

    A connector this process has cached is found without the database. Otherwise, while the database is
    unreachable, ConnectorUnavailable is raised (the callers answer 503 with ``retry``), and an execution attempt
    (``executing``) is recorded all the same, with the connector's name unknown: its event reaches the event log
    through the spool once the database is back (README, "Guarantees").
    """
    try:
        return await aget_connector_or_404(request_or_user, connector_id, permission)
    except (OperationalError, InterfaceError):
        if executing:
            user = getattr(request_or_user, "user", request_or_user)
            stand_in = Connector(pk=connector_id, name="")
            record = ExecutionRecord(stand_in, user=user, source=source, sub_action=sub_action,
                                     request_bytes=request_bytes)
            await record.failed(DATABASE_UNAVAILABLE)
        raise ConnectorUnavailable(DATABASE_UNAVAILABLE) from None


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
        parsed = untrusted_json.loads(body)  # bounded: see connectors/untrusted_json.py
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
    problem = model_error(body.get("model"))
    if problem:
        raise ParamsError(f"error validating action params: [model]: {problem}")
    return sub_action, sub_params, body


def model_error(model: Any) -> str | None:
    """Why a body's ``model`` cannot be used (it is sent on and stored with the event), or None."""
    if model is None:
        return None
    if not isinstance(model, str):
        return f"expected value of type [string] but got [{_type_name(model)}]"
    if len(model) > 255 or any(ord(char) < 32 or ord(char) == 127 for char in model):
        return "a model name is at most 255 characters, without control characters (such as NUL)"
    return None


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


def response_model_of(payload: Any) -> str:
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else ""


def _first_message(payload: Any) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content.strip() if isinstance(content, str) else ""


async def execute(connector: Connector, params: Any, *, user, source: str, request_bytes: int = 0) -> Execution:
    """Run one non-streaming sub-action and record it. Never raises for bad input or upstream failures.

    A caller that hangs up does not stop it: the upstream call and its event complete (complete_despite_hangup).
    """
    return await complete_despite_hangup(_execute_to_end(connector, params, user=user, source=source,
                                                         request_bytes=request_bytes))


async def _execute_to_end(connector: Connector, params: Any, *, user, source: str, request_bytes: int) -> Execution:
    sub_action = params.get("subAction") if isinstance(params, dict) else None
    record = ExecutionRecord(connector, user=user, source=source,
                             sub_action=sub_action if isinstance(sub_action, str) else "", request_bytes=request_bytes)
    try:
        envelope, usage = await _execute(record, params)
    except Exception:  # anything unforeseen is still answered in the envelope and still recorded
        logger.exception("execution of connector %s failed unexpectedly", connector.pk)
        await record.failed(INTERNAL_ERROR)
        envelope, usage = failure_envelope(str(connector.pk), INTERNAL_ERROR), None
    return Execution(connector=connector, envelope=envelope, event=record.event, usage=usage or {})


async def _execute(record: ExecutionRecord, params: Any) -> tuple[dict, dict | None]:
    """Validate, send, read the answer; ends ``record`` and returns (envelope, usage)."""
    connector = record.connector
    connector_id = str(connector.pk)
    try:
        sub_action, sub_params, body = parse_params(connector, params)
        if sub_action == "stream" and sub_params.get("stream") is True:
            raise ParamsError("error validating action params: streaming needs a streaming response; use the stream endpoint")
        timeout_ms = call_timeout_ms(sub_params)
    except ParamsError as exc:
        await record.rejected(str(exc))
        return rejection_envelope(connector_id, str(exc)), None
    try:
        upstream = build_upstream_request(connector, body, stream=False)
    except SecretUnavailable as exc:
        await record.failed(str(exc))
        return failure_envelope(connector_id, str(exc)), None
    refusal = await record.sending(upstream.requested_model, len(upstream.body))
    if refusal is not None:
        return refusal_envelope(connector_id, refusal), None
    try:
        response = await transport.send(upstream, call_timeout_ms=timeout_ms)
    except transport.OutboundError as exc:
        await record.failed(str(exc))
        return failure_envelope(connector_id, str(exc), retry=exc.retry), None
    record.answered(response.status, len(response.body))
    if response.status >= 400:
        error = upstream_error(response.status, response.headers, response.body, connector.api_key)
        await record.upstream_error(error)
        return failure_envelope(connector_id, error.message, retry=error.retry, retry_after=error.retry_after), None
    try:
        payload = json.loads(response.body)
    except ValueError:
        message = not_json_message(response.status, response.headers)
        await record.failed(message)
        return failure_envelope(connector_id, message), None
    usage = extract_usage(payload)
    note_response(payload)  # its id and finish reasons, for the execution's span
    await record.succeeded(usage, response_model=response_model_of(payload))
    if sub_action == "invokeAI":
        return ok_envelope(connector_id, {"message": _first_message(payload), "usage": payload.get("usage")}), usage
    return ok_envelope(connector_id, payload), usage


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
    refusal: Refusal | None = None  # refused by a budget or a rate limit before sending


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

    When the provider reports no usage, the counts are estimated with the offline tokenizer. A caller that hangs
    up does not stop it (complete_despite_hangup).
    """
    return await complete_despite_hangup(_passthrough_to_end(connector, body, user=user, source=source,
                                                             request_bytes=request_bytes))


async def _passthrough_to_end(connector: Connector, body: dict, *, user, source: str,
                              request_bytes: int) -> PassthroughResult:
    record = ExecutionRecord(connector, user=user, source=source, sub_action="run", request_bytes=request_bytes)
    result = PassthroughResult(status=502, body=b"", headers={}, event=record.event)
    try:
        await _passthrough(record, body, result)
    except Exception:  # still answered and still recorded
        logger.exception("execution of connector %s failed unexpectedly", connector.pk)
        await record.failed(INTERNAL_ERROR)
        result.failure = transport.OutboundError(INTERNAL_ERROR)
    return result


async def _passthrough(record: ExecutionRecord, body: dict, result: PassthroughResult) -> None:
    from connectors.outbound import tokens

    connector = record.connector
    try:
        upstream = build_upstream_request(connector, body, stream=False)
    except SecretUnavailable as exc:
        await record.failed(str(exc))
        result.failure = transport.OutboundError(str(exc))
        return
    result.refusal = await record.sending(upstream.requested_model, len(upstream.body))
    if result.refusal is not None:
        return
    try:
        response = await transport.send(upstream)
    except transport.OutboundError as exc:
        await record.failed(str(exc))
        result.failure = exc
        return
    record.answered(response.status, len(response.body))
    result.status, result.headers, result.body = response.status, passed_headers(response.headers), response.body
    if response.status >= 400:
        error = upstream_error(response.status, response.headers, response.body, connector.api_key)
        result.body = error.body
        await record.upstream_error(error)
        return
    try:
        payload = json.loads(response.body)
    except ValueError:
        message = not_json_message(response.status, response.headers)
        await record.failed(message)
        result.failure = transport.OutboundError(message)
        return
    usage, usage_source = extract_usage(payload), UsageSource.PROVIDER
    response_model = response_model_of(payload)
    note_response(payload)  # its id and finish reasons, for the execution's span
    if usage is None:
        usage_source = UsageSource.ESTIMATED
        usage = await estimated_usage(upstream.payload, tokens.completion_text_of(payload),
                                      response_model or upstream.requested_model)
    await record.succeeded(usage, usage_source=usage_source, response_model=response_model)
