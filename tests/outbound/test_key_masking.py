"""A provider that echoes the key it was sent never gets it past the gateway.

A real uvicorn in front of hostile upstreams: tests/servers/fake_openai.py's ``echo-key*`` scenarios echo the key in
headers, in 200 and error bodies (raw, JSON-escaped and URL-encoded), spelled across two stream chunks, and in a
malformed status line; tests/servers/hostile_upstream.py's ``echo-*`` scenarios spell it with JSON escapes (one character,
every character, ``\\/``), whole and streamed a few bytes at a time, or in a UTF-16 body, so that only a JSON reader
sees it. No form of the key may reach a response (as the caller reads it: decoded), an event, the CSV export or a
log line.
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
from tests.servers.hostile_upstream import HostileUpstream, spell
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


# --- the key spelled with JSON escapes, as the caller would decode it ------------------------------------------

ESCAPED_KEY = "sk-proj-Esc4pe/Test_0123456789abcdefXYZ"  # with a "/", which JSON may write as "\/"
SPELLINGS = ["one", "all", "slash"]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def hostile():
    server = HostileUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def escaped_echo(make_connector, hostile):
    def make(scenario: str):
        return make_connector(api_url=hostile.url(f"echo-{scenario}"), api_key=ESCAPED_KEY)

    return make


def strings_in(value) -> list[str]:
    """Every string of a decoded JSON value, object keys included, at any depth."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings_in(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def received_strings(response: httpx.Response) -> list[str]:
    """What the caller reads: the headers, and the JSON body or every SSE event's JSON, decoded."""
    texts = [text for header in response.headers.items() for text in header]
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                texts += strings_in(json.loads(line[len("data: "):]))
    else:
        texts += strings_in(response.json())
    return texts


def assert_key_not_received(response: httpx.Response, *, echoed: bool = True) -> None:
    received = received_strings(response)
    for text in received:
        assert ESCAPED_KEY not in text, f"the caller decodes the key from {text!r}"
    assert ESCAPED_KEY not in response.text
    if echoed:  # the provider's echo did reach the caller, masked
        assert any("***" in text for text in received), received


def assert_key_not_recorded(count: int, recorded_events) -> None:
    recorded_events.wait_for(count)
    for event in ExecutionEvent.objects.all():
        for field in (event.response_model, event.requested_model, event.error_message):
            assert ESCAPED_KEY not in field and spell(ESCAPED_KEY, "all") not in field


def kibana_execute(server, connector, user, sub_action: str, sub_params: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/api/actions/connector/{connector.pk}/_execute", timeout=20,
                      json={"params": {"subAction": sub_action, "subActionParams": sub_params}},
                      headers={"kbn-xsrf": "true", "Authorization": basic_auth(user)})


KIBANA_CALLS = {
    "run": ("run", {"body": json.dumps({"messages": HI})}),
    "test": ("test", {"body": json.dumps({"messages": HI})}),
    "invokeAI": ("invokeAI", {"messages": HI}),
    "stream": ("stream", {"stream": True, "body": json.dumps({"messages": HI})}),
    "invokeStream": ("invokeStream", {"messages": HI}),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("call", ["run", "test", "invokeAI"])
def test_execute_masks_a_json_escaped_key_in_what_the_caller_decodes(asgi_live_server, recorded_events, operator,
                                                                    escaped_echo, log_text, spelling, call):
    response = kibana_execute(asgi_live_server, escaped_echo(spelling), operator, *KIBANA_CALLS[call])
    envelope = response.json()
    assert envelope["status"] == "ok"
    if call == "invokeAI":
        assert envelope["data"]["message"] == "Your key is ***."
    else:
        assert envelope["data"]["choices"][0]["message"]["content"] == "Your key is ***."
        assert envelope["data"]["model"] == "***" and envelope["data"]["system_fingerprint"] == {"***": ["***"]}
    assert_key_not_received(response)
    assert_key_not_recorded(1, recorded_events)
    assert ESCAPED_KEY not in log_text()


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("call", ["stream", "invokeStream"])
def test_execute_masks_a_json_escaped_key_streamed_a_few_bytes_at_a_time(asgi_live_server, recorded_events, operator,
                                                                        escaped_echo, spelling, call):
    response = kibana_execute(asgi_live_server, escaped_echo(spelling), operator, *KIBANA_CALLS[call])
    assert response.status_code == 200 and "[DONE]" in response.text
    assert '"content": "Your key is ***."' in response.text
    assert_key_not_received(response)
    assert_key_not_recorded(1, recorded_events)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_openai_endpoint_masks_a_json_escaped_key_in_what_the_caller_decodes(asgi_live_server, recorded_events,
                                                                            operator, key_of, escaped_echo, log_text,
                                                                            spelling, stream):
    response = openai_call(asgi_live_server, escaped_echo(spelling), key_of, stream=stream)
    assert response.status_code == 200
    if stream:
        assert "[DONE]" in response.text and '"content": "Your key is ***."' in response.text
    else:
        assert response.json()["choices"][0]["message"]["content"] == "Your key is ***."
    assert_key_not_received(response)
    assert_key_not_recorded(1, recorded_events)
    assert ESCAPED_KEY not in log_text()


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_json_escaped_key_in_a_provider_error_is_masked_everywhere(asgi_live_server, recorded_events, operator,
                                                                     key_of, escaped_echo, spelling):
    connector = escaped_echo(f"{spelling}-error")
    kibana = kibana_execute(asgi_live_server, connector, operator, *KIBANA_CALLS["run"])
    assert kibana.json()["status"] == "error" and "Incorrect API key provided: ***" in kibana.json()["service_message"]
    assert_key_not_received(kibana)
    for stream in (False, True):
        openai = openai_call(asgi_live_server, connector, key_of, stream=stream)
        assert openai.status_code == 400
        assert openai.json()["error"]["message"] == "Incorrect API key provided: ***"
        assert_key_not_received(openai)
    assert_key_not_recorded(3, recorded_events)


def test_a_key_hidden_by_a_utf16_body_is_not_read_as_json(asgi_live_server, recorded_events, operator, key_of,
                                                          escaped_echo):
    connector = escaped_echo("utf16")
    kibana = kibana_execute(asgi_live_server, connector, operator, *KIBANA_CALLS["run"])
    assert kibana.json()["status"] == "error" and "not JSON" in kibana.json()["service_message"]
    assert_key_not_received(kibana, echoed=False)
    openai = openai_call(asgi_live_server, connector, key_of)
    assert openai.status_code == 502
    assert_key_not_received(openai, echoed=False)
    assert_key_not_recorded(2, recorded_events)


@pytest.mark.parametrize("noise", ["", "s\\u0073sk-" * 20], ids=["plain", "many-false-starts"])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_json_escaped_key_is_masked_at_every_chunk_boundary(spelling, noise):
    event = f'data: {{"choices": [{{"delta": {{"content": "a {noise}{spell(ESCAPED_KEY, spelling)} b"}}}}]}}\n\n'
    event = event.encode()
    expected = f'data: {{"choices": [{{"delta": {{"content": "a {noise}*** b"}}}}]}}\n\n'.encode()
    assert mask_secret(event, ESCAPED_KEY) == expected
    for size in range(1, 16):
        masker = StreamMasker(ESCAPED_KEY)
        relayed = b"".join(masker.feed(event[at:at + size]) for at in range(0, len(event), size)) + masker.close()
        assert relayed == expected, size


def test_escaped_spellings_in_either_case_and_surrogate_pairs_are_masked_and_escaped_backslashes_left_alone():
    key = "sk-\U0001f600-0123456789"
    spelled = "".join(f"\\u{ord(char):04X}" for char in "sk-") + "\\ud83d\\uDE00" + "-0123\\u00345678\\u0039"
    assert json.loads(f'"{spelled}"') == key
    assert mask_secret(f'{{"a": "x{spelled}y"}}', key) == '{"a": "x***y"}'
    # "\\u0073k..." is a backslash and the text "u0073k...", not the key: left as it is, the JSON stays valid.
    text = '{"a": "\\\\u0073k-proj-0123456789"}'
    assert mask_secret(text, "sk-proj-0123456789") == text
    # After an escaped backslash, an escape starts again.
    assert mask_secret('{"a": "\\\\\\u0073k-proj-0123456789"}', "sk-proj-0123456789") == '{"a": "\\\\***"}'
