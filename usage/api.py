"""JSON for automation: ``GET /api/usage/connectors/<id>?from=<ISO>&to=<ISO>``, with the connector API's auth.

Same query parameters as the dashboard (``range``, ``from``, ``to``, ``tz``); ``from`` and ``to`` in the answer
are the effective range (widened to whole hours), and ``bucket`` values are ISO 8601 in the requested zone.
"""

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from connectors.api.endpoint import ApiError, api_endpoint
from usage import queries
from usage.ranges import InvalidRange, iso, parse_range

VIEW_USAGE = "usage.view_usage_dashboard"


def usage_json(report: queries.UsageReport) -> dict:
    """The answer's shape: connector_id, from, to, totals, series, by_user, by_model."""
    tz = report.range.tz
    return {
        "connector_id": report.connector_id,
        "from": iso(report.range.start, tz),
        "to": iso(report.range.end, tz),
        "totals": report.totals.api_dict(),
        "series": [
            {
                "bucket": iso(point.bucket, tz),
                "prompt_tokens": point.sums.prompt_tokens,
                "completion_tokens": point.sums.completion_tokens,
                "total_tokens": point.sums.total_tokens,
                "requests": point.sums.requests,
                "failures": point.sums.failures,
            }
            for point in report.series
        ],
        "by_user": [{"user_name": row.key, **row.sums.api_dict()} for row in report.by_user],
        "by_model": [{"model": row.key, **row.sums.api_dict()} for row in report.by_model],
    }


def _connector_usage(connector_id: str, params) -> dict:
    connector = queries.find_connector(connector_id)
    if connector is None:
        raise ApiError(404, f"Saved object [action/{connector_id}] not found")
    try:
        usage_range = parse_range(params)
    except InvalidRange as exc:
        raise ApiError(400, str(exc)) from None
    return usage_json(queries.connector_usage(connector.id, usage_range))


@api_endpoint({"GET": VIEW_USAGE})
async def connector_usage(request, connector_id: str):
    return JsonResponse(await sync_to_async(_connector_usage)(connector_id, request.GET))
