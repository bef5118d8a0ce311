from django.urls import path

from connectors import api, openapi

urlpatterns = [
    path("actions/connector", api.create_connector, name="api_connector_create"),
    path("actions/connector/<str:connector_id>", api.connector_detail, name="api_connector"),
    path("actions/connector/<str:connector_id>/_execute", api.execute_connector, name="api_connector_execute"),
    path("actions/connectors", api.list_connectors, name="api_connectors"),
    path("actions/connector_types", api.connector_types, name="api_connector_types"),
    path("openapi.json", openapi.openapi_json, name="api_openapi"),
]
