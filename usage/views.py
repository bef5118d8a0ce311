"""The usage pages: the overview of every connector, one connector's dashboard, and its CSV exports.

Every view needs ``usage.view_usage_dashboard`` (usage/permissions.py): anonymous users are sent to the login
page, others get 403.
The aggregation lives in usage.queries, the figures in usage.charts, the CSV formats in usage.exports.
"""

from functools import wraps
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required, permission_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse

from connectors.lookup import get_connector_or_404
from connectors_admin.csp import allows_inline_styles
from usage import charts, exports
from usage.permissions import VIEW_USAGE_DASHBOARD
from usage.queries import BREAKDOWN_LIMIT, ConnectorRef, connector_usage, find_connector, usage_overview
from usage.ranges import PRESET_LABELS, InvalidRange, UsageRange, parse_range


def usage_view(view):
    # login_required first: permission_required(raise_exception=True) alone would answer 403 to anonymous users.
    return login_required(permission_required(VIEW_USAGE_DASHBOARD, raise_exception=True)(view))


def connector_usage_view(*, plain: bool = False):
    """A usage view of one connector: the view receives the connector of the URL and the range of the query.

    404 when there is no such connector and no usage left by one (a deleted connector's usage stays readable,
    named from its last event), then 400 for a bad range: a page, or ``plain`` text for the CSV downloads.
    """

    def decorator(view):
        @usage_view
        @wraps(view)
        def wrapper(request, connector_id: str):
            missing = "No connector and no usage with that id."
            connector = get_connector_or_404(request, connector_id, VIEW_USAGE_DASHBOARD, find=find_connector,
                                             missing=missing)
            try:
                usage_range = parse_range(request.GET)
            except InvalidRange as exc:
                return bad_range(request, exc, plain=plain)
            return view(request, connector, usage_range)

        return wrapper

    return decorator


def bad_range(request, error: InvalidRange, *, plain: bool = False) -> HttpResponse:
    if plain:
        return HttpResponse(f"{error}\n", status=400, content_type="text/plain; charset=utf-8")
    return render(request, "usage/bad_request.html", {"error": error, "retry_url": request.path}, status=400)


def range_context(request, usage_range: UsageRange) -> dict:
    """What the range picker needs: a link per preset (keeping the time zone) and the custom form's values."""
    keep_tz = {"tz": usage_range.tz_name} if usage_range.tz_name != "UTC" else {}
    presets = [
        {"key": key, "label": label, "url": f"{request.path}?{urlencode({'range': key, **keep_tz})}"}
        for key, label in PRESET_LABELS.items()
    ]
    fmt = "%Y-%m-%dT%H:%M"
    return {
        "range": usage_range,
        "presets": presets,
        "custom_from": usage_range.local(usage_range.start).strftime(fmt),
        "custom_to": usage_range.local(usage_range.end).strftime(fmt),
        "querystring": usage_range.querystring(),
    }


def shows_role_note(user) -> bool:
    """Admins, who can hand out the Usage viewers role, get Kibana's note on who may see this page."""
    return user.is_superuser or user.is_staff or user.has_perm("auth.change_user")


@usage_view
def overview(request):
    try:
        usage_range = parse_range(request.GET)
    except InvalidRange as exc:
        return bad_range(request, exc)
    rows = usage_overview(usage_range)
    context = {
        **range_context(request, usage_range),
        "rows": rows,
        "has_usage": any(row.sums.requests for row in rows),
        "show_role_note": shows_role_note(request.user),
    }
    return render(request, "usage/overview.html", context)


@allows_inline_styles  # plotly.js (connectors_admin/csp.py)
@connector_usage_view()
def connector_dashboard(request, connector: ConnectorRef, usage_range: UsageRange):
    report = connector_usage(connector.id, usage_range, breakdown_limit=BREAKDOWN_LIMIT, with_api_keys=True)
    context = {
        **range_context(request, usage_range),
        "connector": connector,
        "report": report,
        "charts": [] if report.is_empty else charts.dashboard_charts(report),
        "plot_config": charts.PLOT_CONFIG,
        "api_url": reverse("api_usage_connector", args=[connector.id]) + "?" + usage_range.querystring(),
        "show_role_note": shows_role_note(request.user),
    }
    return render(request, "usage/connector_dashboard.html", context)


def _attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@connector_usage_view(plain=True)
def export_series_csv(request, connector: ConnectorRef, usage_range: UsageRange):
    report = connector_usage(connector.id, usage_range)
    response = HttpResponse(exports.series_csv(report), content_type="text/csv; charset=utf-8")
    return _attachment(response, exports.export_filename("series", connector.id, usage_range))


@connector_usage_view(plain=True)
def export_events_csv(request, connector: ConnectorRef, usage_range: UsageRange):
    # Streamed either way; the iterator must match the server, or Django reads it whole into memory first.
    if isinstance(request, ASGIRequest):
        lines = exports.araw_events_csv(connector.id, usage_range)
    else:
        lines = exports.raw_events_csv(connector.id, usage_range)
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    return _attachment(response, exports.export_filename("events", connector.id, usage_range))
