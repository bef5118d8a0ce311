"""Usage as JSON for automation: ``GET /api/usage/connectors/<id>?from=<ISO>&to=<ISO>``, with the connector API's
authentication and error shape. It lives with the other JSON endpoints (usage/ itself never imports the API, see
.importlinter); the figures come from usage.queries, as the dashboards' do.

Same query parameters as the dashboard (``range``, ``from``, ``to``, ``tz``, and the filters ``user``, ``model``); ``from`` and ``to`` in the answer
are the effective range (widened to whole hours), and ``bucket`` values are ISO 8601 in the requested zone.
"""

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from connectors.api.endpoint import ApiError, json_endpoint
from connectors.lookup import get_connector_or_404
from usage import queries
from usage.permissions import VIEW_USAGE_DASHBOARD
from usage.ranges import InvalidRange, iso, parse_range


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


def _connector_usage(user, connector_id: str, params) -> dict:
    connector = get_connector_or_404(user, connector_id, VIEW_USAGE_DASHBOARD, find=queries.find_connector)
    try:
        usage_range = parse_range(params)
    except InvalidRange as exc:
        raise ApiError(400, str(exc)) from None
    # The dashboard's filters too (user, model), so that its "same as JSON" link gives the same numbers.
    return usage_json(queries.connector_usage(connector.id, usage_range, usage_slice=queries.UsageSlice.from_params(params)))


@json_endpoint({"GET": VIEW_USAGE_DASHBOARD})
async def connector_usage(request, connector_id: str):
    return JsonResponse(await sync_to_async(_connector_usage)(request.user, connector_id, request.GET))
