"""The OpenAI-compatible endpoint, driven by the official ``openai`` SDK against a real uvicorn: completions with and
without streaming through OpenAI, Azure and Other connectors, each recorded once with its usage, and errors in
OpenAI's shape with the right status."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import openai
import pytest
from openai import OpenAI

from connectors.accounts.api_keys import create_api_key
from connectors.models import Connector, Provider
from connectors.outbound import models_list, tokens
from tests.conftest import basic_auth
from tests.servers.fake_openai import REPLY_WORDS, usage_for
from usage.models import ExecutionEvent

PROVIDER_KEY = "sk-provider-SECRET-0123456789"
MESSAGES = [{"role": "user", "content": "Hello world"}]


@pytest.fixture
def operator_key(operator) -> str:
    return create_api_key(operator, "sdk")[1]


def sdk(server, connector, key) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/api/openai/{connector.pk}/v1", api_key=key, max_retries=0, timeout=20)


def azure_connector(admin_user, url: str) -> Connector:
    # Saved without full_clean(): the fake server's scenario prefix would fail the Azure URL validation.
    connector = Connector(name="Azure", provider=Provider.AZURE, api_url=url, created_by=admin_user)
    connector.api_key = PROVIDER_KEY
    connector.save()
    return connector


def assert_one_event(recorded_events, **expected) -> ExecutionEvent:
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert {name: getattr(event, name) for name in expected} == expected
    return event


def test_sdk_chat_completion_through_an_openai_connector(asgi_live_server, recorded_events, operator, operator_key,
                                                         make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"), api_key=PROVIDER_KEY)
    completion = sdk(asgi_live_server, connector, operator_key).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content.strip() == "You said: Hello world"
    sent = fake_openai.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"  # the caller's key never goes upstream
    assert sent.json()["model"] == "gpt-4o-mini" and sent.json()["stream"] is False
    expected = usage_for(sent.json())
    assert completion.usage.total_tokens == expected["total_tokens"]
    event = assert_one_event(recorded_events, source="openai_api", sub_action="run", outcome="success",
                             usage_source="provider", user_name="olivia", response_model="gpt-4o-mini")
    assert (event.prompt_tokens, event.completion_tokens, event.cached_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"], 2)


def test_sdk_streaming_through_an_openai_connector(asgi_live_server, recorded_events, operator_key, make_connector,
                                                   fake_openai):
    connector = make_connector(api_url=fake_openai.url("stream"), api_key=PROVIDER_KEY)
    chunks = list(sdk(asgi_live_server, connector, operator_key).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True))
    # The caller did not ask for usage: every chunk has choices, as OpenAI would send them (code that reads
    # chunk.choices[0] keeps working), although the gateway asked the provider for usage to record it.
    assert all(chunk.choices for chunk in chunks) and all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content for c in chunks) == REPLY_WORDS
    sent = fake_openai.requests[-1].json()
    assert sent["stream_options"] == {"include_usage": True}
    expected = usage_for(sent)
    event = assert_one_event(recorded_events, source="openai_api", sub_action="stream", outcome="success",
                             usage_source="provider")
    assert (event.prompt_tokens, event.completion_tokens) == (expected["prompt_tokens"], expected["completion_tokens"])


def test_sdk_streaming_with_include_usage_receives_the_usage_chunk(asgi_live_server, recorded_events, operator_key,
                                                                  make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("stream"))
    chunks = list(sdk(asgi_live_server, connector, operator_key).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == usage_for(fake_openai.requests[-1].json())["total_tokens"]
    assert_one_event(recorded_events, usage_source="provider", total_tokens=chunks[-1].usage.total_tokens)


def test_sdk_through_an_azure_connector(asgi_live_server, recorded_events, admin_user, operator_key, fake_openai):
    connector = azure_connector(admin_user, fake_openai.url(
        "azure", "/openai/deployments/gpt4o-prod/chat/completions", "api-version=2024-10-21"))
    completion = sdk(asgi_live_server, connector, operator_key).chat.completions.create(
        model="ignored-by-azure", messages=MESSAGES)
    assert completion.choices[0].message.content.strip() == "You said: Hello world"
    sent = fake_openai.requests[-1]
    assert sent.headers["api-key"] == PROVIDER_KEY and "authorization" not in sent.headers
    assert sent.query["api-version"] == ["2024-10-21"]
    assert_one_event(recorded_events, outcome="success", usage_source="provider",
                     prompt_tokens=usage_for(sent.json())["prompt_tokens"])


def test_sdk_streaming_through_an_azure_connector(asgi_live_server, recorded_events, admin_user, operator_key,
                                                  fake_openai):
    connector = azure_connector(admin_user, fake_openai.url(
        "stream-azure-filter", "/openai/deployments/gpt4o-prod/chat/completions", "api-version=2024-10-21"))
    chunks = list(sdk(asgi_live_server, connector, operator_key).chat.completions.create(
        model="gpt4o-prod", messages=MESSAGES, stream=True))
    assert chunks[0].choices == []  # Azure's prompt_filter_results chunk reaches the caller, as Azure sends it
    assert all(chunk.choices for chunk in chunks[1:])  # the usage chunk the caller did not ask for does not
    assert "".join(c.choices[0].delta.content for c in chunks[1:]) == REPLY_WORDS
    assert_one_event(recorded_events, outcome="success", usage_source="provider", sub_action="stream",
                     completion_tokens=len(REPLY_WORDS.split()))


@pytest.mark.parametrize("asks", [False, True])
def test_an_other_server_streams_the_usage_chunk_only_to_callers_who_asked_as_openai_and_azure_do(
        asgi_live_server, recorded_events, operator_key, make_connector, fake_openai, asks):
    connector = make_connector(provider=Provider.OTHER, api_url=fake_openai.url("stream-always-usage"),
                               default_model="llama3.1", api_key="")
    extra = {"stream_options": {"include_usage": True}} if asks else {}
    chunks = list(sdk(asgi_live_server, connector, operator_key).chat.completions.create(
        model="llama3.1", messages=MESSAGES, stream=True, **extra))
    sent = fake_openai.requests[-1].json()
    assert sent.get("stream_options") == extra.get("stream_options")  # the gateway does not ask an Other server
    if asks:
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == usage_for(sent)["total_tokens"]
    else:
        assert all(chunk.choices for chunk in chunks) and all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == REPLY_WORDS
    assert_one_event(recorded_events, usage_source="provider", total_tokens=usage_for(sent)["total_tokens"])


@pytest.mark.parametrize("stream, scenario", [(False, "nousage"), (True, "stream-nousage")])
def test_an_other_server_without_usage_is_recorded_as_estimated(asgi_live_server, recorded_events, operator_key,
                                                                 make_connector, fake_openai, stream, scenario):
    connector = make_connector(provider=Provider.OTHER, api_url=fake_openai.url(scenario), default_model="llama3.1",
                               api_key="")
    client = sdk(asgi_live_server, connector, operator_key)
    if stream:
        chunks = list(client.chat.completions.create(model="llama3.1", messages=MESSAGES, stream=True))
        text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model="llama3.1", messages=MESSAGES).choices[0].message.content
    sent = fake_openai.requests[-1].json()
    assert_one_event(recorded_events, outcome="success", usage_source="estimated",
                     prompt_tokens=tokens.estimate_prompt_tokens(sent),
                     completion_tokens=tokens.count_tokens(text, "llama3.1"))


def test_basic_auth_is_accepted_too(asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions",
                          json={"model": "gpt-4o", "messages": MESSAGES},
                          headers={"kbn-xsrf": "true", "Authorization": basic_auth(operator)})
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"
    assert_one_event(recorded_events, outcome="success", source="openai_api")


@pytest.fixture
def fresh_models():
    models_list.forget_models()
    yield
    models_list.forget_models()


@pytest.mark.parametrize("provider", [Provider.OPENAI, Provider.OTHER])
def test_models_lists_what_the_provider_offers_and_caches_it(asgi_live_server, operator_key, make_connector, fake_openai,
                                                             fresh_models, provider):
    connector = make_connector(provider=provider, api_url=fake_openai.url("ok"), default_model="gpt-4.1-mini",
                               api_key=PROVIDER_KEY)
    client = sdk(asgi_live_server, connector, operator_key)
    assert [m.id for m in client.models.list().data] == ["gpt-4o", "gpt-4o-mini"]
    sent = fake_openai.requests[-1]
    assert (sent.method, sent.path) == ("GET", "/ok/v1/models")
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert [m.id for m in client.models.list().data] == ["gpt-4o", "gpt-4o-mini"]
    assert len(fake_openai.requests) == 1  # the second answer came from the cache
    assert not ExecutionEvent.objects.exists()  # a listing is not an execution


@pytest.mark.parametrize("scenario", ["status-500", "status-401", "status-404"])
def test_models_falls_back_to_the_default_model_when_the_provider_cannot_be_asked(
        asgi_live_server, operator_key, make_connector, fake_openai, fresh_models, scenario):
    connector = make_connector(api_url=fake_openai.url(scenario), default_model="gpt-4.1-mini")
    models = sdk(asgi_live_server, connector, operator_key).models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("gpt-4.1-mini", "model", "openai")]


def test_models_of_an_unreachable_provider_is_the_default_model(asgi_live_server, operator_key, make_connector,
                                                                 fresh_models):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    connector = make_connector(provider=Provider.OTHER, api_url=f"http://127.0.0.1:{port}/v1/chat/completions",
                               default_model="llama3.1", api_key="")
    assert [m.id for m in sdk(asgi_live_server, connector, operator_key).models.list().data] == ["llama3.1"]


def test_models_of_an_azure_connector_is_its_deployment(asgi_live_server, operator_key, admin_user, fake_openai,
                                                        fresh_models):
    azure = azure_connector(
        admin_user, "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
    assert [m.id for m in sdk(asgi_live_server, azure, operator_key).models.list().data] == ["gpt4o-prod"]
    assert not fake_openai.requests


@pytest.mark.parametrize("path, method", [("chat/completions", "POST"), ("models", "GET")])
@pytest.mark.parametrize("who, status, code", [
    ("anonymous", 401, "invalid_api_key"),
    ("wrong key", 401, "invalid_api_key"),
    ("outsider", 403, "insufficient_permissions"),
    ("analyst", 403, "insufficient_permissions"),
    ("operator", 200, None),
])
def test_the_endpoints_need_a_valid_key_and_the_execute_permission(asgi_live_server, recorded_events, personas,
                                                                    make_connector, fake_openai, path, method, who,
                                                                    status, code):
    connector = make_connector(api_url=fake_openai.url("ok"))
    headers = {}
    if who == "wrong key":
        headers["Authorization"] = "Bearer cak_not-a-key"
    elif who != "anonymous":
        headers["Authorization"] = f"Bearer {create_api_key(personas[who], 'k')[1]}"
    response = httpx.request(method, f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/{path}", headers=headers,
                             json={"model": "gpt-4o", "messages": MESSAGES} if method == "POST" else None)
    assert response.status_code == status
    if status != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
        assert not fake_openai.requests and not ExecutionEvent.objects.exists()


def test_the_sdk_sees_authentication_and_permission_errors(asgi_live_server, outsider, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    with pytest.raises(openai.AuthenticationError):
        sdk(asgi_live_server, connector, "cak_wrong").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError):
        sdk(asgi_live_server, connector, create_api_key(outsider, "k")[1]).chat.completions.create(
            model="gpt-4o", messages=MESSAGES)


def test_an_unknown_connector_is_a_404(asgi_live_server, operator_key):
    client = OpenAI(base_url=f"{asgi_live_server.url}/api/openai/no-such-connector/v1", api_key=operator_key,
                    max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "connector_not_found" and caught.value.type == "invalid_request_error"


@pytest.mark.parametrize("raw, param", [(b"{not json", None), (b"[1, 2]", None), (b'{"model": "gpt-4o"}', "messages")])
def test_an_invalid_body_is_a_400_and_is_recorded(asgi_live_server, recorded_events, operator_key, make_connector,
                                                  fake_openai, raw, param):
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions", content=raw,
                          headers={"Authorization": f"Bearer {operator_key}", "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert not fake_openai.requests
    assert_one_event(recorded_events, outcome="failure", source="openai_api", usage_source="none")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status, error_class", [(429, openai.RateLimitError), (500, openai.InternalServerError),
                                                 (400, openai.BadRequestError)])
def test_provider_errors_pass_through_with_their_status_and_body(asgi_live_server, recorded_events, operator_key,
                                                                 make_connector, fake_openai, stream, status,
                                                                 error_class):
    connector = make_connector(api_url=fake_openai.url(f"status-{status}"), api_key=PROVIDER_KEY)
    with pytest.raises(error_class) as caught:
        sdk(asgi_live_server, connector, operator_key).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=stream)
    assert caught.value.status_code == status
    assert caught.value.body == {"message": f"Simulated {status} from the fake server", "type": "fake_error",
                                 "param": None, "code": str(status)}
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "7"
    assert_one_event(recorded_events, outcome="failure", upstream_status=status)


def test_azure_errors_get_openais_error_shape(asgi_live_server, recorded_events, admin_user, operator_key, fake_openai):
    # No api-version: the fake Azure answers 404 with Azure's {"error": {"code", "message"}}.
    connector = azure_connector(admin_user, fake_openai.url("azure", "/openai/deployments/gpt4o/chat/completions"))
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(asgi_live_server, connector, operator_key).chat.completions.create(model="gpt4o", messages=MESSAGES)
    assert caught.value.body == {"code": "404", "message": "Resource not found", "type": "invalid_request_error",
                                 "param": None}
    assert_one_event(recorded_events, outcome="failure", upstream_status=404)


class KeyEchoingUpstream:
    """An upstream that rejects every request with the credentials it received in its error message, as some
    providers do (partially masked); the gateway must not pass the provider key on."""

    def __init__(self):
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self.port = 0

    async def _handle(self, reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = [line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line]
        headers = {name.lower(): value for name, value in lines}
        await reader.readexactly(int(headers.get("content-length", 0)))
        message = f"Incorrect API key provided: {headers.get('authorization', '')}"
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "invalid_api_key"}}).encode()
        writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                     + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    def __enter__(self):
        def run():
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_error_never_carries_the_provider_key_or_the_callers_key(asgi_live_server, recorded_events,
                                                                            operator_key, make_connector, stream):
    with KeyEchoingUpstream() as upstream:
        connector = make_connector(api_url=f"http://127.0.0.1:{upstream.port}/v1/chat/completions",
                                   api_key=PROVIDER_KEY)
        response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions",
                              json={"model": "gpt-4o", "messages": MESSAGES, "stream": stream},
                              headers={"Authorization": f"Bearer {operator_key}"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Incorrect API key provided: Bearer ***"
    assert PROVIDER_KEY not in response.text and operator_key not in response.text
    event = assert_one_event(recorded_events, outcome="failure", upstream_status=401)
    assert PROVIDER_KEY not in event.error_message


def test_an_unreachable_provider_is_a_502(asgi_live_server, recorded_events, operator_key, make_connector):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    connector = make_connector(api_url=f"http://127.0.0.1:{closed_port}/v1/chat/completions")
    for stream in (False, True):
        response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions",
                              json={"model": "gpt-4o", "messages": MESSAGES, "stream": stream},
                              headers={"Authorization": f"Bearer {operator_key}"})
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    recorded_events.wait_for(2)
    assert list(ExecutionEvent.objects.values_list("outcome", flat=True)) == ["failure", "failure"]


def test_a_stream_cut_short_raises_in_the_sdk_and_is_recorded_with_its_partial_usage(
    asgi_live_server, recorded_events, operator_key, make_connector, fake_openai
):
    connector = make_connector(api_url=fake_openai.url("stream-cut"))
    received = []
    with pytest.raises(openai.APIError, match="ended before it was complete"):
        for chunk in sdk(asgi_live_server, connector, operator_key).chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == REPLY_WORDS.split()[:1] + [" " + w for w in REPLY_WORDS.split()[1:3]]
    assert_one_event(recorded_events, outcome="failure", usage_source="estimated",
                     completion_tokens=tokens.count_tokens("".join(received), "gpt-4o"))


@pytest.mark.parametrize("stream", [False, True])
def test_allowed_hosts_and_timeouts_are_gateway_errors(asgi_live_server, recorded_events, operator_key,
                                                       make_connector, fake_openai, actions_config, stream):
    blocked = make_connector(api_url=fake_openai.url("ok"))
    stalled = make_connector(api_url=fake_openai.url("stall"))
    actions_config({"allowedHosts": ["127.0.0.1"], "responseTimeout": "300ms"})
    blocked.api_url = "http://localhost:1/v1/chat/completions"  # saved past validation: allowedHosts at request time
    blocked.save()
    answers = []
    for connector in (blocked, stalled):
        response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions",
                              json={"model": "gpt-4o", "messages": MESSAGES, "stream": stream},
                              headers={"Authorization": f"Bearer {operator_key}"}, timeout=10)
        answers.append((response.status_code, response.json()["error"]["code"]))
    assert answers == [(403, "host_not_allowed"), (504, "upstream_timeout")]
    recorded_events.wait_for(2)
    assert list(ExecutionEvent.objects.values_list("outcome", flat=True)) == ["failure", "failure"]
