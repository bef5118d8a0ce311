""""My usage" (/usage/me/): every signed-in user, with or without a role, sees their own calls, tokens and cost
across connectors and per API key, and the budgets and rate limits that count them with what is left."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from connectors.replicas import reads_from_replica
from usage.dashboards.dashboard_views import parse_range_or_default, range_context
from usage.dashboards.drill_down import DrillDown
from usage.dashboards.my_usage import my_usage
from usage.dashboards.queries import UsageSlice
from usage.governance.pages.consumption import user_rules


@reads_from_replica
@login_required
def my_usage_page(request):
    usage_range, range_error = parse_range_or_default(request)  # a bad range is shown on the range form
    budgets, limits = user_rules(request.user)
    usage = my_usage(request.user, usage_range)
    links = DrillDown(usage_range, UsageSlice())
    for row in usage.by_connector:
        row.logs_url = links.connector_logs(row.key)  # the Logs tab shows this user their own calls
    return render(request, "usage/my_usage.html", {
        **range_context(request, usage_range, error=range_error),
        "usage": usage,
        "budgets": budgets,
        "limits": limits,
    }, status=400 if range_error else 200)
