"""Running a sub-action: validate the params, call the provider, build Kibana's envelope, record the event.

Every execution opens an ``ExecutionRecord`` (connectors.outbound.record) and ends it once, whatever happens, so
it is written exactly once with the reason its caller was told.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from connectors.caching.kept_under_config import KeptUnderConfig
from connectors.crypto import SecretUnavailable
from connectors.lookup import aget_connector_or_404
from connectors.models import Connector
from connectors.outbound import transport
from connectors.outbound.detached_tasks import complete_despite_hangup
from connectors.outbound.envelopes import (
    config_error_envelope,
    failure_envelope,
    ok_envelope,
    refusal_envelope,
    rejection_envelope,
)
from connectors.outbound.masking import loads_provider_json
from connectors.outbound.providers import build_upstream_request
from connectors.outbound.record import ExecutionRecord
from connectors.outbound.sub_actions import DASHBOARD, ParamsError, SubActionError, call_timeout_for, parse_params
from connectors.outbound.upstream_errors import not_json_message, unexpected_error_message, upstream_error
from connectors.validation import CONFIG_ERROR_PREFIX, kibana_url_error
from usage.governance.enforcement.admission import Refusal
from usage.models import ExecutionEvent, UsageSource
from usage.observability.execution import note_response

DATABASE_UNAVAILABLE = "The connector could not be read: the database is unavailable. Retry later."
INTERNAL_ERROR = "internal error"
# Kibana's invokeAI answer when the provider's first choice has no text (openai.ts, docs/KIBANA.md 4.5).
UNRECOGNIZED_FORMAT = (
    "An error occurred sending your message. \n\nAPI Error: The response from OpenAI was in an unrecognized format."
)
ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

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
    """Validate, send, read the answer; ends ``record`` and returns (envelope, usage).

    The envelope follows Kibana's classification (connectors.outbound.envelopes); the record keeps the same reason.
    """
    connector = record.connector
    connector_id = str(connector.pk)
    try:
        sub_action, sub_params, body = parse_params(connector, params)
        if sub_action == DASHBOARD:
            raise SubActionError("Request validation failed (Error: [subAction]: getDashboard is answered by the "
                                 "connector API's _execute only)", "user")
        if sub_action == "stream" and sub_params.get("stream") is True:
            raise SubActionError("Request validation failed (Error: [stream]: a streamed answer needs the streaming "
                                 "path of _execute)", "user")
        timeout_ms = call_timeout_for(connector, sub_action, sub_params)
    except ParamsError as exc:
        await record.rejected(str(exc))
        return rejection_envelope(connector_id, str(exc)), None
    except SubActionError as exc:
        await record.rejected(str(exc))
        return failure_envelope(connector_id, str(exc), error_source=exc.error_source), None
    config_problem = configuration_error(connector)
    if config_problem:
        await record.rejected(config_problem)
        return config_error_envelope(connector_id, config_problem), None
    try:
        upstream = build_upstream_request(connector, body, stream=False)
    except SecretUnavailable as exc:
        await record.failed(str(exc))
        return failure_envelope(connector_id, str(exc)), None
    refusal = await record.sending(upstream.requested_model, len(upstream.body), upstream.completion_cap)
    if refusal is not None:
        return refusal_envelope(connector_id, refusal), None
    try:
        response = await transport.send(upstream, call_timeout_ms=timeout_ms)
    except transport.OutboundError as exc:
        message = unexpected_error_message(exc.code, str(exc))
        await record.failed(message)
        return failure_envelope(connector_id, message), None
    record.answered(response.status, len(response.body))
    if response.status >= 400:
        error = upstream_error(response.status, response.headers, response.body, connector.api_key, response.reason)
        await record.upstream_error(error)
        return failure_envelope(connector_id, error.message, retry_after=error.retry_after), None
    try:
        payload = loads_provider_json(response.body)
    except ValueError:
        message = not_json_message(response.status, response.headers)
        await record.failed(message)
        return failure_envelope(connector_id, message), None
    usage = extract_usage(payload)
    note_response(payload)  # its id and finish reasons, for the execution's span
    await record.succeeded(usage, response_model=response_model_of(payload))
    if sub_action == "invokeAI":
        return ok_envelope(connector_id, invoke_ai_answer(payload)), usage
    return ok_envelope(connector_id, payload), usage


_url_verdicts = KeptUnderConfig(max_entries=1024)


def configuration_error(connector: Connector) -> str | None:
    """Kibana validates the connector's config again when it runs: an ``apiUrl`` whose host left ``allowedHosts``
    is ``error validating action type config: ...`` (docs/KIBANA.md 6), before anything is sent. The verdict on a
    URL is kept while the networking settings stay the same: it was parsed on every call."""
    url = connector.api_url
    problem = _url_verdicts.get(settings.ACTIONS_CONFIG, url, lambda: kibana_url_error(url))
    return CONFIG_ERROR_PREFIX + problem if problem else None


def invoke_ai_answer(payload: Any) -> dict:
    """invokeAI's ``data`` as Kibana's openai.ts builds it: the first choice's text, trimmed, with the usage; or, when
    there is no text, Kibana's "unrecognized format" sentence with the usage or zero counts."""
    content = _first_message(payload)
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if content:
        return {"message": content, "usage": usage}
    return {"message": UNRECOGNIZED_FORMAT, "usage": usage if isinstance(usage, dict) else dict(ZERO_USAGE)}


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
        upstream = build_upstream_request(connector, body, stream=False, as_kibana=False)
    except SecretUnavailable as exc:
        await record.failed(str(exc))
        result.failure = transport.OutboundError(str(exc))
        return
    result.refusal = await record.sending(upstream.requested_model, len(upstream.body), upstream.completion_cap)
    if result.refusal is not None:
        return
    try:
        # The connector's own timeout, if any; Kibana's 200 s default belongs to its sub-actions (README).
        response = await transport.send(upstream, call_timeout_ms=connector.timeout_ms)
    except transport.OutboundError as exc:
        await record.failed(str(exc))
        result.failure = exc
        return
    record.answered(response.status, len(response.body))
    result.status, result.headers, result.body = response.status, passed_headers(response.headers), response.body
    if response.status >= 400:
        error = upstream_error(response.status, response.headers, response.body, connector.api_key, response.reason)
        result.body = error.body
        await record.upstream_error(error)
        return
    try:
        payload = loads_provider_json(response.body)
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
