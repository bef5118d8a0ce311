"""hundreds of executions at once, with HTTP Basic, against a slow provider, through the real server.

The app runs under uvicorn (tests/servers/asgi_server.py) with the event writer of a production server started, and the
calls go over real sockets to the OpenAI-shaped test server, which answers only once all of them are in flight at
the same time (scenario ``gather-<n>``): calls run one after another would never be answered.
bench/concurrency.py measures the same on the production setup (two workers, PostgreSQL).
"""

import asyncio
import json

from bench.loadgen import Connection
from connectors.api import auth
from tests.conftest import basic_auth
from tests.helpers.execute import execute_path, post_at_once, run_bytes
from usage.models import ExecutionEvent, UsageRollup

CONCURRENT = 200


def test_concurrent_executions_with_basic_auth_all_succeed_and_produce_exactly_one_event_each(
    asgi_live_server, event_writer, make_connector, operator, fake_openai, monkeypatch
):
    connector = make_connector(api_url=fake_openai.url(f"gather-{CONCURRENT}"))
    verifications = []
    original_verify = auth._verify_basic
    monkeypatch.setattr(auth, "_verify_basic", lambda *args: verifications.append(args) or original_verify(*args))
    headers = {"Content-Type": "application/json", "kbn-xsrf": "true", "Authorization": basic_auth(operator)}

    bodies = [run_bytes(f"request {i}") for i in range(CONCURRENT)]
    responses = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), bodies, headers))

    assert [r.status for r in responses] == [200] * CONCURRENT
    envelopes = [json.loads(r.body) for r in responses]
    assert {e["status"] for e in envelopes} == {"ok"}
    # Each caller got the answer to its own request.
    assert [e["data"]["choices"][0]["message"]["content"].strip() for e in envelopes] == [
        f"You said: request {i}" for i in range(CONCURRENT)
    ]
    # Group commit: every response was sent after its event's commit.
    events = ExecutionEvent.objects.filter(connector_id=str(connector.pk))
    assert events.count() == CONCURRENT
    assert set(events.values_list("outcome", flat=True)) == {"success"}
    assert set(events.values_list("user_name", flat=True)) == {operator.username}
    assert sum(UsageRollup.objects.filter(connector_id=str(connector.pk)).values_list("requests", flat=True)) == CONCURRENT
    # The cold credential cache was filled by one password check, not one per request.
    assert len(verifications) == 1
    # They ran side by side: the upstream answered (with 200, not its 503) only once all of them were in flight.


def test_an_api_call_with_credentials_gets_the_security_headers(asgi_live_server, operator):
    async def call():
        connection = Connection("127.0.0.1", asgi_live_server.port)
        try:
            return await connection.request("GET", "/api/actions/connector_types", b"", {"kbn-xsrf": "true", "Authorization": basic_auth(operator)})
        finally:
            await connection.close()

    response = asyncio.run(call())

    assert response.status == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
