"""A budget's figures: created halfway through a period it starts from what the period used (the event log), and
whether reaching it refuses calls is a choice made on the form, its effect stated."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.helpers.events import record
from usage.governance.enforcement.admission import budget_counter_key
from usage.governance.enforcement.counters import counter_store
from usage.governance.models import Budget

pytestmark = pytest.mark.django_db


def form(connector_id: str, **fields) -> dict:
    values = {"name": "Late budget", "scope": "connector", "connector_id": connector_id, "period": "month",
              "time_zone": "UTC", "unit": "tokens", "amount": "1000000", "soft_threshold_percent": "80",
              "hard_limit": "refuse", "enabled": "on"}
    return {**values, **fields}


def test_a_budget_created_mid_period_shows_what_the_period_used(client, connector_admin, make_connector):
    connector = make_connector(name="Busy")
    now = timezone.now()
    for minutes in (1, 2, 3):
        record(now - dt.timedelta(minutes=minutes), connector_id=connector.pk, total_tokens=500)
    record(now - dt.timedelta(days=40), connector_id=connector.pk, total_tokens=9999)  # an earlier period
    client.force_login(connector_admin)
    response = client.post("/usage/budgets/new/", form(connector.pk))
    assert response.status_code == 302
    budget = Budget.objects.get(name="Late budget")
    key, _, _ = budget_counter_key(budget, timezone.now())
    assert counter_store().values_now([key])[key] == 1500
    page = client.get("/usage/budgets/").content.decode()
    assert "1,500" in page
    # Saving again adds nothing: the counter is already up to date.
    client.post(f"/usage/budgets/{budget.pk}/edit/", form(connector.pk))
    assert counter_store().values_now([key])[key] == 1500


def test_refusing_is_an_explicit_choice_with_its_effect_stated(client, connector_admin, make_connector):
    connector = make_connector(name="Chosen")
    client.force_login(connector_admin)
    page = client.get("/usage/budgets/new/").content.decode()
    assert 'type="radio" name="hard_limit" value="refuse"' in page and "Only alert" in page
    assert "checked" not in page.split('name="hard_limit"')[1].split(">")[0]  # nothing chosen in advance
    missing = client.post("/usage/budgets/new/", form(connector.pk, hard_limit=""))
    assert missing.status_code == 200 and "This field is required" in missing.content.decode()
    client.post("/usage/budgets/new/", form(connector.pk, hard_limit="alert", name="Soft"))
    client.post("/usage/budgets/new/", form(connector.pk, hard_limit="on", name="Old script"))
    assert Budget.objects.get(name="Soft").hard_limit is False
    assert Budget.objects.get(name="Old script").hard_limit is True
    soft = Budget.objects.get(name="Soft")
    edit = client.get(f"/usage/budgets/{soft.pk}/edit/").content.decode()
    assert re.search(r'<input type="radio" name="hard_limit" value="alert"[^>]* checked', edit)


def test_a_cost_budget_catches_up_with_the_recorded_cost(make_connector):
    from usage.governance.pages.consumption import catch_up_with_the_period

    connector = make_connector(name="Costly")
    record(timezone.now() - dt.timedelta(minutes=1), connector_id=connector.pk, cost_nanos=2_500_000_000)
    budget = Budget.objects.create(scope="connector", connector_id=connector.pk, name="Money", period="day",
                                   unit="cost", amount=Decimal("10"))
    assert catch_up_with_the_period(budget) == 2_500_000_000
