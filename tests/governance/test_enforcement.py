"""Budgets, rate limits and costs on the execution path, against a real uvicorn and a real upstream: refusals
answered in Kibana's envelope and OpenAI's 429, each recorded as a rejected event with zero tokens; costs priced
when events are recorded; threshold alerts raised once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx
import pytest

from connectors.accounts.api_keys import create_api_key
from tests.helpers.execute import envelope, execute_over_http
from usage.governance import alerts
from usage.governance.enforcement.counters import reset_counter_store
from usage.governance.models import Alert, Budget, Period, Price, RateLimit, Scope, Unit
from usage.governance.pricing.prices import forget_table
from usage.models import ExecutionEvent

MESSAGES = [{"role": "user", "content": "Hello world"}]


@pytest.fixture(autouse=True)
def _database_counters(settings, transactional_db):
    """Database counters and a fresh price table; the alert sender stops before the test database goes away."""
    settings.REDIS_URL = ""
    reset_counter_store()
    forget_table()
    yield
    alerts.stop_alert_sender()
    reset_counter_store()
    forget_table()


def test_a_used_up_budget_refuses_with_kibanas_envelope_and_records_a_rejected_event(
        asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    # A call reserves its prompt (about 20 tokens) and the allowance of 50: the first fits in 80 tokens, and the
    # second does not, before or after the first is settled with its actual usage (about 20 tokens).
    Budget.objects.create(name="Pilot tokens", scope=Scope.CONNECTOR, connector_id=connector.pk, period=Period.MONTH,
                          unit=Unit.TOKENS, amount=Decimal(80), completion_allowance=50)
    first = envelope(execute_over_http(asgi_live_server, connector, user=operator))
    assert first["status"] == "ok"
    sent_before = len(fake_openai.requests)
    refused_response = execute_over_http(asgi_live_server, connector, user=operator)
    refused = envelope(refused_response)
    assert refused["status"] == "error"
    # Kibana's envelope keys only; when the budget resets is the Retry-After header.
    assert refused["retry"] is True and "retry_after" not in refused
    assert int(refused_response.headers["retry-after"]) >= 1
    assert 'Budget "Pilot tokens"' in refused["message"] and "It resets at" in refused["message"]
    assert len(fake_openai.requests) == sent_before  # nothing was sent
    recorded_events.wait_for(2)
    alerts.stop_alert_sender()  # the refusal's alert is written by then (SQLite's test database has one writer)
    event = ExecutionEvent.objects.order_by("-pk").first()
    assert (event.outcome, event.total_tokens, event.cost_nanos, event.upstream_status) == ("failure", 0, 0, None)
    assert event.error_message == refused["message"]


def test_the_openai_endpoint_answers_429_insufficient_quota_and_rate_limit_exceeded(
        asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    key = create_api_key(operator, "ci")[1]
    url = f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id=connector.pk, requests_per_minute=1)
    assert httpx.post(url, json={"messages": MESSAGES}, headers=headers, timeout=20).status_code == 200
    limited = httpx.post(url, json={"messages": MESSAGES}, headers=headers, timeout=20)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    recorded_events.wait_for(2)
    alerts.stop_alert_sender()  # the refusal's alert is written by then (SQLite's test database has one writer)
    RateLimit.objects.all().delete()
    Budget.objects.create(name="Key budget", scope=Scope.API_KEY, api_key_id=ExecutionEvent.objects.first().api_key_id,
                          period=Period.DAY, unit=Unit.TOKENS, amount=Decimal(0))
    quota = httpx.post(url, json={"messages": MESSAGES, "stream": True}, headers=headers, timeout=20)
    assert quota.status_code == 429, quota.text
    assert quota.json()["error"]["type"] == "insufficient_quota"
    assert 'Budget "Key budget" (API key ci' in quota.json()["error"]["message"]
    recorded_events.wait_for(3)
    assert ExecutionEvent.objects.filter(outcome="failure", total_tokens=0).count() == 2
    assert set(ExecutionEvent.objects.values_list("api_key__name", flat=True)) == {"ci"}


def test_every_event_is_priced_at_the_price_of_its_model(asgi_live_server, recorded_events, operator,
                                                        make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    # gpt-4.1: the OpenAI connector's default model (Kibana's), which the request does not name.
    Price.objects.create(model_pattern="gpt-4.1", valid_from=dt.date(2020, 1, 1), input_per_million=Decimal("1000000"),
                         output_per_million=Decimal("2000000"), connector_id=connector.pk)
    assert envelope(execute_over_http(asgi_live_server, connector, user=operator))["status"] == "ok"
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    # A negotiated price of 1 (resp. 2) currency units per token: the cost is exact, in nanos.
    expected = event.prompt_tokens * 10**9 + event.completion_tokens * 2 * 10**9
    assert event.cost_nanos == expected > 0


def test_a_cost_budget_counts_the_actual_cost_and_alerts_once_at_its_threshold(
        asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    Price.objects.create(model_pattern="gpt-4.1", valid_from=dt.date(2020, 1, 1), input_per_million=Decimal("1000000"),
                         output_per_million=Decimal("1000000"), connector_id=connector.pk)
    Budget.objects.create(name="Spend", scope=Scope.USER, user=operator, period=Period.DAY, unit=Unit.COST,
                          amount=Decimal(1000), soft_threshold_percent=1, hard_limit=False)
    for _ in range(3):
        assert envelope(execute_over_http(asgi_live_server, connector, user=operator))["status"] == "ok"
    recorded_events.wait_for(3)
    alerts.stop_alert_sender()  # the sender writes what the execution path queued, then stops
    assert list(Alert.objects.values_list("kind", flat=True)) == ["budget_threshold"]
    assert 'Budget "Spend" (user olivia) reached' in Alert.objects.get().message
