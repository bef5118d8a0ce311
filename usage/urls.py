from django.urls import path

from usage import views

app_name = "usage"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("connectors/<str:connector_id>/", views.connector_dashboard, name="connector_dashboard"),
]
