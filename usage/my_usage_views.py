""""My usage" (/usage/me/): every signed-in user, with or without a role, sees their own calls, tokens and cost
across connectors and per API key, and the budgets and rate limits that count them with what is left."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from usage.governance.consumption import user_rules
from usage.my_usage import my_usage
from usage.ranges import InvalidRange, parse_range
from usage.views import bad_range, range_context


@login_required
def my_usage_page(request):
    try:
        usage_range = parse_range(request.GET)
    except InvalidRange as exc:
        return bad_range(request, exc)
    budgets, limits = user_rules(request.user)
    return render(request, "usage/my_usage.html", {
        **range_context(request, usage_range),
        "usage": my_usage(request.user, usage_range),
        "budgets": budgets,
        "limits": limits,
    })
