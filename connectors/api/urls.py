from django.urls import path, re_path

from connectors.api import kibana as api
from connectors.api import kibana_legacy as legacy
from connectors.api import openai_compat, openapi, spaces, usage_report
from connectors.api.endpoint import unknown_api_path

urlpatterns = [
    path("actions/connector", api.create_connector, name="api_connector_create"),
    path("actions/connector/<str:connector_id>", api.connector_detail, name="api_connector"),
    path("actions/connector/<str:connector_id>/_execute", api.execute_connector, name="api_connector_execute"),
    path("actions/connectors", api.list_connectors, name="api_connectors"),
    path("actions/connector_types", api.connector_types, name="api_connector_types"),
    # Kibana 8.x's routes, removed in 9.x (connectors/api/kibana_legacy.py).
    path("actions", legacy.list_actions, name="api_legacy_actions"),
    path("actions/action", legacy.create_action, name="api_legacy_action_create"),
    path("actions/action/<str:connector_id>", legacy.action_detail, name="api_legacy_action"),
    path("actions/action/<str:connector_id>/_execute", legacy.execute_action, name="api_legacy_action_execute"),
    path("actions/list_action_types", legacy.list_action_types, name="api_legacy_action_types"),
    path("spaces/space", spaces.spaces, name="api_spaces"),
    path("spaces/space/<str:space_id>", spaces.space_detail, name="api_space"),
    path("spaces/_copy_saved_objects", spaces.copy_saved_objects, name="api_spaces_copy"),
    path("openapi.json", openapi.openapi_json, name="api_openapi"),
    # OpenAI-compatible: an SDK's base URL is .../api/openai/<connector-id>/v1
    path(
        "openai/<str:connector_id>/v1/chat/completions", openai_compat.chat_completions, name="openai_chat_completions"
    ),
    path("openai/<str:connector_id>/v1/models", openai_compat.list_models, name="openai_models"),
    path("usage/connectors/<str:connector_id>", usage_report.connector_usage, name="api_usage_connector"),
    path("usage/events.ndjson", usage_report.events_ndjson, name="api_usage_events_ndjson"),
    # Last: any other /api/ path answers Kibana's JSON 404, never the HTML page.
    re_path(r"^.*$", unknown_api_path, name="api_unknown_path"),
]
