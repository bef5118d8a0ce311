"""Kibana's connector HTTP API, so Kibana scripts work with only the base URL changed.

The routes, bodies and error messages follow docs/KIBANA.md, 'HTTP routes'.
"""

import math

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.urls import reverse

from connectors import lookup
from connectors.access.policy import may
from connectors.actions_config import action_type_disabled_message
from connectors.api.connector_body import apply_payload, body_type_error
from connectors.api.endpoint import (
    KIBANA_ERRORS,
    ApiError,
    declared_length,
    json_endpoint,
    json_object_body,
    json_response,
    no_content,
    read_json_body,
)
from connectors.collation import locale_compare_key
from connectors.lookup import all_connectors, get_connector_or_404
from connectors.models import CONNECTOR_TYPE_ID, CONNECTOR_TYPE_NAME, Connector, Provider, connector_id_validator
from connectors.outbound.envelopes import failure_envelope, ok_envelope, rejection_envelope
from connectors.outbound.execution import ConnectorUnavailable, connector_to_execute, execute
from connectors.outbound.record import refuse_before_start
from connectors.outbound.streaming import sse_response, start_execute_stream
from connectors.outbound.sub_actions import DASHBOARD, ParamsError, SubActionError, parse_params, wants_stream
from connectors.permissions import ADD_CONNECTOR, CHANGE_CONNECTOR, DELETE_CONNECTOR, EXECUTE_CONNECTOR, VIEW_CONNECTOR
from connectors.preconfigured import preconfigured_connectors, preconfigured_of_other_types
from connectors.spaces.current import current_space_id
from connectors.validation import schema_type_of
from usage.models import EventSource
from usage.permissions import VIEW_USAGE_DASHBOARD

RETRY_AFTER_OUTAGE_SECONDS = 5  # suggested to callers when the connector cannot be read (database outage)

# Kibana's actionTypeRegistry.isDeprecated(id) is the type definition's own isDeprecated flag, which the .gen-ai
# definition (stack_connectors/server/connector_types/openai/index.ts) does not set: false, in connector_types'
# is_deprecated and in every connector's is_connector_type_deprecated alike (docs/KIBANA.md 8).
CONNECTOR_TYPE_DEPRECATED = False

FEATURE_IDS = ["generativeAIForSecurity", "generativeAIForObservability", "generativeAIForSearchPlayground"]


def connector_type_json() -> dict:
    """The ``.gen-ai`` entry of ``connector_types`` (docs/KIBANA.md 3), enabled as ``enabledActionTypes`` says."""
    enabled = settings.ACTIONS_CONFIG.is_action_type_enabled(CONNECTOR_TYPE_ID)
    return {
        "id": CONNECTOR_TYPE_ID,
        "name": CONNECTOR_TYPE_NAME,
        "enabled": enabled,
        "enabled_in_config": enabled,
        "enabled_in_license": True,
        "minimum_license_required": "enterprise",
        "supported_feature_ids": list(FEATURE_IDS),
        "is_system_action_type": False,
        "source": "stack",
        "is_deprecated": CONNECTOR_TYPE_DEPRECATED,
    }


def connector_json(connector: Connector, *, with_references: bool = False, created: bool = False) -> dict:
    """Kibana's connector response transform (docs/KIBANA.md 2).

    Preconfigured connectors come without ``config`` and ``is_missing_secrets`` (unless ``exposeConfig``), as in
    Kibana. A create response has no ``is_connector_type_deprecated`` (Kibana's integration test deep-equals it
    without the key).
    """
    data = {"id": str(connector.pk), "name": connector.name}
    if not connector.is_preconfigured or connector.expose_config:
        data["config"] = connector.kibana_config()
    data.update({
        "connector_type_id": connector.connector_type_id,
        "is_preconfigured": connector.is_preconfigured,
        "is_deprecated": False,
        "is_system_action": False,
    })
    if not connector.is_preconfigured:
        data["is_missing_secrets"] = (
            connector.provider != Provider.OTHER and not connector.has_api_key and not connector.uses_pki
        )
    if not created:
        data["is_connector_type_deprecated"] = CONNECTOR_TYPE_DEPRECATED
    if with_references:
        data["referenced_by_count"] = 0
    return data


def ensure_type_enabled(type_id: str = CONNECTOR_TYPE_ID) -> None:
    """Kibana's ``ensureActionTypeEnabled``: 403 when ``enabledActionTypes`` leaves the type out."""
    if not settings.ACTIONS_CONFIG.is_action_type_enabled(type_id):
        raise ApiError(403, action_type_disabled_message(type_id))


def _find_any_type(connector_id: str) -> Connector | None:
    """``lookup.find``, and the preconfigured connectors of other types, which the API lists as Kibana does."""
    return preconfigured_of_other_types().get(connector_id) or lookup.find(connector_id)


def create(user, body: dict, connector_id: str | None) -> Connector:
    if connector_id and (connector_id in preconfigured_connectors() or connector_id in preconfigured_of_other_types()):
        raise ApiError(400, f"This {connector_id} already exists in a preconfigured action.")
    connector = Connector(created_by=user, space_id=current_space_id.get())
    if connector_id:
        connector.pk = connector_id
    apply_payload(connector, body, creating=True)
    ensure_type_enabled()
    try:
        with transaction.atomic():
            connector.save(force_insert=True)
    except IntegrityError:
        raise ApiError(409, f"Saved object [action/{connector_id}] conflict") from None
    return connector


def update(user, connector_id: str, body: dict) -> Connector:
    connector = get_connector_or_404(user, connector_id, CHANGE_CONNECTOR, find=_find_any_type)
    if connector.is_preconfigured:
        raise ApiError(400, f"Preconfigured action {connector_id} can not be updated.")
    apply_payload(connector, body, creating=False)
    ensure_type_enabled()
    connector.save()
    return connector


def delete(user, connector_id: str) -> None:
    connector = get_connector_or_404(user, connector_id, DELETE_CONNECTOR, find=_find_any_type)
    if connector.is_preconfigured:
        raise ApiError(400, f"Preconfigured action {connector_id} is not allowed to delete.")
    connector.delete()


@json_endpoint({"POST": ADD_CONNECTOR})
async def create_connector(request):
    body = json_object_body(request)
    connector = await sync_to_async(create)(request.user, body, None)
    return JsonResponse(connector_json(connector, created=True))


@json_endpoint(
    {"GET": VIEW_CONNECTOR, "POST": ADD_CONNECTOR, "PUT": CHANGE_CONNECTOR, "DELETE": DELETE_CONNECTOR}
)
async def connector_detail(request, connector_id: str):
    if request.method == "POST":
        if not _valid_id(connector_id):
            raise ApiError(400, "[id]: an id is 1 to 64 letters, digits, '-', '_' or '.'")
        body = json_object_body(request)
        connector = await sync_to_async(create)(request.user, body, connector_id)
        return JsonResponse(connector_json(connector, created=True))
    if request.method == "PUT":
        body = json_object_body(request)
        connector = await sync_to_async(update)(request.user, connector_id, body)
        return JsonResponse(connector_json(connector))
    if request.method == "DELETE":
        await sync_to_async(delete)(request.user, connector_id)
        return no_content()
    connector = await sync_to_async(get)(request.user, connector_id)
    return JsonResponse(connector_json(connector))


def get(user, connector_id: str) -> Connector:
    return get_connector_or_404(user, connector_id, VIEW_CONNECTOR, find=_find_any_type)


def listed_connectors() -> list[Connector]:
    """Every connector the API lists, preconfigured ones of other types too, sorted as Kibana's getAll sorts them
    (localeCompare on the name, connectors/collation.py)."""
    connectors = all_connectors() + list(preconfigured_of_other_types().values())
    return sorted(connectors, key=lambda c: locale_compare_key(c.name))


def _valid_id(connector_id: str) -> bool:
    try:
        connector_id_validator(connector_id)
    except ValidationError:
        return False
    return True


@json_endpoint({"GET": VIEW_CONNECTOR})
async def list_connectors(request):
    connectors = await sync_to_async(listed_connectors)()
    return JsonResponse([connector_json(c, with_references=True) for c in connectors], safe=False)


@json_endpoint({"GET": None})
async def connector_types(request):
    feature_id = request.GET.get("feature_id")
    types = [connector_type_json()] if not feature_id or feature_id in FEATURE_IDS else []
    return JsonResponse(types, safe=False)


@json_endpoint({"POST": EXECUTE_CONNECTOR})
async def execute_connector(request, connector_id: str):
    return await run_execute(request, connector_id, envelope_response)


async def run_execute(request, connector_id: str, respond) -> HttpResponse:
    """``_execute`` for both route generations; ``respond`` turns the envelope into the route's response (the 9.x
    snake_case envelope, or 8.x's camelCase result on the legacy route)."""
    other_type = preconfigured_of_other_types().get(connector_id)
    if other_type is not None and may(request.user, EXECUTE_CONNECTOR):
        await _refuse(request, other_type, _not_executable(other_type))
    try:
        connector = await connector_to_execute(request, connector_id, EXECUTE_CONNECTOR, source=EventSource.API,
                                               request_bytes=declared_length(request))
    except ConnectorUnavailable as exc:
        # The envelope with retry: true, as HTTP 503 so that clients and proxies see a temporary failure.
        response = respond(failure_envelope(connector_id, str(exc)))
        response.status_code = 503
        response["Retry-After"] = str(RETRY_AFTER_OUTAGE_SECONDS)
        return response
    if not connector.is_preconfigured and not settings.ACTIONS_CONFIG.is_action_type_enabled(CONNECTOR_TYPE_ID):
        # Kibana's isActionExecutable: preconfigured connectors run whatever enabledActionTypes says.
        await _refuse(request, connector, ApiError(403, action_type_disabled_message(CONNECTOR_TYPE_ID)))
    try:
        # Kibana accepts lone surrogates in strings; they become U+FFFD here (connectors/untrusted_json.py).
        body = read_json_body(request, replace_lone_surrogates=True)
        if not isinstance(body, dict):
            # @kbn/config-schema's sentence for a body that is not an object.
            raise ApiError(400, f"[request body]: expected a plain object value, but found [{schema_type_of(body)}] "
                                "instead.")
        if not isinstance(body.get("params"), dict):
            raise body_type_error("params", "object", body.get("params"), "params" in body)
    except ApiError as exc:
        # Still an execution attempt: record it with the reason the caller is told (HTTP 400 outside the envelope,
        # as Kibana answers it).
        await refuse_before_start(connector, exc.message, user=request.user, source=EventSource.API,
                                  sub_action="", request_bytes=declared_length(request))
        return KIBANA_ERRORS.response(exc.status, exc.message)
    if body["params"].get("subAction") == DASHBOARD:
        return respond(await _dashboard(request, connector, body["params"]))
    if wants_stream(body["params"]):
        stream = await start_execute_stream(
            connector, body["params"], user=request.user, source=EventSource.API, request_bytes=declared_length(request)
        )
        # A failure before the first byte is answered like a non-streamed one: HTTP 200 with the error envelope.
        return respond(stream.envelope()) if stream.failure else sse_response(stream.relay())
    execution = await execute(
        connector, body["params"], user=request.user, source=EventSource.API, request_bytes=declared_length(request)
    )
    return respond(execution.envelope)


def envelope_response(envelope: dict) -> JsonResponse:
    """The envelope as Kibana sends it: its keys only. How long to wait before retrying (the provider's
    ``retry-after``, a budget's reset) goes into the ``Retry-After`` header instead of an extra key."""
    envelope = dict(envelope)
    retry_after = envelope.pop("retry_after", None)
    response = json_response(envelope)
    if retry_after is not None:
        response["Retry-After"] = str(math.ceil(retry_after))
    return response


async def _dashboard(request, connector: Connector, params: dict) -> dict:
    """Kibana's getDashboard: ``{available}`` says whether the caller may read the usage dashboard (Kibana checks
    read access to its event log), and here ``url`` says where it is. Nothing is sent to the provider and no
    execution is recorded: it would count as a call in the usage it points to (docs/KIBANA.md 4.5)."""
    connector_id = str(connector.pk)
    try:
        parse_params(connector, params)
    except ParamsError as exc:
        return rejection_envelope(connector_id, str(exc))
    except SubActionError as exc:
        return failure_envelope(connector_id, str(exc), error_source=exc.error_source)
    if not await sync_to_async(may)(request.user, VIEW_USAGE_DASHBOARD):
        return ok_envelope(connector_id, {"available": False})
    url = request.build_absolute_uri(reverse("usage:connector_dashboard", args=[connector_id]))
    return ok_envelope(connector_id, {"available": True, "url": url})


def _not_executable(connector: Connector) -> ApiError:
    """A preconfigured connector of a type this app does not run: Kibana's message for a type it has not registered
    (400), or the enabledActionTypes one (403) when the list leaves the type out (docs/KIBANA.md 5)."""
    if not settings.ACTIONS_CONFIG.is_action_type_enabled(connector.connector_type_id):
        return ApiError(403, action_type_disabled_message(connector.connector_type_id))
    return ApiError(400, f'Action type "{connector.connector_type_id}" is not registered.')


async def _refuse(request, connector: Connector, error: ApiError) -> None:
    """Refused before it ran, still an execution attempt: recorded once, then answered as Kibana answers it."""
    await refuse_before_start(connector, error.message, user=request.user, source=EventSource.API,
                              sub_action="", request_bytes=declared_length(request))
    raise error
