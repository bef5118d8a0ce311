"""An OpenAI-compatible endpoint per connector, so programs written for the official SDKs use a connector by
changing only their base URL and key: ``/api/openai/<connector-id>/v1/chat/completions`` and ``.../v1/models``.

Callers authenticate with ``Authorization: Bearer <API key>`` (as the SDKs send it) or HTTP Basic, and need
``connectors.execute_connector``. The connector's provider rules apply, so an Azure connector answers here too.
Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``; a provider's own error is passed on
with its status and body (the provider key masked). Every chat completion is recorded with source ``openai_api``.
"""

from __future__ import annotations

import json
import re
from functools import wraps
from urllib.parse import urlsplit

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connectors.api.auth import NotAuthenticated, authenticate_request
from connectors.models import Connector, Provider
from connectors.outbound import transport
from connectors.outbound.execution import execute_passthrough, passed_headers, record_rejection, scrub_secret
from connectors.outbound.streaming import StreamFailure, StreamingExecution, sse_response
from usage.models import Source

EXECUTE = "connectors.execute_connector"


def openai_error(status: int, message: str, error_type: str, code: str | None = None,
                 param: str | None = None) -> JsonResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JsonResponse(body, status=status)


def openai_endpoint(method: str):
    """Method check, authentication, the execute permission and the connector lookup, answered in OpenAI's shape.

    The view receives the connector instead of its id.
    """

    def decorator(view):
        @csrf_exempt  # token-authenticated only: no session, so no CSRF exposure
        @wraps(view)
        async def wrapper(request, connector_id: str, *args, **kwargs):
            if request.method != method:
                response = openai_error(405, f"Method {request.method} is not allowed here.", "invalid_request_error")
                response["Allow"] = method
                return response
            try:
                request.user = await authenticate_request(request, allow_session=False)
            except NotAuthenticated as exc:
                response = openai_error(401, f"{exc} Send Authorization: Bearer <API key>.", "invalid_request_error",
                                        "invalid_api_key")
                response["WWW-Authenticate"] = 'Bearer realm="connectors-admin"'
                return response
            if not request.user.has_perm(EXECUTE):
                return openai_error(403, f"You need the {EXECUTE} permission to use connectors.", "permission_error",
                                    "insufficient_permissions")
            connector = await Connector.objects.afind(connector_id)
            if connector is None:
                return openai_error(404, f"The connector {connector_id!r} does not exist.", "invalid_request_error",
                                    "connector_not_found")
            return await view(request, connector, *args, **kwargs)

        return wrapper

    return decorator


@openai_endpoint("POST")
async def chat_completions(request, connector: Connector):
    try:
        raw = request.body
    except RequestDataTooBig:
        return openai_error(413, "The request body is too large.", "invalid_request_error")
    request_bytes = len(raw)
    body, problem = _chat_body(raw)
    stream = isinstance(body, dict) and body.get("stream") is True
    if problem:
        await record_rejection(connector, problem[0], user=request.user, source=Source.OPENAI_API,
                               sub_action="stream" if stream else "run", request_bytes=request_bytes)
        return openai_error(400, *problem)
    if stream:
        execution = StreamingExecution(connector, user=request.user, source=Source.OPENAI_API, sub_action="stream",
                                       request_bytes=request_bytes, openai_caller=True)
        if await execution.start(body):
            return sse_response(execution.relay())
        return _stream_failure_response(execution.failure, connector)
    result = await execute_passthrough(connector, body, user=request.user, source=Source.OPENAI_API,
                                       request_bytes=request_bytes)
    if result.failure is not None:
        return _outbound_error(result.failure)
    if result.status >= 400:
        response = _provider_error(result.status, result.body, connector)
    else:
        response = HttpResponse(result.body, status=result.status, content_type="application/json")
    for name, value in result.headers.items():
        response[name] = value
    return response


@openai_endpoint("GET")
async def list_models(request, connector: Connector):
    model = connector.effective_default_model or _azure_deployment(connector.api_url)
    created = int(connector.created_at.timestamp()) if getattr(connector, "created_at", None) else 0
    owner = {Provider.OPENAI: "openai", Provider.AZURE: "azure"}.get(connector.provider, "system")
    data = [{"id": model, "object": "model", "created": created, "owned_by": owner}] if model else []
    return JsonResponse({"object": "list", "data": data})


def _azure_deployment(api_url: str) -> str:
    match = re.search(r"/openai/deployments/([^/]+)/", urlsplit(api_url).path)
    return match.group(1) if match else ""


def _chat_body(raw: bytes) -> tuple[dict | None, tuple[str, str, str | None, str | None] | None]:
    """The parsed request body, or the (message, type, code, param) of a 400."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, (f"We could not parse the JSON body of your request: {exc}", "invalid_request_error", None, None)
    if not isinstance(body, dict):
        return None, ("The request body must be a JSON object.", "invalid_request_error", None, None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return body, ("'messages' is required and must be a non-empty array.", "invalid_request_error", None,
                      "messages")
    return body, None


def _outbound_error(error: Exception) -> JsonResponse:
    """No provider answer to pass on: 403 when allowedHosts forbids the host, 504 on timeout, 502 otherwise."""
    if isinstance(error, transport.HostNotAllowed):
        return openai_error(403, str(error), "permission_error", "host_not_allowed")
    if isinstance(error, transport.UpstreamTimeout):
        return openai_error(504, str(error), "api_error", "upstream_timeout")
    return openai_error(502, str(error), "api_error", "upstream_error")


def _provider_error(status: int, body: bytes, connector: Connector) -> HttpResponse:
    """The provider's error with its status: its body as sent when OpenAI-shaped, completed or wrapped if not."""
    try:
        payload = json.loads(body)
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


def _stream_failure_response(failure: StreamFailure, connector: Connector) -> HttpResponse:
    if failure.kind == "upstream_status":
        response = _provider_error(failure.upstream_status, failure.upstream_body, connector)
        for name, value in passed_headers(failure.upstream_headers).items():
            response[name] = value
        return response
    if failure.error is not None:
        return _outbound_error(failure.error)
    if failure.kind == "internal":
        return openai_error(500, failure.message, "api_error", "internal_error")
    return openai_error(502, failure.message, "api_error", "upstream_error")
