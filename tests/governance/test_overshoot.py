"""Token budgets hold against calls that arrive at once: through a real uvicorn, with the counters in the database
and in Redis, each call reserves its prompt and its completion cap (or the budget's allowance) and is refused when
that does not fit in what is left (README, "Budgets and rate limits" and "Guarantees")."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import pytest

from connectors.accounts.api_keys import create_api_key
from tests.environment import redis_test_url  # noqa: E402
from usage.governance import alerts
from usage.governance.enforcement import counters
from usage.governance.models import Budget, Period, Scope, Unit
from usage.models import ExecutionEvent

REDIS_URL = redis_test_url()
MESSAGES = [{"role": "user", "content": "Write a long story"}]


@pytest.fixture(params=["database", "redis"])
def counter_store(request, settings, transactional_db):
    """The server's counters in the database or in Redis (under a prefix of this test's own)."""
    from django.db import connection

    if request.param == "database" and connection.vendor == "sqlite":
        # The shared in-memory SQLite of the tests answers "table is locked" instead of waiting when the event writer
        # and the counters write at once, and admission then admits unchecked (as in an outage of the store).
        pytest.skip("database counters under concurrent calls: PostgreSQL's case (CI runs it)")
    counters.reset_counter_store()
    if request.param == "redis":
        settings.REDIS_URL = REDIS_URL
        counters._store = counters.RedisStore(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}")
    else:
        settings.REDIS_URL = ""
    yield request.param
    alerts.stop_alert_sender()
    counters.reset_counter_store()


def burst(server, connector, key: str, count: int, **body) -> list[httpx.Response]:
    async def run():
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=count)) as client:
            return await asyncio.gather(*(
                client.post(f"{server.url}/api/openai/{connector.pk}/v1/chat/completions",
                            json={"messages": MESSAGES, **body}, headers={"Authorization": f"Bearer {key}"})
                for _ in range(count)))

    return asyncio.run(run())


def spent(connector) -> int:
    return sum(ExecutionEvent.objects.filter(connector_id=connector.pk).values_list("total_tokens", flat=True))


def test_calls_at_once_that_set_max_tokens_never_pass_the_budget(
        counter_store, asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    # A model that would write 5,000 tokens, stopped by each call's max_tokens of 1,000.
    connector = make_connector(api_url=fake_openai.url("long-5000"))
    Budget.objects.create(name="Story budget", scope=Scope.CONNECTOR, connector_id=connector.pk, period=Period.DAY,
                          unit=Unit.TOKENS, amount=Decimal(10_000))
    key = create_api_key(operator, "stories")[1]
    responses = burst(asgi_live_server, connector, key, 40, max_tokens=1000)
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    assert 1 <= admitted <= 10_000 // 1000 and statuses.count(429) == 40 - admitted
    assert len(fake_openai.requests) == admitted  # nothing else was sent
    refusal = next(r.json()["error"] for r in responses if r.status_code == 429)
    assert refusal["type"] == "insufficient_quota" and "(its prompt and its max_tokens)" in refusal["message"]
    recorded_events.wait_for(40)
    assert admitted * 1000 < spent(connector) <= 10_000  # every admitted call wrote 1,000 tokens: within the budget


def test_a_provider_reporting_200000_tokens_a_call_cannot_overshoot_a_small_budget(
        counter_store, asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    """A hard budget of 1,000 tokens let 13 concurrent calls through when only the prompt was reserved, and
    2,600,000 tokens were spent. A call that sets no cap now reserves the budget's allowance too (4,096 tokens by
    default), which does not fit: nothing is sent."""
    connector = make_connector(api_url=fake_openai.url("usage-200000"))
    Budget.objects.create(name="Small", scope=Scope.CONNECTOR, connector_id=connector.pk, period=Period.DAY,
                          unit=Unit.TOKENS, amount=Decimal(1000))
    key = create_api_key(operator, "burst")[1]
    statuses = [r.status_code for r in burst(asgi_live_server, connector, key, 13)]
    assert statuses == [429] * 13
    assert fake_openai.requests == []
    recorded_events.wait_for(13)
    assert spent(connector) == 0


def test_past_its_reservation_a_call_overshoots_by_its_excess_only(
        counter_store, asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    """The README's bound: what a period counts ends above the budget by at most what the admitted calls used
    beyond their reservations. Here every call sets no cap, reserves its prompt and an allowance of 1,000 tokens,
    and is reported 200,000 tokens: at most 10,000 // 1,000 calls are admitted, however many come at once."""
    connector = make_connector(api_url=fake_openai.url("usage-200000"))
    Budget.objects.create(name="Allowance", scope=Scope.CONNECTOR, connector_id=connector.pk, period=Period.DAY,
                          unit=Unit.TOKENS, amount=Decimal(10_000), completion_allowance=1000)
    key = create_api_key(operator, "burst")[1]
    statuses = [r.status_code for r in burst(asgi_live_server, connector, key, 40)]
    admitted = statuses.count(200)
    assert 1 <= admitted < 10_000 // 1000 and statuses.count(429) == 40 - admitted
    recorded_events.wait_for(40)
    assert spent(connector) == admitted * 200_000
    reservation = 1000 + len(fake_openai.requests[0].body) // 4  # the allowance and the prompt's estimate
    assert spent(connector) - 10_000 <= admitted * (200_000 - reservation)
