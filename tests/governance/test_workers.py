"""Rate limits hold across server processes: 500 calls at once to 4 uvicorn workers on PostgreSQL, with the
counters in the database and in Redis. Exactly the limit is admitted, every refusal is answered 429 and every
call, admitted or refused, is one event."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.db import connection

from bench.harness import free_port, stop, wait_for_port
from connectors.accounts.api_keys import create_api_key
from usage.governance.models import RateLimit, Scope
from usage.models import ExecutionEvent

ROOT = Path(__file__).resolve().parents[2]
CALLS = 500
LIMIT = 137
WORKERS = 4

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'",
                       reason="several server processes share one database: PostgreSQL's case (CI runs it)"),
]


def start_workers(redis_url: str) -> tuple[subprocess.Popen, int]:
    settings = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "ENV_FILE": "",
        "DEBUG": "false",
        "SECRET_KEY": os.environ["SECRET_KEY"],
        "CONNECTORS_ENCRYPTION_KEYS": os.environ["CONNECTORS_ENCRYPTION_KEYS"],
        "DATABASE_URL": f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}",
        "REDIS_URL": redis_url,
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "connectors_admin.asgi:application", "--host", "127.0.0.1", "--port",
         str(port), "--workers", str(WORKERS), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    wait_for_port(port, process, timeout=60)
    return process, port


def wait_for_a_fresh_minute() -> None:
    """Rate limits count per calendar minute: start the burst early in one, so that all of it falls in it."""
    second = dt.datetime.now(dt.UTC).second
    if second > 40:
        time.sleep(60 - second + 0.2)


async def burst(url: str, key: str) -> list[int]:
    limits = httpx.Limits(max_connections=CALLS)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one() -> int:
            response = await client.post(url, json={"messages": [{"role": "user", "content": "Hi"}]},
                                         headers={"Authorization": f"Bearer {key}"})
            return response.status_code

        return await asyncio.gather(*(one() for _ in range(CALLS)))


from tests.environment import redis_test_url  # noqa: E402


@pytest.mark.parametrize("redis_url", ["", redis_test_url(1)], ids=["database-counters", "redis-counters"])
def test_four_workers_admit_exactly_the_rate_limit(redis_url, operator, make_connector, fake_openai):
    if redis_url:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    connector = make_connector(api_url=fake_openai.url("ok"))
    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id=connector.pk, requests_per_minute=LIMIT)
    key = create_api_key(operator, "burst")[1]
    process, port = start_workers(redis_url)
    try:
        url = f"http://127.0.0.1:{port}/api/openai/{connector.pk}/v1/chat/completions"
        httpx.get(f"http://127.0.0.1:{port}/api/openai/{connector.pk}/v1/models",
                  headers={"Authorization": f"Bearer {key}"}, timeout=30)  # every worker has started
        sent_before = len(fake_openai.requests)
        wait_for_a_fresh_minute()
        statuses = asyncio.run(burst(url, key))
        deadline = time.monotonic() + 60
        while ExecutionEvent.objects.count() < CALLS and time.monotonic() < deadline:
            time.sleep(0.2)  # the workers commit in their own processes: there is nothing to await here
    finally:
        stop(process)
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == CALLS - LIMIT
    assert len(fake_openai.requests) - sent_before == LIMIT
    assert ExecutionEvent.objects.count() == CALLS
    refused = ExecutionEvent.objects.filter(outcome="failure", error_message__startswith="Rate limit reached")
    assert refused.count() == CALLS - LIMIT
    assert not refused.exclude(total_tokens=0).exists()
