""""My usage" (/usage/me/): every signed-in user sees their own calls, tokens and cost, per connector and API key,
with the budgets and rate limits that count them; nobody else's."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from tests.helpers.events import record
from usage.governance.enforcement.admission import budget_counter_key
from usage.governance.enforcement.counters import counter_store
from usage.governance.models import Budget, RateLimit

pytestmark = pytest.mark.django_db


@pytest.fixture
def calls(make_connector, outsider, operator):
    """The outsider (no role at all) made calls on two connectors, one with an API key; the operator made one."""
    now = timezone.now()
    first, second = make_connector(name="First"), make_connector(name="Second")
    key, _ = create_api_key(outsider, "laptop")
    record(now - dt.timedelta(hours=2), connector_id=first.pk, user=outsider, user_name="otto", prompt_tokens=100,
           completion_tokens=20, cost_nanos=1_500_000_000, api_key=key)
    record(now - dt.timedelta(hours=1), connector_id=second.pk, user=outsider, user_name="otto", prompt_tokens=10,
           completion_tokens=5, cost_nanos=250_000_000, outcome="failure")
    record(now - dt.timedelta(days=20), connector_id=first.pk, user=outsider, user_name="otto", prompt_tokens=7000,
           completion_tokens=0, cost_nanos=9_000_000_000)  # outside the default 7 days
    record(now - dt.timedelta(hours=1), connector_id=first.pk, user=operator, user_name="olivia", prompt_tokens=999,
           completion_tokens=1, cost_nanos=77_000_000_000)
    return first, second, key


def test_anonymous_users_are_sent_to_login(client):
    response = client.get("/usage/me/")
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("persona", ["admin", "connector_admin", "operator", "analyst", "outsider"])
def test_every_signed_in_user_may_see_their_usage(client, personas, persona):
    client.force_login(personas[persona])
    assert client.get("/usage/me/").status_code == 200


def test_the_home_page_of_a_user_without_a_role_points_to_my_usage(client, outsider):
    client.force_login(outsider)
    assert 'on <a href="/usage/me/">My usage</a>' in client.get("/").content.decode()


def test_a_user_without_any_role_sees_their_own_calls_tokens_and_cost(client, outsider, calls):
    first, second, key = calls
    client.force_login(outsider)
    response = client.get("/usage/me/")
    usage = response.context["usage"]
    assert (usage.totals.requests, usage.totals.failures, usage.totals.total_tokens, usage.totals.cost_nanos) == (
        2, 1, 135, 1_750_000_000)
    assert [(row.label, row.sums.requests, row.sums.cost_nanos) for row in usage.by_connector] == [
        ("First", 1, 1_500_000_000), ("Second", 1, 250_000_000)]
    assert [(row.label, row.sums.cost_nanos) for row in usage.by_api_key] == [
        (str(key), 1_500_000_000), ("Without an API key (browser or password)", 250_000_000)]
    html = response.content.decode()
    assert "1.7500 USD" in html and "olivia" not in html and "77.0000" not in html


def test_the_range_picker_bounds_my_usage(client, outsider, calls):
    client.force_login(outsider)
    usage = client.get("/usage/me/?range=30d").context["usage"]
    assert usage.totals.requests == 3 and usage.totals.cost_nanos == 10_750_000_000
    response = client.get("/usage/me/?range=lifetime")
    assert response.status_code == 400 and "unknown range" in response.content.decode()


def test_my_budgets_and_my_keys_budgets_show_what_is_left(client, outsider, operator, calls):
    _, _, key = calls
    mine = Budget.objects.create(scope="user", user=outsider, name="Otto monthly", unit="cost", amount=Decimal("10"))
    Budget.objects.create(scope="api_key", api_key=key, name="Laptop key daily", period="day", unit="tokens",
                          amount=Decimal("5000"))
    Budget.objects.create(scope="user", user=operator, name="Olivia monthly", unit="tokens", amount=Decimal("1"))
    RateLimit.objects.create(scope="api_key", api_key=key, requests_per_minute=30)
    counter_key, _, end = budget_counter_key(mine, timezone.now())
    counter_store().add_now([(counter_key, 2_500_000_000, end)])
    client.force_login(outsider)
    html = client.get("/usage/me/").content.decode()
    assert "Otto monthly" in html and "Laptop key daily" in html and "Olivia monthly" not in html
    assert "2.5000 USD" in html and "7.5000 USD" in html  # used and left
    assert "0 of 30 (30 left)" in html
    # A user reads their budgets but cannot change them.
    assert "/usage/budgets/" not in html.split("<main")[1]


def test_my_usage_reads_events_through_the_user_and_time_index(client, outsider, calls):
    """The query filters on user and time only, which the (user, timestamp) index of migration usage/0004 serves."""
    client.force_login(outsider)
    with CaptureQueriesContext(connection) as queries:
        client.get("/usage/me/")
    event_queries = [q["sql"] for q in queries.captured_queries if "usage_executionevent" in q["sql"]]
    assert len(event_queries) == 1
    assert '"user_id" =' in event_queries[0] and '"timestamp" >=' in event_queries[0]
    indexes = connection.introspection.get_constraints(connection.cursor(), "usage_executionevent")
    assert indexes["event_user_time"]["columns"] == ["user_id", "timestamp"]
