"""An OpenAI-compatible endpoint per connector, so programs written for the official SDKs use a connector by
changing only their base URL and key: ``/api/openai/<connector-id>/v1/chat/completions`` and ``.../v1/models``.

Callers authenticate with ``Authorization: Bearer <API key>`` (as the SDKs send it) or HTTP Basic, and need
``connectors.execute_connector``. The connector's provider rules apply, so an Azure connector answers here too.
Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``; a provider's own error is passed on
with its status and body (the provider key masked). Every chat completion is recorded with source ``openai_api``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse

from connectors import untrusted_json
from connectors.actions_config import action_type_disabled_message
from connectors.api.endpoint import OPENAI_ERRORS, declared_length, json_endpoint
from connectors.models import Connector
from connectors.outbound import models_list, transport
from connectors.outbound.execution import (
    ConnectorUnavailable,
    connector_to_execute,
    execute_passthrough,
    passed_headers,
)
from connectors.outbound.masking import loads_provider_json
from connectors.outbound.record import refuse_before_start
from connectors.outbound.streaming import StreamFailure, StreamingExecution, sse_response
from connectors.outbound.sub_actions import model_error
from connectors.outbound.upstream_errors import scrub_secret
from connectors.permissions import EXECUTE_CONNECTOR
from usage.models import EventSource

openai_error = OPENAI_ERRORS.response
RETRY_AFTER_OUTAGE_SECONDS = 5  # suggested to callers when the connector cannot be read (database outage)


async def _connector(request, connector_id: str, *, executing: bool) -> Connector:
    """The connector, or ConnectorUnavailable during a database outage (answered 503 by the views)."""
    return await connector_to_execute(request, connector_id, EXECUTE_CONNECTOR, source=EventSource.OPENAI_API,
                                      sub_action="run", request_bytes=declared_length(request), executing=executing)


def _unavailable(exc: ConnectorUnavailable) -> JsonResponse:
    response = openai_error(503, str(exc), error_type="api_error", code="database_unavailable")
    response["Retry-After"] = str(RETRY_AFTER_OUTAGE_SECONDS)
    return response


async def _type_disabled(request, connector: Connector) -> JsonResponse | None:
    """ACTIONS_CONFIG's enabledActionTypes leaves .gen-ai out: refused (and recorded) as on _execute
    (docs/KIBANA.md 3); preconfigured connectors still run, as in Kibana."""
    if connector.is_preconfigured or settings.ACTIONS_CONFIG.is_action_type_enabled(connector.connector_type_id):
        return None
    message = action_type_disabled_message(connector.connector_type_id)
    await refuse_before_start(connector, message, user=request.user, source=EventSource.OPENAI_API,
                              sub_action="run", request_bytes=declared_length(request))
    return openai_error(403, message, error_type="permission_error", code="connector_type_disabled")


@json_endpoint({"POST": EXECUTE_CONNECTOR}, errors=OPENAI_ERRORS)
async def chat_completions(request, connector_id: str):
    try:
        connector = await _connector(request, connector_id, executing=True)
    except ConnectorUnavailable as exc:
        return _unavailable(exc)
    refusal = await _type_disabled(request, connector)
    if refusal is not None:
        return refusal
    try:
        raw = request.body
    except RequestDataTooBig:
        return openai_error(413, "The request body is too large.")
    request_bytes = len(raw)
    body, problem = _chat_body(raw)
    stream = isinstance(body, dict) and body.get("stream") is True
    if problem:
        await refuse_before_start(connector, problem.message, user=request.user, source=EventSource.OPENAI_API,
                                  sub_action="stream" if stream else "run", request_bytes=request_bytes)
        return openai_error(400, problem.message, param=problem.param)
    if stream:
        execution = StreamingExecution(connector, user=request.user, source=EventSource.OPENAI_API, sub_action="stream",
                                       request_bytes=request_bytes, openai_caller=True)
        if await execution.start(body, timeout_ms=connector.timeout_ms, as_kibana=False):
            return sse_response(execution.relay())
        return _stream_failure_response(execution.failure, connector)
    result = await execute_passthrough(connector, body, user=request.user, source=EventSource.OPENAI_API,
                                       request_bytes=request_bytes)
    if result.refusal is not None:
        return _refusal_response(result.refusal)
    if result.failure is not None:
        return _outbound_error(result.failure)
    if result.status >= 400:
        response = _provider_error(result.status, result.body, connector)
    else:
        response = HttpResponse(result.body, status=result.status, content_type="application/json")
    for name, value in result.headers.items():
        response[name] = value
    return response


@json_endpoint({"GET": EXECUTE_CONNECTOR}, errors=OPENAI_ERRORS)
async def list_models(request, connector_id: str):
    try:
        connector = await _connector(request, connector_id, executing=False)
    except ConnectorUnavailable as exc:
        return _unavailable(exc)
    return JsonResponse({"object": "list", "data": await models_list.available_models(connector)})


@dataclass(frozen=True)
class _BadBody:
    message: str
    param: str | None = None


def _chat_body(raw: bytes) -> tuple[dict | None, _BadBody | None]:
    """The parsed request body, or why it earns a 400 (an ``invalid_request_error``)."""
    try:
        body = untrusted_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, _BadBody(f"We could not parse the JSON body of your request: {exc}")
    if not isinstance(body, dict):
        return None, _BadBody("The request body must be a JSON object.")
    model_problem = model_error(body.get("model"))
    if model_problem:
        return body, _BadBody(f"Invalid 'model': {model_problem}.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return body, _BadBody("'messages' is required and must be a non-empty array.", param="messages")
    return body, None


def _outbound_error(error: Exception) -> JsonResponse:
    """No provider answer to pass on: 403 when allowedHosts forbids the host, 504 on timeout, 502 otherwise."""
    if isinstance(error, transport.HostNotAllowed):
        return openai_error(403, str(error), error_type="permission_error", code="host_not_allowed")
    if isinstance(error, transport.UpstreamTimeout):
        return openai_error(504, str(error), code="upstream_timeout")
    return openai_error(502, str(error), code="upstream_error")


def _provider_error(status: int, body: bytes, connector: Connector) -> HttpResponse:
    """The provider's error with its status: its body as sent when OpenAI-shaped, completed or wrapped if not."""
    try:
        payload = loads_provider_json(body)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        if not {"message", "type", "param", "code"} <= set(error):
            # Azure's errors lack type and param, which the SDKs read.
            error.setdefault("message", "")
            error.setdefault("type", "api_error" if status >= 500 else "invalid_request_error")
            error.setdefault("param", None)
            error.setdefault("code", None)
            body = json.dumps(payload).encode()
    else:
        detail = body[:1000].decode("utf-8", "replace").strip()
        message = f"The provider answered with status {status}" + (f": {detail}" if detail else ".")
        body = json.dumps({"error": {"message": message, "type": "api_error", "param": None, "code": None}}).encode()
    return HttpResponse(scrub_secret(body, connector.api_key), status=status, content_type="application/json")


def _refusal_response(refusal) -> JsonResponse:
    """429 with OpenAI's body: ``insufficient_quota`` for a budget (what OpenAI answers when a quota is used up),
    ``rate_limit_exceeded`` for a rate limit; ``Retry-After`` says when the budget or the minute resets."""
    if refusal.kind == "budget":
        response = openai_error(429, refusal.message, error_type="insufficient_quota", code="insufficient_quota")
    else:
        response = openai_error(429, refusal.message, error_type="requests", code="rate_limit_exceeded")
    response["Retry-After"] = str(refusal.retry_after)
    return response


def _stream_failure_response(failure: StreamFailure, connector: Connector) -> HttpResponse:
    if failure.refusal is not None:
        return _refusal_response(failure.refusal)
    if failure.kind == "upstream_status":
        response = _provider_error(failure.upstream_status, failure.upstream_body, connector)
        for name, value in passed_headers(failure.upstream_headers).items():
            response[name] = value
        return response
    if failure.error is not None:
        return _outbound_error(failure.error)
    if failure.kind == "internal":
        return openai_error(500, failure.message, code="internal_error")
    return openai_error(502, failure.message, code="upstream_error")
