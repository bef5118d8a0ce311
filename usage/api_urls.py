from django.urls import path

from usage import api

urlpatterns = [
    path("usage/connectors/<str:connector_id>", api.connector_usage, name="api_usage_connector"),
]
