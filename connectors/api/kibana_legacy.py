"""Kibana 8.x's connector routes (``/api/actions/action...``, ``/api/actions``, ``/api/actions/list_action_types``),
removed in 9.x, so that 8.x scripts work unchanged (docs/KIBANA.md 3.1).

Kibana 8.x answered them with the actions client's own objects, in camelCase (``actionTypeId``, ``isPreconfigured``,
``isMissingSecrets``, ``referencedByCount`` on the list; the executor's ``actionId``, ``serviceMessage`` on
``_execute``), and marks them deprecated: every answer carries Kibana's ``Warning: 299 Kibana-<version> "..."``
header (core's getWarningHeaderMessageFromRouteDeprecation). Everything else (authentication, permissions, bodies,
errors) is the 9.x route's, called here with the 8.x names translated.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from connectors.api import kibana
from connectors.api.endpoint import ApiError, json_endpoint, json_object_body, no_content
from connectors.models import KIBANA_VERSION, Connector
from connectors.permissions import ADD_CONNECTOR, CHANGE_CONNECTOR, DELETE_CONNECTOR, EXECUTE_CONNECTOR, VIEW_CONNECTOR

DEPRECATION_MESSAGE = "This endpoint is deprecated"  # core's text when a route's deprecation gives none
WARNING = f'299 Kibana-{KIBANA_VERSION} "{quote(DEPRECATION_MESSAGE, safe="")}"'

# 9.x name -> 8.x name, for the connector and the connector type (the transforms of docs/KIBANA.md 2 read back).
CONNECTOR_KEYS = {"connector_type_id": "actionTypeId", "is_preconfigured": "isPreconfigured",
                  "is_deprecated": "isDeprecated", "is_missing_secrets": "isMissingSecrets",
                  "is_system_action": "isSystemAction", "referenced_by_count": "referencedByCount"}
TYPE_KEYS = {"enabled_in_config": "enabledInConfig", "enabled_in_license": "enabledInLicense",
             "minimum_license_required": "minimumLicenseRequired", "supported_feature_ids": "supportedFeatureIds",
             "is_system_action_type": "isSystemActionType", "is_deprecated": "isDeprecated"}
ENVELOPE_KEYS = {"connector_id": "actionId", "service_message": "serviceMessage"}


def deprecated_route(view):
    @wraps(view)
    async def wrapper(request, *args, **kwargs):
        response = await view(request, *args, **kwargs)
        response["Warning"] = WARNING
        return response

    return wrapper


def _renamed(data: dict, names: dict[str, str], drop: tuple[str, ...] = ()) -> dict:
    return {names.get(key, key): value for key, value in data.items() if key not in drop}


def legacy_connector_json(connector: Connector, *, with_references: bool = False) -> dict:
    # 8.x's actions client has no isConnectorTypeDeprecated: that key came with 9.x's transforms.
    data = kibana.connector_json(connector, with_references=with_references)
    return _renamed(data, CONNECTOR_KEYS, drop=("is_connector_type_deprecated",))


def _translated_body(body: dict) -> dict:
    """An 8.x create body (``actionTypeId``) as the 9.x route reads it."""
    if "connector_type_id" in body:
        raise ApiError(400, "[request body.connector_type_id]: definition for this key is missing")
    return {("connector_type_id" if key == "actionTypeId" else key): value for key, value in body.items()}


def _as_8x(error: ApiError) -> ApiError:
    error.message = error.message.replace("[request body.connector_type_id]", "[request body.actionTypeId]")
    return error


@deprecated_route
@json_endpoint({"POST": ADD_CONNECTOR})
async def create_action(request):
    body = _translated_body(json_object_body(request))
    try:
        connector = await sync_to_async(kibana.create)(request.user, body, None)
    except ApiError as exc:
        raise _as_8x(exc) from None
    return JsonResponse(legacy_connector_json(connector))


@deprecated_route
@json_endpoint({"GET": VIEW_CONNECTOR, "PUT": CHANGE_CONNECTOR, "DELETE": DELETE_CONNECTOR})
async def action_detail(request, connector_id: str):
    if request.method == "PUT":
        connector = await sync_to_async(kibana.update)(request.user, connector_id, json_object_body(request))
        return JsonResponse(legacy_connector_json(connector))
    if request.method == "DELETE":
        await sync_to_async(kibana.delete)(request.user, connector_id)
        return no_content()
    connector = await sync_to_async(kibana.get)(request.user, connector_id)
    return JsonResponse(legacy_connector_json(connector))


@deprecated_route
@json_endpoint({"GET": VIEW_CONNECTOR})
async def list_actions(request):
    connectors = await sync_to_async(kibana.listed_connectors)()
    return JsonResponse([legacy_connector_json(c, with_references=True) for c in connectors], safe=False)


@deprecated_route
@json_endpoint({"GET": None})
async def list_action_types(request):
    return JsonResponse([_renamed(kibana.connector_type_json(), TYPE_KEYS, drop=("source",))], safe=False)


def legacy_envelope_response(envelope: dict) -> JsonResponse:
    """8.x's ``_execute`` answered the executor's result as it is: ``actionId``, ``serviceMessage``."""
    return kibana.envelope_response(_renamed(envelope, ENVELOPE_KEYS))


@deprecated_route
@json_endpoint({"POST": EXECUTE_CONNECTOR})
async def execute_action(request, connector_id: str):
    return await kibana.run_execute(request, connector_id, legacy_envelope_response)
