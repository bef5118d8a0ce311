"""Kibana's connector HTTP API, so Kibana scripts work with only the base URL changed.

The routes, bodies and error messages follow docs/KIBANA.md, 'HTTP routes'.
"""

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse

from connectors.api.endpoint import KIBANA_ERRORS, ApiError, json_endpoint, json_object_body, read_json_body
from connectors.lookup import all_connectors, get_connector_or_404
from connectors.models import CONNECTOR_TYPE_ID, CONNECTOR_TYPE_NAME, Connector, Provider, connector_id_validator
from connectors.outbound.envelopes import failure_envelope
from connectors.outbound.execution import ConnectorUnavailable, connector_to_execute, execute, wants_stream
from connectors.outbound.record import ExecutionRecord
from connectors.outbound.streaming import sse_response, start_execute_stream
from connectors.permissions import ADD_CONNECTOR, CHANGE_CONNECTOR, DELETE_CONNECTOR, EXECUTE_CONNECTOR, VIEW_CONNECTOR
from connectors.preconfigured import preconfigured_connectors
from connectors.validation import api_key_error
from usage.models import EventSource

RETRY_AFTER_OUTAGE_SECONDS = 5  # suggested to callers when the connector cannot be read (database outage)

# Model field -> the name a Kibana client uses, for error messages.
API_FIELD_NAMES = {
    "id": "id",
    "name": "name",
    "provider": "config.apiProvider",
    "api_url": "config.apiUrl",
    "default_model": "config.defaultModel",
    "headers": "config.headers",
    "organization_id": "config.organizationId",
    "project_id": "config.projectId",
    "api_key": "secrets.apiKey",
}
CONFIG_FIELDS = {
    "apiProvider": "provider",
    "apiUrl": "api_url",
    "defaultModel": "default_model",
    "headers": "headers",
    "organizationId": "organization_id",
    "projectId": "project_id",
}

CONNECTOR_TYPE = {
    "id": CONNECTOR_TYPE_ID,
    "name": CONNECTOR_TYPE_NAME,
    "enabled": True,
    "enabled_in_config": True,
    "enabled_in_license": True,
    "minimum_license_required": "enterprise",
    "supported_feature_ids": [
        "generativeAIForSecuritySolution",
        "generativeAIForObservability",
        "generativeAIForSearchPlayground",
    ],
    "is_system_action_type": False,
}


def connector_json(connector: Connector, *, with_references: bool = False) -> dict:
    data = {
        "id": str(connector.pk),
        "name": connector.name,
        "connector_type_id": connector.connector_type_id,
        "config": connector.kibana_config(),
        "is_preconfigured": connector.is_preconfigured,
        "is_deprecated": False,
        "is_missing_secrets": connector.provider != Provider.OTHER and not connector.has_api_key,
        "is_system_action": False,
    }
    if with_references:
        data["referenced_by_count"] = 0
    return data


def apply_payload(connector: Connector, body: dict, *, creating: bool) -> None:
    """Copy a Kibana-shaped body onto ``connector``; ApiError(400) for anything malformed."""
    allowed = {"name", "config", "secrets"} | ({"connector_type_id"} if creating else {"connector_type_id", "id"})
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"[request body.{unknown[0]}]: definition for this key is missing")
    type_id = body.get("connector_type_id", CONNECTOR_TYPE_ID if not creating else None)
    if type_id != CONNECTOR_TYPE_ID:
        if creating:
            raise ApiError(400, f'[request body.connector_type_id]: expected "{CONNECTOR_TYPE_ID}", got {type_id!r}')
        raise ApiError(400, "[request body.connector_type_id]: the connector type cannot be changed")
    if not isinstance(body.get("name"), str):
        raise ApiError(400, "[request body.name]: expected value of type [string]")
    config = body.get("config")
    if not isinstance(config, dict):
        raise ApiError(400, "[request body.config]: expected value of type [object]")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise ApiError(400, f"[request body.config.{unknown[0]}]: definition for this key is missing")
    if config.get("apiProvider") not in Provider.values:
        raise ApiError(
            400, f"[request body.config.apiProvider]: expected one of {', '.join(Provider.values)}"
        )
    for key in ("apiUrl", "defaultModel", "organizationId", "projectId"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise ApiError(400, f"[request body.config.{key}]: expected value of type [string]")
    if not isinstance(config.get("apiUrl"), str):
        raise ApiError(400, "[request body.config.apiUrl]: expected value of type [string]")
    secrets = body.get("secrets", {} if not creating else None)
    if secrets is None:
        secrets = {}
    if not isinstance(secrets, dict) or (set(secrets) - {"apiKey"}):
        raise ApiError(400, "[request body.secrets]: expected an object with only apiKey")
    if secrets.get("apiKey") is not None and not isinstance(secrets["apiKey"], str):
        raise ApiError(400, "[request body.secrets.apiKey]: expected value of type [string]")
    key_problem = api_key_error(secrets["apiKey"]) if secrets.get("apiKey") else None
    if key_problem:
        raise ApiError(400, f"error validating connector: [secrets.apiKey]: {key_problem}")

    connector.name = body["name"]
    for key, field in CONFIG_FIELDS.items():
        value = config.get(key)
        setattr(connector, field, (value if value is not None else ({} if field == "headers" else "")))
    if secrets.get("apiKey"):
        connector.api_key = secrets["apiKey"]
    try:
        connector.full_clean(exclude=["created_by"], validate_unique=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        name = API_FIELD_NAMES.get(field, field)
        raise ApiError(400, f"error validating connector: [{name}]: {' '.join(messages)}") from None


def _create(user, body: dict, connector_id: str | None) -> Connector:
    if connector_id and connector_id in preconfigured_connectors():
        raise ApiError(400, f"This {connector_id} already exists in a preconfigured action.")
    connector = Connector(created_by=user)
    if connector_id:
        connector.pk = connector_id
    apply_payload(connector, body, creating=True)
    try:
        with transaction.atomic():
            connector.save(force_insert=True)
    except IntegrityError:
        raise ApiError(409, f"Saved object [action/{connector_id}] conflict") from None
    return connector


def _update(user, connector_id: str, body: dict) -> Connector:
    connector = get_connector_or_404(user, connector_id, CHANGE_CONNECTOR)
    if connector.is_preconfigured:
        raise ApiError(400, f"Preconfigured action {connector_id} is not allowed to update.")
    apply_payload(connector, body, creating=False)
    connector.save()
    return connector


def _delete(user, connector_id: str) -> None:
    connector = get_connector_or_404(user, connector_id, DELETE_CONNECTOR)
    if connector.is_preconfigured:
        raise ApiError(400, f"Preconfigured action {connector_id} is not allowed to delete.")
    connector.delete()


@json_endpoint({"POST": ADD_CONNECTOR})
async def create_connector(request):
    body = json_object_body(request)
    connector = await sync_to_async(_create)(request.user, body, None)
    return JsonResponse(connector_json(connector))


@json_endpoint(
    {"GET": VIEW_CONNECTOR, "POST": ADD_CONNECTOR, "PUT": CHANGE_CONNECTOR, "DELETE": DELETE_CONNECTOR}
)
async def connector_detail(request, connector_id: str):
    if request.method == "POST":
        if not _valid_id(connector_id):
            raise ApiError(400, "[id]: an id is 1 to 64 letters, digits, '-', '_' or '.'")
        body = json_object_body(request)
        connector = await sync_to_async(_create)(request.user, body, connector_id)
        return JsonResponse(connector_json(connector))
    if request.method == "PUT":
        body = json_object_body(request)
        connector = await sync_to_async(_update)(request.user, connector_id, body)
        return JsonResponse(connector_json(connector))
    if request.method == "DELETE":
        await sync_to_async(_delete)(request.user, connector_id)
        return HttpResponse(status=204)
    connector = await sync_to_async(get_connector_or_404)(request.user, connector_id, VIEW_CONNECTOR)
    return JsonResponse(connector_json(connector))


def _valid_id(connector_id: str) -> bool:
    try:
        connector_id_validator(connector_id)
    except ValidationError:
        return False
    return True


@json_endpoint({"GET": VIEW_CONNECTOR})
async def list_connectors(request):
    connectors = await sync_to_async(all_connectors)()
    return JsonResponse([connector_json(c, with_references=True) for c in connectors], safe=False)


@json_endpoint({"GET": None})
async def connector_types(request):
    return JsonResponse([CONNECTOR_TYPE], safe=False)


@json_endpoint({"POST": EXECUTE_CONNECTOR})
async def execute_connector(request, connector_id: str):
    try:
        connector = await connector_to_execute(request, connector_id, EXECUTE_CONNECTOR, source=EventSource.API,
                                               request_bytes=_declared_length(request))
    except ConnectorUnavailable as exc:
        # The envelope with retry: true, as HTTP 503 so that clients and proxies see a temporary failure.
        response = JsonResponse(failure_envelope(connector_id, str(exc), retry=True), status=503)
        response["Retry-After"] = str(RETRY_AFTER_OUTAGE_SECONDS)
        return response
    try:
        # Kibana accepts lone surrogates in strings; they become U+FFFD here (connectors/untrusted_json.py).
        body = read_json_body(request, replace_lone_surrogates=True)
        if not isinstance(body, dict) or not isinstance(body.get("params"), dict):
            raise ApiError(400, "[request body.params]: expected value of type [object]")
    except ApiError as exc:
        # Still an execution attempt: record it with the reason the caller is told (HTTP 400 outside the envelope,
        # as Kibana answers it).
        record = ExecutionRecord(connector, user=request.user, source=EventSource.API, sub_action="",
                                 request_bytes=_declared_length(request))
        await record.rejected(exc.message)
        return KIBANA_ERRORS.response(exc.status, exc.message)
    if wants_stream(body["params"]):
        stream = await start_execute_stream(
            connector, body["params"], user=request.user, source=EventSource.API, request_bytes=_declared_length(request)
        )
        # A failure before the first byte is answered like a non-streamed one: HTTP 200 with the error envelope.
        return JsonResponse(stream.envelope()) if stream.failure else sse_response(stream.relay())
    execution = await execute(
        connector, body["params"], user=request.user, source=EventSource.API, request_bytes=_declared_length(request)
    )
    return JsonResponse(execution.envelope)


def _declared_length(request) -> int:
    value = request.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else 0
