"""From a call to the pages: an application calls a connector with its API key through a real uvicorn server, and
the call's cost (priced when recorded) and its budget's consumption (settled after the call) show on My usage, the
budgets page and the connector's dashboard."""

import datetime as dt
from decimal import Decimal

import httpx
import pytest

from connectors.accounts.api_keys import create_api_key
from usage.governance import alerts
from usage.governance.enforcement.counters import reset_counter_store
from usage.governance.models import Budget, Price
from usage.governance.pricing.prices import forget_table
from usage.models import ExecutionEvent


@pytest.fixture(autouse=True)
def _database_counters(settings, transactional_db):
    settings.REDIS_URL = ""
    reset_counter_store()
    forget_table()
    yield
    alerts.stop_alert_sender()
    reset_counter_store()
    forget_table()


def test_a_keyed_call_shows_its_cost_on_my_usage_the_budgets_page_and_the_dashboard(
        asgi_live_server, recorded_events, client, operator, admin_user, make_connector, fake_openai):
    connector = make_connector(name="Metered", api_url=fake_openai.url("ok"))
    # A negotiated price (it beats the shipped list price) of one currency unit per input token and two per output
    # token: the cost is easy to check from the event.
    Price.objects.create(model_pattern="gpt-4*", valid_from=dt.date(2020, 1, 1), input_per_million=Decimal("1000000"),
                         output_per_million=Decimal("2000000"), connector_id=connector.pk)
    key, plaintext = create_api_key(operator, "batch job")
    Budget.objects.create(name="Batch job money", scope="api_key", api_key=key, unit="cost", amount=Decimal("1000"))
    response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 100},
                          headers={"Authorization": f"Bearer {plaintext}"}, timeout=20)
    assert response.status_code == 200
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    cost = event.prompt_tokens + 2 * event.completion_tokens
    assert event.api_key == key and event.cost_nanos == cost * 10**9 > 0
    shown = f"{cost}.0000 USD"

    client.force_login(operator)
    html = client.get("/usage/me/").content.decode()
    assert html.count(shown) >= 3  # the total, the connector's row, the key's row
    assert "batch job" in html and "Batch job money" in html
    assert f"{1000 - cost}.0000 USD" in html  # what is left of the key's budget, from the settled counter

    client.force_login(admin_user)
    assert f"{1000 - cost}.0000 USD" in client.get("/usage/budgets/").content.decode()
    dashboard = client.get(f"/usage/connectors/{connector.pk}/")
    assert f'data-total="cost">{shown}<' in dashboard.content.decode()
    assert [(row.key, row.sums.cost_nanos) for row in dashboard.context["report"].by_api_key] == [
        (f"{key} of {operator.username}", cost * 10**9)]
