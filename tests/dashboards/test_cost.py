"""Cost wherever tokens are shown: the dashboard (totals, chart, by user, model and API key), /usage/, both CSV
exports and GET /api/usage/connectors/<id>; and manage.py reprice_usage after a price correction."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from connectors.accounts.api_keys import create_api_key
from tests.conftest import basic_auth
from tests.helpers.events import record
from usage.governance.models import Price
from usage.models import ExecutionEvent, UsageDailyRollup, UsageHourlyTotal, UsageRollup

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
RANGE = "from=2026-11-20&to=2026-11-21"


@pytest.fixture
def priced(make_connector, operator):
    """Three calls: two priced (one with estimated tokens, one with an API key), one of a model without a price."""
    connector = make_connector(name="Costly")
    key, _ = create_api_key(operator, "ci")
    record(DAY, connector_id=connector.pk, user=operator, user_name="olivia", requested_model="gpt-4.1",
           prompt_tokens=1000, completion_tokens=500, cost_nanos=6_000_000, api_key=key)
    record(DAY + dt.timedelta(hours=1), connector_id=connector.pk, user_name="ann", requested_model="gpt-4.1",
           prompt_tokens=100, completion_tokens=50, cost_nanos=600_000, usage_source="estimated")
    record(DAY + dt.timedelta(hours=2), connector_id=connector.pk, user_name="ann", requested_model="house-llm",
           prompt_tokens=10, completion_tokens=5, cost_nanos=None)
    return connector, key


def test_the_dashboard_shows_cost_in_totals_chart_and_breakdowns(client, admin_user, priced):
    connector, key = priced
    client.force_login(admin_user)
    response = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}")
    html = response.content.decode()
    assert "Cost (estimated)" in html and '<div class="value" data-total="cost">0.0066 USD</div>' in html
    assert "1 requests used a model without a price" in html
    assert "chart-cost-over-time" in html
    report = response.context["report"]
    by_user = {row.key: row.sums.cost_nanos for row in report.by_user}
    assert by_user == {"olivia": 6_000_000, "ann": 600_000}
    by_model = {row.key: row.sums.cost_nanos for row in report.by_model}
    assert by_model == {"gpt-4.1": 6_600_000, "house-llm": 0}
    by_key = {row.key: (row.sums.requests, row.sums.cost_nanos) for row in report.by_api_key}
    assert by_key == {f"{key} of olivia": (1, 6_000_000), "": (2, 600_000)}
    assert "(no API key: browser or password)" in html
    api_key_table = html[html.index('data-breakdown="api_key"'):]
    assert '0.0006 USD <span class="badge">estimated</span>' in api_key_table  # the estimated call had no key


def test_the_overview_shows_each_connectors_cost(client, admin_user, priced):
    client.force_login(admin_user)
    html = client.get(f"/usage/?{RANGE}").content.decode()
    assert "0.0066 USD" in html and "estimated" in html and "+ 1 unpriced" in html


def test_the_json_api_gives_totals_cost_as_a_decimal_string_with_currency(client, analyst, priced):
    connector, key = priced
    response = client.get(f"/api/usage/connectors/{connector.pk}?{RANGE}", HTTP_AUTHORIZATION=basic_auth(analyst))
    body = response.json()
    assert body["totals"]["cost"] == {"amount": "0.0066", "currency": "USD", "estimated": True, "unpriced_requests": 1}
    assert body["totals"]["total_tokens"] == 1665  # existing keys are kept
    assert {row["user_name"]: row["cost"]["amount"] for row in body["by_user"]} == {"olivia": "0.0060", "ann": "0.0006"}
    assert {row["api_key"]: row["cost"]["amount"] for row in body["by_api_key"]} == {
        f"{key} of olivia": "0.0060", "": "0.0006"}
    assert sum(Decimal(point["cost"]["amount"]) for point in body["series"]) == Decimal("0.0066")


def test_the_series_csv_has_cost_columns(client, analyst, priced):
    connector, _ = priced
    client.force_login(analyst)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/usage/connectors/{connector.pk}/export.csv?{RANGE}")
                                           .content.decode())))
    assert sum(Decimal(row["cost"]) for row in rows) == Decimal("0.0066")
    busy = [row for row in rows if row["requests"] != "0"]
    assert [(row["cost"], row["cost_estimated"], row["unpriced_requests"]) for row in busy] == [
        ("0.006000000", "false", "0"), ("0.000600000", "true", "0"), ("0E-9", "false", "1")]
    assert {row["currency"] for row in rows} == {"USD"}


def test_the_raw_events_csv_has_each_events_cost_and_api_key(client, analyst, priced):
    connector, key = priced
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/{connector.pk}/events.csv?{RANGE}")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["cost"], row["cost_estimated"], row["api_key_id"]) for row in rows] == [
        ("0.006000000", "false", str(key.pk)), ("0.000600000", "true", ""), ("", "false", "")]
    assert {row["currency"] for row in rows} == {"USD"}


# -- reprice_usage ------------------------------------------------------------------------------------------------


def totals(connector_id: str) -> tuple[int, int, int]:
    def cost(model):
        return sum(model.objects.filter(connector_id=connector_id).values_list("cost_nanos", flat=True))

    return cost(UsageRollup), cost(UsageHourlyTotal), cost(UsageDailyRollup)


@pytest.mark.usefixtures("shipped_prices")
def test_a_price_correction_reprices_stored_costs_and_the_dashboards(client, admin_user, make_connector):
    connector = make_connector(name="Repriced")
    other = make_connector(name="Untouched")
    for connector_id in (connector.pk, other.pk):
        # Recorded with a wrong price: 1,000,000 prompt tokens of gpt-4.1 at 9.99 instead of the list 2.00.
        record(DAY, connector_id=connector_id, requested_model="gpt-4.1", prompt_tokens=1_000_000,
               completion_tokens=0, cost_nanos=9_990_000_000)
    outside = record(DAY + dt.timedelta(days=3), connector_id=connector.pk, requested_model="gpt-4.1",
                     prompt_tokens=1_000_000, completion_tokens=0, cost_nanos=9_990_000_000)
    assert totals(connector.pk) == (19_980_000_000,) * 3

    out = io.StringIO()
    call_command("reprice_usage", "--from", "2026-11-20", "--to", "2026-11-20", "--connector", connector.pk, stdout=out)
    assert "1 costs changed" in out.getvalue()
    # The shipped list price of gpt-4.1 (2.00 per million input tokens), in the events and every rollup.
    assert ExecutionEvent.objects.filter(connector_id=connector.pk, timestamp=DAY).get().cost_nanos == 2_000_000_000
    assert totals(connector.pk) == (11_990_000_000,) * 3
    assert ExecutionEvent.objects.get(pk=outside.pk).cost_nanos == 9_990_000_000  # outside the range
    assert totals(other.pk) == (9_990_000_000,) * 3  # another connector
    client.force_login(admin_user)
    html = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}").content.decode()
    assert '<div class="value" data-total="cost">2.0000 USD</div>' in html

    # Idempotent: a second run changes nothing.
    out = io.StringIO()
    call_command("reprice_usage", "--from", "2026-11-20", "--to", "2026-11-20", "--connector", connector.pk, stdout=out)
    assert "0 costs changed" in out.getvalue()
    assert totals(connector.pk) == (11_990_000_000,) * 3
    assert UsageRollup.objects.filter(connector_id=connector.pk).count() == 2


def test_a_new_price_version_applies_from_its_day_on_when_repricing(make_connector):
    connector = make_connector(name="Versions")
    before = record(DAY, connector_id=connector.pk, requested_model="house-llm", prompt_tokens=1_000_000,
                    completion_tokens=0, cost_nanos=None)
    after = record(DAY + dt.timedelta(days=1), connector_id=connector.pk, requested_model="house-llm",
                   prompt_tokens=1_000_000, completion_tokens=0, cost_nanos=None)
    for day, price in ((dt.date(2026, 11, 1), "3.00"), (dt.date(2026, 11, 21), "1.00")):
        Price.objects.create(model_pattern="house-*", valid_from=day, input_per_million=Decimal(price),
                             output_per_million=Decimal(price))
    call_command("reprice_usage", "--from", "2026-11-01", "--to", "2026-11-30", stdout=io.StringIO())
    assert ExecutionEvent.objects.get(pk=before.pk).cost_nanos == 3_000_000_000  # the version of its day
    assert ExecutionEvent.objects.get(pk=after.pk).cost_nanos == 1_000_000_000  # the newer version
    # The formerly unpriced requests are priced in the rollups too.
    assert sum(UsageHourlyTotal.objects.values_list("unpriced_requests", flat=True)) == 0
    assert totals(connector.pk) == (4_000_000_000,) * 3


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-11-30", "--to", "2026-11-01"], "--from must be before --to."),
    (["--from", "yesterday", "--to", "2026-11-01"], "--from: 'yesterday' is not an ISO 8601 date"),
])
def test_reprice_usage_refuses_a_bad_range(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("reprice_usage", *args, stdout=io.StringIO())
