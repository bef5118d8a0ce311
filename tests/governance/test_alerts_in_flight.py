"""A budget's alerts count what calls used, not what running calls reserved (usage/governance/enforcement/admission.py,
``InFlight``): a call's estimate (its completion allowance) can pass a budget that its actual use does not.

Against the database's counters, with admission and settlement as the execution path calls them: a second call is
admitted, and still running, when the first one is settled and its alerts raised. Before the fix the first call's
settlement announced the budget used up (the counter held the second call's estimate); this was seen on a fast
machine in tests/governance/test_enforcement.py, where sequential calls come within the settlement window.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from usage.governance import alerts
from usage.governance.enforcement import admission
from usage.governance.enforcement.counters import reset_counter_store
from usage.governance.models import Alert, AlertKind, Budget, Period, Scope, Unit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _database_counters(settings):
    settings.REDIS_URL = ""
    reset_counter_store()
    yield
    alerts.stop_alert_sender()
    reset_counter_store()


def test_the_estimate_of_a_running_call_does_not_make_a_budget_used_up(django_user_model):
    user = django_user_model.objects.create_user("ines", password="x")
    # Each call reserves its prompt (a few tokens) and an allowance of 990: one estimate alone passes the budget.
    budget = Budget.objects.create(name="Tokens", scope=Scope.USER, user=user, period=Period.DAY, unit=Unit.TOKENS,
                                   amount=Decimal(1000), completion_allowance=990, soft_threshold_percent=1,
                                   hard_limit=False)

    async def two_calls():
        first = await admission.admit("conn", user.pk, None, request_bytes=40)
        second = await admission.admit("conn", user.pk, None, request_bytes=40)  # still running below
        used = await admission.settle(first, total_tokens=20, cost=None)
        admission.alert_on_thresholds(first, used, connector_id="conn")
        return first, second, used

    first, second, used = asyncio.run(two_calls())

    [key] = first.budgets
    assert first.budgets[key] == budget
    assert used[key] == 20 + second.token_charges[0].amount  # the counter holds the running call's estimate
    alerts.stop_alert_sender()
    assert list(Alert.objects.values_list("kind", flat=True)) == [AlertKind.BUDGET_THRESHOLD]  # 2 %, not used up
    assert "reached 2%" in Alert.objects.get().message

    asyncio.run(admission.settle(second, total_tokens=30, cost=None))
    assert admission.in_flight.held(key) == 0  # nothing left held once both are settled
