from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from connectors.access.policy import may
from connectors.accounts import api_key_views, sso_views
from connectors.accounts.login_view import ThrottledLoginView
from connectors.api import spaces as api_spaces
from connectors.audit.permissions import VIEW_AUDIT_TRAIL
from connectors.pages import spaces as space_pages
from connectors.permissions import VIEW_CONNECTOR
from connectors_admin.healthz import healthz
from usage.dashboards import logs_views
from usage.observability.metrics_endpoint import metrics_endpoint
from usage.permissions import VIEW_USAGE_DASHBOARD


@login_required
def home(request):
    if may(request.user, VIEW_CONNECTOR):
        return redirect("connectors:list")
    if may(request.user, VIEW_USAGE_DASHBOARD):
        return redirect("usage:overview")
    if may(request.user, VIEW_AUDIT_TRAIL):
        return redirect("audit:list")
    return render(request, "home.html")


def favicon(request):
    # Resolved per request: the static files' manifest (with hashed names) exists only after collectstatic.
    return redirect(static("favicon.svg"), permanent=True)


urlpatterns = [
    path("", home, name="home"),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),  # before auth.urls' own "login"
    path("accounts/sso/login/", sso_views.sso_login, name="sso_login"),
    path("accounts/sso/callback/", sso_views.sso_callback, name="sso_callback"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("scim/v2/", include("connectors.accounts.scim.urls")),  # provisioning by the identity provider
    path("audit/", include("connectors.audit.urls")),
    path("spaces/", space_pages.space_list, name="spaces"),
    path("spaces/<str:space_id>/edit/", space_pages.space_edit, name="space_edit"),
    path("spaces/<str:space_id>/delete/", space_pages.space_delete, name="space_delete"),
    path("spaces/<str:space_id>/grants/", space_pages.space_grant, name="space_grant"),
    path("spaces/grants/<int:grant_id>/remove/", space_pages.grant_remove, name="space_grant_remove"),
    path("account/api-keys/", api_key_views.api_key_list, name="api_keys"),
    path("account/api-keys/<int:key_id>/revoke/", api_key_views.api_key_revoke, name="api_key_revoke"),
    # The admin's own login page would not be throttled: it sends people to the one that is.
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    # The Logs tab sits beside the connector's pages but reads the event log, so it belongs to usage.
    path("connectors/<str:connector_id>/logs/", logs_views.connector_logs, name="connector_logs"),
    path("connectors/<str:connector_id>/logs/suggestions.json", logs_views.log_filter_suggestions,
         name="connector_log_suggestions"),
    path("connectors/<str:connector_id>/logs/<int:event_id>/", logs_views.log_event_detail, name="connector_log_event"),
    path("connectors/", include("connectors.pages.urls")),
    path("usage/", include("usage.governance.pages.urls")),
    path("usage/", include("usage.dashboards.urls")),
    path("api/", include("connectors.api.urls")),
    # Browsers ask for /favicon.ico where a page names no icon (the admin's pages, a download).
    path("favicon.ico", favicon),
    path("internal/spaces/_active_space", api_spaces.active_space, name="active_space"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_endpoint, name="metrics"),
]
