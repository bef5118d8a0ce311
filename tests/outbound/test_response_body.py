"""How a provider's non-streamed answer is read, against a real uvicorn and a real upstream: in one read when it
declares its length (connectors/outbound/transport.py, ``read_whole``), by chunks when it is compressed, and a body
cut short is a broken connection, answered and recorded like one."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import basic_auth
from usage.models import ExecutionEvent

pytest_plugins = ["tests.servers.asgi_server"]

RUN = {"params": {"subAction": "run", "subActionParams": {
    "body": json.dumps({"messages": [{"role": "user", "content": "Hello there"}]})}}}


def execute(server, connector, user) -> httpx.Response:
    return httpx.post(f"{server.url}/api/actions/connector/{connector.pk}/_execute", json=RUN, timeout=20,
                      headers={"Authorization": basic_auth(user), "kbn-xsrf": "true"})


@pytest.mark.parametrize("scenario", ["ok", "gzip"])
def test_a_whole_answer_is_read_plain_or_compressed(asgi_live_server, operator, make_connector, fake_openai, scenario):
    connector = make_connector(api_url=fake_openai.url(scenario))
    answer = execute(asgi_live_server, connector, operator).json()
    assert answer["status"] == "ok"
    assert answer["data"]["choices"][0]["message"]["content"] == "  You said: Hello there  "
    event = ExecutionEvent.objects.get()
    assert event.outcome == "success" and event.total_tokens == answer["data"]["usage"]["total_tokens"]


def test_a_body_cut_short_is_a_broken_connection_and_recorded_once(asgi_live_server, operator, make_connector,
                                                                   fake_openai):
    connector = make_connector(api_url=fake_openai.url("cut-body"))
    answer = execute(asgi_live_server, connector, operator).json()
    assert answer["status"] == "error"
    assert f"ECONNRESET - The connection to 127.0.0.1:{fake_openai.port} broke: Response payload is not completed" in (
        answer["service_message"])
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and "ECONNRESET - The connection to" in event.error_message
    # The next call is served: the broken connection was not given back to the pool.
    healthy = make_connector(api_url=fake_openai.url("ok"))
    assert execute(asgi_live_server, healthy, operator).json()["status"] == "ok"
