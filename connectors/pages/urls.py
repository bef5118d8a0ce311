from django.urls import path

from connectors.pages import views

app_name = "connectors"

urlpatterns = [
    path("", views.ConnectorListView.as_view(), name="list"),
    path("new/", views.ConnectorCreateView.as_view(), name="create"),
    path("delete-selected/", views.bulk_delete, name="bulk_delete"),
    path("<str:connector_id>/", views.ConnectorDetailView.as_view(), name="detail"),
    path("<str:connector_id>/edit/", views.ConnectorUpdateView.as_view(), name="edit"),
    path("<str:connector_id>/delete/", views.ConnectorDeleteView.as_view(), name="delete"),
    path("<str:connector_id>/test/", views.run_connector_test, name="test"),
]
