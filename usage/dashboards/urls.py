from django.urls import path

from usage.dashboards import dashboard_views as views
from usage.dashboards import my_usage_views

app_name = "usage"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("me/", my_usage_views.my_usage_page, name="my_usage"),
    path("connectors/<str:connector_id>/", views.connector_dashboard, name="connector_dashboard"),
    path("connectors/<str:connector_id>/export.csv", views.export_series_csv, name="export_series_csv"),
    path("connectors/<str:connector_id>/events.csv", views.export_events_csv, name="export_events_csv"),
]
