"""The usage pages: the overview of every connector, one connector's dashboard, and its CSV exports.

Every view needs ``usage.view_usage_dashboard`` (usage/permissions.py, checked by usage.dashboards.access): anonymous users are
sent to the login page, others get a 403 naming it. The raw events CSV follows the Logs tab's rules instead (own
calls only for connector users). A bad range is shown on the page's range form (with the default range's data);
the CSV downloads answer it as a plain-text 400.
The aggregation lives in usage.dashboards.queries, the figures in usage.dashboards.charts, the CSV formats in usage.dashboards.exports.
"""

from functools import wraps
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse

from connectors.access.policy import administers_accounts
from connectors.lookup import get_connector_or_404
from connectors.models import ApiKey
from connectors.replicas import reads_from_replica
from usage import space_scope
from usage.dashboards import charts, exports
from usage.dashboards.access import logs_scope, usage_view
from usage.dashboards.charts import allows_inline_styles
from usage.dashboards.drill_down import DrillDown, Timeline
from usage.dashboards.event_filters import EventFilters, InvalidFilter
from usage.dashboards.queries import (
    BREAKDOWN_LIMIT,
    ConnectorRef,
    UsageSlice,
    UsageSums,
    connector_usage,
    find_connector,
    usage_breakdown,
    usage_overview,
    usage_series,
)
from usage.permissions import VIEW_USAGE_DASHBOARD
from usage.ranges import PRESET_LABELS, InvalidRange, UsageRange, parse_range


def connector_usage_view(*, plain: bool = False):
    """A usage view of one connector: the view receives the connector of the URL and the range of the query.

    404 when there is no such connector and no usage left by one (a deleted connector's usage stays readable,
    named from its last event). A bad range: a ``plain`` text 400 for the CSV downloads; for a page, the default
    range and the error, which the view shows on its range form (the view then also receives ``range_error``).
    """

    def decorator(view):
        @reads_from_replica
        @usage_view
        @wraps(view)
        def wrapper(request, connector_id: str):
            missing = "No connector and no usage with that id."
            connector = get_connector_or_404(request, connector_id, VIEW_USAGE_DASHBOARD, find=find_connector,
                                             missing=missing)
            if not plain:
                return view(request, connector, *parse_range_or_default(request))
            try:
                usage_range = parse_range(range_params(request))
            except InvalidRange as exc:
                return bad_range(exc)
            return view(request, connector, usage_range)

        return wrapper

    return decorator


def bad_range(error: ValueError) -> HttpResponse:
    """For the CSV downloads; the pages show the error on their range form instead (parse_range_or_default)."""
    return HttpResponse(f"{error}\n", status=400, content_type="text/plain; charset=utf-8")


def range_params(request):
    """The query string, in the viewer's remembered time zone when it names none (connectors/viewer_time_zone.py)."""
    if request.GET.get("tz"):
        return request.GET
    params = request.GET.copy()
    params["tz"] = getattr(request, "viewer_tz", "UTC")
    return params


def parse_range_or_default(request) -> tuple[UsageRange, str | None]:
    """The range of the query string, or the default range and the error to show on the range form."""
    try:
        return parse_range(range_params(request)), None
    except InvalidRange as exc:
        try:
            return parse_range({"tz": range_params(request).get("tz")}), str(exc)
        except InvalidRange:
            return parse_range({}), str(exc)


def parse_slice_or_everything(request) -> tuple[UsageSlice, str | None]:
    """The filters of the query string, or none and the error to show on the filter form."""
    try:
        return UsageSlice.from_params(request.GET), None
    except InvalidFilter as exc:
        return UsageSlice(), str(exc)


def range_context(request, usage_range: UsageRange, *, keep: dict | None = None, error: str | None = None) -> dict:
    """What the range picker needs: a link per preset (keeping the time zone and the ``keep`` filters), the custom
    form's values, and the ``error`` of a range that could not be used (shown on the form, not on another page)."""
    keep = keep or {}
    keep_tz = {"tz": usage_range.tz_name} if usage_range.tz_name != "UTC" else {}
    presets = [
        {"key": key, "label": label, "url": f"{request.path}?{urlencode({'range': key, **keep_tz, **keep})}"}
        for key, label in PRESET_LABELS.items()
    ]
    fmt = "%Y-%m-%d %H:%M"  # typed as text: a datetime-local field would follow the browser's 12-hour clock
    return {
        "range": usage_range,
        "presets": presets,
        # What was typed stays in the fields when it could not be used.
        "custom_from": request.GET.get("from", "")[:64] if error else usage_range.local(usage_range.start).strftime(fmt),
        "custom_to": request.GET.get("to", "")[:64] if error else usage_range.local(usage_range.end).strftime(fmt),
        "querystring": usage_range.querystring(**keep),
        "range_error": error,
        "keep_params": sorted(keep.items()),
    }


API_KEY_CHOICES_LIMIT = 500


def api_key_choices() -> list[tuple[int, str]]:
    """The API keys a dashboard can be sliced by: every key of the current space (revoked ones too: their calls
    stay in the log), with its owner, newest first."""
    keys = (ApiKey.objects.filter(space_id=space_scope.space_id()).select_related("user")
            .order_by("-created_at", "-pk")[:API_KEY_CHOICES_LIMIT])
    return [(key.pk, f"{key} of {key.user.get_username()}" + ("" if key.is_active else " (revoked)"))
            for key in keys]


def slice_context(usage_slice: UsageSlice, by_user, by_model, error: str | None = None) -> dict:
    """The filter form of a dashboard: its values and suggestions (the users and models of the breakdowns, the
    API keys), and the ``error`` of a filter that could not be used."""
    choices = api_key_choices()
    return {
        "usage_slice": usage_slice,
        "slice_error": error,
        "user_suggestions": [row.key for row in by_user if row.key and not row.is_others],
        "model_suggestions": [row.key for row in by_model if row.key and not row.is_others],
        "api_key_choices": choices,
        "api_key_label": dict(choices).get(usage_slice.api_key, f"#{usage_slice.api_key}"),
    }


def shows_role_note(user) -> bool:
    """Admins, who can hand out the Usage viewers role, get Kibana's note on who may see this page."""
    return administers_accounts(user)


@allows_inline_styles  # plotly.js draws the two per-user charts here too (usage/dashboards/charts.py)
@reads_from_replica
@usage_view
def overview(request):
    usage_range, range_error = parse_range_or_default(request)
    usage_slice, slice_error = parse_slice_or_everything(request)
    rows = usage_overview(usage_range, usage_slice)
    by_user = usage_breakdown(None, usage_range, "user_name", limit=BREAKDOWN_LIMIT, usage_slice=usage_slice)
    has_usage = any(row.sums.requests for row in rows)
    links = DrillDown(usage_range, usage_slice)
    total = UsageSums()
    for row in rows:
        total.add(row.sums)
        row.logs_url = links.connector_logs(row.connector.id)
    links.annotate("user", by_user)
    timeline = Timeline(usage_series(None, usage_range, usage_slice), usage_range) if has_usage else None
    context = {
        **range_context(request, usage_range, keep=usage_slice.query_params(), error=range_error),
        **slice_context(usage_slice, by_user, usage_breakdown(None, usage_range, "model", limit=BREAKDOWN_LIMIT),
                        slice_error),
        "rows": rows,
        "total": total,
        "by_user": by_user,
        "charts": charts.overview_charts(by_user, timeline, links) if has_usage else [],
        "plot_config": charts.PLOT_CONFIG,
        "has_usage": has_usage,
        "show_role_note": shows_role_note(request.user),
    }
    return render(request, "usage/overview.html", context, status=400 if range_error or slice_error else 200)


@allows_inline_styles  # plotly.js (usage/dashboards/charts.py)
@connector_usage_view()
def connector_dashboard(request, connector: ConnectorRef, usage_range: UsageRange, range_error: str | None):
    usage_slice, slice_error = parse_slice_or_everything(request)
    report = connector_usage(connector.id, usage_range, breakdown_limit=BREAKDOWN_LIMIT, usage_slice=usage_slice,
                             with_api_keys=True)
    links = DrillDown(usage_range, usage_slice, connector.id)
    links.annotate("user", report.by_user)
    links.annotate("model", report.by_model)
    links.annotate("api_key", report.by_api_key)
    context = {
        **range_context(request, usage_range, keep=usage_slice.query_params(), error=range_error),
        **slice_context(usage_slice, report.by_user, report.by_model, slice_error),
        "connector": connector,
        "report": report,
        "charts": [] if report.is_empty else charts.dashboard_charts(report, links),
        "plot_config": charts.PLOT_CONFIG,
        "api_url": reverse("api_usage_connector", args=[connector.id]) + "?"
        + usage_range.querystring(**usage_slice.query_params()),
        "show_role_note": shows_role_note(request.user),
    }
    return render(request, "usage/connector_dashboard.html", context,
                  status=400 if range_error or slice_error else 200)


def _attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@connector_usage_view(plain=True)
def export_series_csv(request, connector: ConnectorRef, usage_range: UsageRange):
    try:
        usage_slice = UsageSlice.from_params(request.GET)
    except InvalidFilter as exc:
        return bad_range(exc)
    report = connector_usage(connector.id, usage_range, usage_slice=usage_slice)
    response = HttpResponse(exports.series_csv(report), content_type="text/csv; charset=utf-8")
    return _attachment(response, exports.export_filename("series", connector.id, usage_range))


@reads_from_replica
@login_required
def export_events_csv(request, connector_id: str):
    """The Logs tab's rows as CSV: a range's raw events under its filters; own calls only without VIEW_USAGE."""
    connector, only_user_id = logs_scope(request, connector_id)
    try:
        usage_range = parse_range(range_params(request))
        filters = EventFilters.from_params(request.GET, only_user_id=only_user_id)
    except (InvalidRange, InvalidFilter) as exc:
        return bad_range(exc)
    # Streamed either way; the iterator must match the server, or Django reads it whole into memory first.
    if isinstance(request, ASGIRequest):
        lines = exports.araw_events_csv(connector.id, usage_range, filters)
    else:
        lines = exports.raw_events_csv(connector.id, usage_range, filters)
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    return _attachment(response, exports.export_filename("events", connector.id, usage_range))
