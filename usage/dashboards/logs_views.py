"""The Logs tab of a connector (/connectors/<id>/logs/) and one event's detail.

Who sees what: anyone who may view connectors (``connectors.view_connector``) or usage
(``usage.view_usage_dashboard``) opens the tab; only the latter see every user's calls, the others see their own
(the page says so). The filters are usage.dashboards.event_filters, the paging and counts usage.dashboards.logs.
"""

from datetime import datetime
from urllib.parse import quote, urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control

from connectors.models import ApiKey
from connectors.replicas import reads_from_replica
from usage.dashboards.access import logs_scope
from usage.dashboards.dashboard_views import parse_range_or_default, range_context, range_params
from usage.dashboards.event_filters import SUB_ACTIONS, EventFilters, InvalidFilter
from usage.dashboards.logs import Cursor, InvalidCursor, find_event, log_page, outcome_counts
from usage.dashboards.queries import usage_breakdown
from usage.models import Outcome
from usage.ranges import InvalidRange, parse_range

# How many users and models the filter fields suggest.
SUGGESTIONS = 100
# The suggestions of a range change slowly: the browser may keep them while someone pages through the tab.
SUGGESTIONS_MAX_AGE = 300


def _suggestions(connector_id: str, usage_range, dimension: str) -> list[str]:
    return [row.key for row in usage_breakdown(connector_id, usage_range, dimension)[:SUGGESTIONS] if row.key]


def api_key_label(key_id: int | None) -> str:
    """An API key as people know it: its name and owner (the id when it is gone)."""
    if key_id is None:
        return ""
    key = ApiKey.objects.select_related("user").filter(pk=key_id).first()
    return f"{key} of {key.user.get_username()}" if key else f"#{key_id} (deleted)"


def _prepare_rows(events: list[dict], connector_id: str, usage_range, detail_query: str) -> None:
    """Each row's time as shown and as ISO 8601, and its detail link, computed here once: in the template (a
    ``{% url %}`` and two ``|date`` a row) they took half the page's rendering time."""
    # The detail link of event 0, less its id: one reverse() for the page.
    detail_prefix = reverse("connector_log_event", args=[connector_id, 0]).removesuffix("0/")
    for event in events:
        moment = event["timestamp"]
        # Formatted here: the |date filter would convert back to the server's time zone.
        event["local_time"] = usage_range.local(moment).strftime("%Y-%m-%d %H:%M:%S")
        event["iso_time"] = moment.isoformat()
        event["detail_url"] = f"{detail_prefix}{event['id']}/?at={quote(event['iso_time'], safe='')}&{detail_query}"


@reads_from_replica
@login_required
def connector_logs(request, connector_id: str):
    connector, only_user_id = logs_scope(request, connector_id)
    errors = []
    usage_range, range_error = parse_range_or_default(request)
    try:
        filters = EventFilters.from_params(request.GET, only_user_id=only_user_id)
    except InvalidFilter as exc:
        filters = EventFilters(only_user_id=only_user_id)
        errors.append(str(exc))
    before = after = None
    try:
        before = Cursor.decode(request.GET["before"]) if request.GET.get("before") else None
        after = Cursor.decode(request.GET["after"]) if request.GET.get("after") and before is None else None
    except InvalidCursor as exc:
        errors.append(str(exc))
    page = log_page(connector.id, usage_range, filters, before=before, after=after)
    base = {**usage_range.query_params(), **filters.query_params()}
    _prepare_rows(page.events, connector.id, usage_range, urlencode(base))
    path = request.path
    sees_everyone = only_user_id is None
    context = {
        **range_context(request, usage_range, keep=filters.query_params(), error=range_error),
        "connector": connector,
        "tab": "logs",
        "page": page,
        "filters": filters,
        "errors": errors,
        "sees_everyone": sees_everyone,
        "counts": outcome_counts(connector.id, usage_range, filters),
        "outcomes": Outcome.choices,
        "sub_actions": SUB_ACTIONS,
        # The user and model fields' suggestions are fetched by the page when one of them is first used (the
        # rollups' breakdown of the range was most of the page's time): log_filter_suggestions.
        "suggestions_url": (reverse("connector_log_suggestions", args=[connector.id]) + "?"
                            + urlencode(usage_range.query_params())) if sees_everyone else "",
        "newest_url": f"{path}?{urlencode(base)}",
        "newer_url": f"{path}?{urlencode({**base, 'after': page.newer.encode()})}" if page.newer else "",
        "older_url": f"{path}?{urlencode({**base, 'before': page.older.encode()})}" if page.older else "",
        "outcome_url": {
            value: f"{path}?{urlencode({**base, 'outcome': value})}" for value in Outcome.values
        },
        "csv_url": reverse("usage:export_events_csv", args=[connector.id]) + "?" + urlencode(base),
        # Someone limited to their own calls is not told whose another key is.
        "api_key_label": api_key_label(filters.api_key) if sees_everyone else f"#{filters.api_key}",
    }
    return render(request, "usage/logs.html", context, status=400 if range_error or errors else 200)


@reads_from_replica
@login_required
def log_filter_suggestions(request, connector_id: str):
    """The user names and models the Logs tab's filter fields suggest for the range, most used first (the rollups'
    breakdowns): for people who see everyone's calls; the others get none, as the rollups do not know whose a
    call was."""
    connector, only_user_id = logs_scope(request, connector_id)
    usage_range, _error = parse_range_or_default(request)
    everyone = only_user_id is None
    response = JsonResponse({
        "users": _suggestions(connector.id, usage_range, "user_name") if everyone else [],
        "models": _suggestions(connector.id, usage_range, "model") if everyone else [],
    })
    patch_cache_control(response, private=True, max_age=SUGGESTIONS_MAX_AGE)
    return response


def _event_time(raw: str) -> datetime | None:
    """The ``at`` of an event link: its exact time, or None (a link without it, or edited) to look it up by id."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@reads_from_replica
@login_required
def log_event_detail(request, connector_id: str, event_id: int):
    connector, only_user_id = logs_scope(request, connector_id)
    event = find_event(connector.id, event_id, at=_event_time(request.GET.get("at", "")), only_user_id=only_user_id)
    if event is None:
        raise Http404("No such event for this connector.")
    try:
        usage_range = parse_range(range_params(request))
    except InvalidRange:
        usage_range = parse_range({})
    back = reverse("connector_logs", args=[connector.id])
    params = request.GET.copy()
    params.pop("at", None)  # the event's, not the list's
    query = params.urlencode()
    context = {
        "connector": connector,
        "tab": "logs",
        "event": event,
        "local_time": usage_range.local(event.timestamp).strftime("%Y-%m-%d %H:%M:%S %Z"),
        "tz_name": usage_range.tz_name,
        "back_url": f"{back}?{query}" if query else back,
    }
    return render(request, "usage/log_event.html", context)
