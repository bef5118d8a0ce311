"""Usage for automation, with the connector API's authentication and error shape. It lives with the other JSON
endpoints (usage/ itself never imports the API, see .importlinter):

- ``GET /api/usage/connectors/<id>?from=<ISO>&to=<ISO>``: JSON; the figures come from usage.dashboards.queries, as the
  dashboards' do.
- ``GET /api/usage/events.ndjson?from=<ISO>&to=<ISO>[&connector=<id>][&cursor=...][&limit=N]``: the events as
  Kibana event-log documents for Elasticsearch's _bulk API (usage/operations/kibana_event_log.py, README 'Kibana event log
  export'); ``X-Next-Cursor`` and ``X-Export-Complete`` say where it stopped.

Same query parameters as the dashboard (``range``, ``from``, ``to``, ``tz``, and the filters ``user``, ``model``); ``from`` and ``to`` in the answer
are the effective range (widened to whole hours), and ``bucket`` values are ISO 8601 in the requested zone.
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse, StreamingHttpResponse

from connectors.api.endpoint import ApiError, json_endpoint
from connectors.lookup import get_connector_or_404
from connectors.replicas import reads_from_replica
from connectors.spaces.current import current_space_id
from usage.dashboards import queries
from usage.dashboards.event_filters import InvalidFilter
from usage.formatting import currency, nanos_to_amount
from usage.operations import kibana_event_log
from usage.permissions import VIEW_USAGE_DASHBOARD
from usage.ranges import InvalidRange, iso, parse_range


def cost_json(sums: queries.UsageSums, *, detailed: bool = True) -> dict:
    """A cost as an exact decimal string with its currency (``{"amount": "12.3456", "currency": "USD", ...}``);
    ``detailed`` adds whether any of it is estimated and how many requests had no price (known per bucket and for
    the totals, not per user or model, whose daily rollups do not keep those counts)."""
    cost = {"amount": str(nanos_to_amount(sums.cost_nanos)), "currency": currency()}
    if detailed:
        cost |= {"estimated": sums.cost_is_estimated, "unpriced_requests": sums.unpriced_requests}
    return cost


def usage_json(report: queries.UsageReport) -> dict:
    """The answer's shape: connector_id, from, to, totals, series, by_user, by_model, by_api_key; each with a cost."""
    tz = report.range.tz
    return {
        "connector_id": report.connector_id,
        "from": iso(report.range.start, tz),
        "to": iso(report.range.end, tz),
        "totals": {**report.totals.api_dict(), "cost": cost_json(report.totals)},
        "series": [
            {
                "bucket": iso(point.bucket, tz),
                "prompt_tokens": point.sums.prompt_tokens,
                "completion_tokens": point.sums.completion_tokens,
                "total_tokens": point.sums.total_tokens,
                "requests": point.sums.requests,
                "failures": point.sums.failures,
                "cost": cost_json(point.sums),
            }
            for point in report.series
        ],
        "by_user": [{"user_name": row.key, **row.sums.api_dict(), "cost": cost_json(row.sums, detailed=False)}
                    for row in report.by_user],
        "by_model": [{"model": row.key, **row.sums.api_dict(), "cost": cost_json(row.sums, detailed=False)}
                     for row in report.by_model],
        "by_api_key": [{"api_key": row.key, **row.sums.api_dict(), "cost": cost_json(row.sums)}
                       for row in report.by_api_key],
    }


def _connector_usage(user, connector_id: str, params) -> dict:
    connector = get_connector_or_404(user, connector_id, VIEW_USAGE_DASHBOARD, find=queries.find_connector)
    try:
        usage_range = parse_range(params)
        # The dashboard's filters too (user, model), so that its "same as JSON" link gives the same numbers.
        usage_slice = queries.UsageSlice.from_params(params)
    except (InvalidRange, InvalidFilter) as exc:
        raise ApiError(400, str(exc)) from None
    return usage_json(queries.connector_usage(connector.id, usage_range, with_api_keys=True, usage_slice=usage_slice))


@reads_from_replica
@json_endpoint({"GET": VIEW_USAGE_DASHBOARD})
async def connector_usage(request, connector_id: str):
    return JsonResponse(await sync_to_async(_connector_usage)(request.user, connector_id, request.GET))


def _plan_export(params) -> kibana_event_log.ExportPage:
    try:
        return kibana_event_log.plan_page(params, space_id=current_space_id.get())  # the URL's space only
    except kibana_event_log.ExportError as exc:
        raise ApiError(400, str(exc)) from None


@reads_from_replica
@json_endpoint({"GET": VIEW_USAGE_DASHBOARD})
async def events_ndjson(request):
    page = await sync_to_async(_plan_export)(request.GET)
    # Streamed either way; the iterator must match the server, or Django reads it whole into memory first.
    lines = kibana_event_log.andjson(page) if isinstance(request, ASGIRequest) else kibana_event_log.ndjson(page)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    response["X-Next-Cursor"] = page.next_cursor
    response["X-Export-Complete"] = "true" if page.complete else "false"
    return response
