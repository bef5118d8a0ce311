"""a provider that echoes the key it was sent never gets it past the gateway.

A real uvicorn in front of a hostile upstream (tests/servers/fake_openai.py ``echo-key*`` scenarios) that echoes the key
in headers, in 200 and error bodies (raw, JSON-escaped and URL-encoded), spelled across two stream chunks, and in a
malformed status line. No form of the key may reach a response, an event, the CSV export or a log line.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote, quote_plus

import httpx
import pytest

from connectors.accounts.api_keys import create_api_key
from connectors.outbound.masking import StreamMasker, mask_secret
from tests.conftest import basic_auth
from usage.models import ExecutionEvent

pytest_plugins = ["tests.servers.asgi_server"]

# A key with the characters that change when echoed JSON-escaped (" and \) or URL-encoded (/ + &).
KEY = 'sk-quote"back\\slash/plus+amp&0123456789'


def assert_no_key(text: str) -> None:
    for form in [KEY, json.dumps(KEY)[1:-1], quote(KEY, safe=""), quote(KEY), quote_plus(KEY)]:
        assert form not in text, f"the key leaked as {form!r}"
    assert "back\\slash" not in text and "back\\\\slash" not in text and "back%5Cslash" not in text


def everything_in(response: httpx.Response) -> str:
    return "\n".join(f"{name}: {value}" for name, value in response.headers.items()) + "\n" + response.text


@pytest.fixture
def key_of(operator):
    return create_api_key(operator, "masking")[1]


@pytest.fixture
def echo_connector(make_connector, fake_openai):
    def make(scenario: str):
        return make_connector(api_url=fake_openai.url(scenario), api_key=KEY)

    return make


@pytest.fixture
def log_text(caplog):
    caplog.set_level(logging.DEBUG)
    return lambda: "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)


def openai_call(server, connector, key, **body):
    return httpx.post(f"{server.url}/api/openai/{connector.pk}/v1/chat/completions", timeout=20,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"messages": [{"role": "user", "content": "hi"}], **body})


def execute_call(server, connector, user, **sub_params):
    params = {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                                                       **sub_params}}
    return httpx.post(f"{server.url}/api/actions/connector/{connector.pk}/_execute", json={"params": params}, timeout=20,
                      headers={"kbn-xsrf": "true", "Authorization": basic_auth(user)})


def test_mask_secret_masks_the_raw_json_escaped_and_url_encoded_forms():
    text = f"a {KEY} b {json.dumps(KEY)} c {quote(KEY, safe='')} d {quote_plus(KEY)}"
    masked = mask_secret(text, KEY)
    assert_no_key(masked)
    assert masked.count("***") == 4
    assert mask_secret(text.encode(), KEY) == masked.encode()


def test_a_key_spelled_across_chunks_is_masked_and_nothing_else_is_held_back():
    masker = StreamMasker(KEY)
    data = f"data: {json.dumps({'k': KEY})}\n\n".encode()
    out = b"".join(masker.feed(data[i:i + 5]) for i in range(0, len(data), 5)) + masker.close()
    assert out == b'data: {"k": "***"}\n\n'
    assert StreamMasker(KEY).feed(b"data: no key here\n\n") == b"data: no key here\n\n"


def test_openai_endpoint_masks_echoed_headers_and_200_body(asgi_live_server, recorded_events, operator, key_of,
                                                           echo_connector, log_text):
    response = openai_call(asgi_live_server, echo_connector("echo-key"), key_of)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-***"
    assert response.headers["x-ratelimit-remaining-requests"] == "***"
    assert "***" in response.json()["choices"][0]["message"]["content"]
    assert_no_key(everything_in(response))
    recorded_events.wait_for(1)
    assert_no_key(log_text())


def test_openai_endpoint_masks_an_echoed_key_in_an_error_and_its_headers(asgi_live_server, recorded_events, operator,
                                                                         key_of, echo_connector, log_text):
    response = openai_call(asgi_live_server, echo_connector("echo-key-error"), key_of)
    assert response.status_code == 400
    assert_no_key(everything_in(response))
    recorded_events.wait_for(1)
    assert_no_key(ExecutionEvent.objects.get().error_message)
    assert_no_key(log_text())


def test_openai_endpoint_masks_a_key_spelled_across_stream_chunks(asgi_live_server, recorded_events, operator, key_of,
                                                                  echo_connector):
    response = openai_call(asgi_live_server, echo_connector("echo-key-stream"), key_of, stream=True)
    assert response.status_code == 200 and "[DONE]" in response.text
    assert '"content": "***"' in response.text
    assert_no_key(everything_in(response))
    recorded_events.wait_for(1)


def test_execute_masks_the_key_in_a_200_envelope(asgi_live_server, recorded_events, operator, echo_connector):
    response = execute_call(asgi_live_server, echo_connector("echo-key"), operator)
    assert response.json()["status"] == "ok"
    assert_no_key(everything_in(response))
    recorded_events.wait_for(1)


def test_execute_masks_a_json_escaped_key_in_the_envelope_event_and_csv(asgi_live_server, recorded_events, operator,
                                                                        analyst, echo_connector, client, log_text):
    connector = echo_connector("echo-key-error")
    response = execute_call(asgi_live_server, connector, operator)
    envelope = response.json()
    assert envelope["status"] == "error" and "***" in envelope["service_message"]
    assert_no_key(everything_in(response))
    recorded_events.wait_for(1)
    assert_no_key(ExecutionEvent.objects.get().error_message)
    client.force_login(analyst)
    export = client.get(f"/usage/connectors/{connector.pk}/events.csv?range=24h")
    csv_text = b"".join(export.streaming_content).decode()
    assert "***" in csv_text
    assert_no_key(csv_text)
    assert_no_key(log_text())


def test_a_malformed_status_line_holding_the_key_leaks_nowhere(asgi_live_server, recorded_events, operator, key_of,
                                                               echo_connector, log_text):
    connector = echo_connector("echo-key-status")
    kibana = execute_call(asgi_live_server, connector, operator)
    assert kibana.json()["status"] == "error"
    assert_no_key(everything_in(kibana))
    openai = openai_call(asgi_live_server, connector, key_of)
    assert openai.status_code == 502
    assert_no_key(everything_in(openai))
    streamed = openai_call(asgi_live_server, connector, key_of, stream=True)
    assert streamed.status_code == 502
    assert_no_key(everything_in(streamed))
    recorded_events.wait_for(3)
    for event in ExecutionEvent.objects.all():
        assert "could not be read" in event.error_message
        assert_no_key(event.error_message)
    assert_no_key(log_text())
