"""Streamed ``_execute`` (sub-actions ``stream`` and ``invokeStream``) through a real uvicorn over real sockets:
bytes relayed as they arrive, usage from the provider or estimated offline, one event per execution whatever
happens, and a caller who hangs up mid-stream."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest

from connectors.models import Connector, Provider
from connectors.outbound import tokens
from tests.conftest import basic_auth
from tests.servers.fake_openai import REPLY_WORDS, usage_for
from usage.models import ExecutionEvent

HELLO = {"messages": [{"role": "user", "content": "Hello world"}]}
SECRET = "sk-stream-SECRET-0123456789"


def stream_params(body=HELLO, stream=True, **extra):
    return {"params": {"subAction": "stream", "subActionParams": {"body": json.dumps(body), "stream": stream, **extra}}}


def post_execute(server, user, connector, params, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/api/actions/connector/{connector.pk}/_execute", json=params,
                      headers={"kbn-xsrf": "true", "Authorization": basic_auth(user)}, timeout=30, **kwargs)


def sse_payloads(text: str) -> list:
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


def azure_connector(admin_user, url: str) -> Connector:
    # The fake server routes on the first path segment, which an Azure URL's validation would not accept, so this
    # connector is saved without full_clean(); the request shaping is what is under test.
    connector = Connector(name="Azure", provider=Provider.AZURE, api_url=url, created_by=admin_user)
    connector.api_key = SECRET
    connector.save()
    return connector


def test_stream_relays_the_providers_sse_and_records_its_usage(asgi_live_server, recorded_events, operator,
                                                                make_connector, fake_openai):
    # Off api.openai.com Kibana adds no stream_options; this body asks for the usage chunk itself.
    connector = make_connector(api_url=fake_openai.url("stream"), default_model="gpt-4o-mini", api_key=SECRET)
    response = post_execute(asgi_live_server, operator, connector, stream_params(
        body={"messages": [{"role": "user", "content": "Hi"}], "stream": True,
              "stream_options": {"include_usage": True}}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert "".join(p["choices"][0]["delta"]["content"] for p in payloads[:-2]) == REPLY_WORDS
    assert payloads[-2]["choices"] == [] and payloads[-2]["usage"]["total_tokens"] > 0
    sent = fake_openai.requests[-1]
    assert sent.json()["stream"] is True and sent.json()["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    expected = usage_for(sent.json())
    assert (event.outcome, event.sub_action, event.source, event.user_name) == ("success", "stream", "api", "olivia")
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"], expected["total_tokens"])
    assert (event.cached_tokens, event.reasoning_tokens, event.usage_source) == (2, 1, "provider")
    assert event.requested_model == "gpt-4o-mini" and event.response_model == "gpt-4o-mini"
    assert event.upstream_status == 200 and event.response_bytes == len(response.content)
    assert SECRET not in response.text


def test_usage_on_a_chunk_that_still_has_choices_is_taken(asgi_live_server, recorded_events, operator,
                                                          make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("stream-usage-in-choice"))
    response = post_execute(asgi_live_server, operator, connector, stream_params())
    with_usage = [p for p in sse_payloads(response.text) if p != "[DONE]" and p.get("usage")]
    assert len(with_usage) == 1 and with_usage[0]["choices"]
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.usage_source, event.outcome) == ("provider", "success")
    assert event.completion_tokens == len(REPLY_WORDS.split())


def test_azure_stream_leading_with_prompt_filter_results_is_relayed_and_counted(
    asgi_live_server, recorded_events, operator, admin_user, fake_openai
):
    connector = azure_connector(admin_user, fake_openai.url(
        "stream-azure-filter", "/openai/deployments/gpt4o-prod/chat/completions", "api-version=2024-10-21"))
    response = post_execute(asgi_live_server, operator, connector, stream_params())
    payloads = sse_payloads(response.text)
    assert payloads[0]["choices"] == [] and "prompt_filter_results" in payloads[0]
    sent = fake_openai.requests[-1]
    assert sent.headers["api-key"] == SECRET and "authorization" not in sent.headers
    assert sent.query["api-version"] == ["2024-10-21"] and sent.json()["stream_options"] == {"include_usage": True}
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.usage_source, event.requested_model) == ("success", "provider", "gpt4o-prod")
    assert event.prompt_tokens == usage_for(sent.json())["prompt_tokens"]


def test_other_server_without_usage_is_counted_with_the_offline_tokenizer(asgi_live_server, recorded_events, operator,
                                                                          make_connector, fake_openai):
    connector = make_connector(provider=Provider.OTHER, api_url=fake_openai.url("stream-nousage"),
                               default_model="llama3.1:8b", api_key="")
    response = post_execute(asgi_live_server, operator, connector, stream_params())
    assert sse_payloads(response.text)[-1] == "[DONE]"
    sent = fake_openai.requests[-1].json()
    assert "stream_options" not in sent  # only OpenAI and Azure are asked for usage
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.usage_source) == ("success", "estimated")
    assert event.completion_tokens == tokens.count_tokens(REPLY_WORDS, "llama3.1:8b") > 0
    assert event.prompt_tokens == tokens.estimate_prompt_tokens(sent) > 0
    assert event.total_tokens == event.prompt_tokens + event.completion_tokens


def test_a_stream_cut_short_is_a_failure_with_its_partial_output_estimated(asgi_live_server, recorded_events, operator,
                                                                           make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("stream-cut"))
    response = post_execute(asgi_live_server, operator, connector, stream_params())
    assert response.status_code == 200 and "[DONE]" not in response.text
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and "ended before it was complete" in event.error_message
    assert event.usage_source == "estimated"
    assert event.completion_tokens == tokens.count_tokens(" ".join(REPLY_WORDS.split()[:3]), "gpt-4o")


def test_the_first_chunk_reaches_the_caller_before_the_provider_sends_the_last(
    asgi_live_server, recorded_events, operator, make_connector, fake_openai
):
    # The provider sends its first word and then holds the rest until this caller has received that word: a
    # gateway that buffered the stream would never pass the first word on, and the provider would wait in vain.
    connector = make_connector(api_url=fake_openai.url("stream-gated"))
    pieces = []
    with httpx.stream("POST", f"{asgi_live_server.url}/api/actions/connector/{connector.pk}/_execute",
                      json=stream_params(), headers={"kbn-xsrf": "true", "Authorization": basic_auth(operator)}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for piece in response.iter_raw():
            pieces.append(piece)
            if b'"content"' in piece:
                fake_openai.gate.set()
    assert fake_openai.gate_was_opened is True, "the first word did not reach the caller while the provider waited"
    assert b"[DONE]" in b"".join(pieces)
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().outcome == "success"


class HangingUpstream:
    """An OpenAI-shaped upstream that sends one chunk of a stream and then waits forever, noting when the peer
    (the gateway) closes its connection."""

    def __init__(self, answer: bool = True, then_done: bool = False):
        self.answer = answer  # False: not even the response head is sent
        self.then_done = then_done  # True: the chunk is followed by [DONE], but the response never ends
        self.chunk_sent = threading.Event()
        self.peer_closed = threading.Event()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self.port = 0

    async def _handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        length = int(lengths[0]) if lengths else 0
        await reader.readexactly(length)
        if not self.answer:
            await reader.read()
            self.peer_closed.set()
            return
        event = json.dumps({"choices": [{"index": 0, "delta": {"content": "Hello there, partial"}}]}).encode()
        body = b"data: " + event + b"\n\n"
        if self.then_done:
            body += b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
        await writer.drain()
        self.chunk_sent.set()
        await reader.read()  # b"" once the gateway closes the connection
        self.peer_closed.set()
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


def test_a_caller_who_disconnects_cancels_the_upstream_and_is_recorded_once(asgi_live_server, recorded_events, operator,
                                                                            make_connector):
    with HangingUpstream() as upstream:
        connector = make_connector(provider=Provider.OTHER, default_model="gpt-4o", api_key="",
                                   api_url=f"http://127.0.0.1:{upstream.port}/v1/chat/completions")
        body = json.dumps(stream_params()).encode()
        caller = socket.create_connection(("127.0.0.1", asgi_live_server.port), timeout=10)
        caller.sendall(
            f"POST /api/actions/connector/{connector.pk}/_execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {basic_auth(operator)}\r\nkbn-xsrf: true\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        received = b""
        while b"partial" not in received:
            data = caller.recv(65536)
            assert data, "the gateway closed the stream"
            received += data
        assert b"text/event-stream" in received
        caller.close()  # the caller hangs up mid-stream
        assert upstream.peer_closed.wait(30), "the gateway kept the upstream request open"
        recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.error_message) == ("failure", "client disconnected")
    assert event.usage_source == "estimated"
    assert event.completion_tokens == tokens.count_tokens("Hello there, partial", "gpt-4o")
    assert event.prompt_tokens > 0


def test_a_caller_who_hangs_up_once_it_has_done_is_a_success(asgi_live_server, recorded_events, operator,
                                                             make_connector):
    # The OpenAI SDK stops reading at [DONE] and closes its connection, possibly before the upstream response ends.
    with HangingUpstream(then_done=True) as upstream:
        connector = make_connector(provider=Provider.OTHER, default_model="gpt-4o", api_key="",
                                   api_url=f"http://127.0.0.1:{upstream.port}/v1/chat/completions")
        with httpx.Client(timeout=10) as caller, caller.stream(
            "POST", f"{asgi_live_server.url}/api/actions/connector/{connector.pk}/_execute", json=stream_params(),
            headers={"kbn-xsrf": "true", "Authorization": basic_auth(operator)},
        ) as response:
            received = b""
            for piece in response.iter_raw():
                received += piece
                if b"[DONE]" in received:
                    break
        assert upstream.peer_closed.wait(30)
        recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.error_message, event.usage_source) == ("success", "", "estimated")


def test_a_caller_who_disconnects_before_the_provider_answers_is_recorded_once(asgi_live_server, recorded_events,
                                                                               operator, make_connector):
    with HangingUpstream(answer=False) as upstream:
        connector = make_connector(provider=Provider.OTHER, default_model="gpt-4o", api_key="",
                                   api_url=f"http://127.0.0.1:{upstream.port}/v1/chat/completions")
        with httpx.Client(timeout=0.5) as caller, pytest.raises(httpx.ReadTimeout):
            # The caller gives up after 0.5 s and closes its connection; the provider has not answered.
            caller.post(f"{asgi_live_server.url}/api/actions/connector/{connector.pk}/_execute", json=stream_params(),
                        headers={"kbn-xsrf": "true", "Authorization": basic_auth(operator)})
        assert upstream.peer_closed.wait(30), "the gateway kept the upstream request open"
        recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.error_message, event.usage_source) == ("failure", "client disconnected", "none")


def test_invoke_stream_sends_the_messages_and_streams(asgi_live_server, recorded_events, operator, make_connector,
                                                      fake_openai):
    connector = make_connector(api_url=fake_openai.url("stream"), default_model="gpt-4o-mini")
    params = {"params": {"subAction": "invokeStream", "subActionParams": {
        "messages": [{"role": "user", "content": "ping"}], "temperature": 0.3, "tools": []}}}
    response = post_execute(asgi_live_server, operator, connector, params)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_payloads(response.text)[-1] == "[DONE]"
    sent = fake_openai.requests[-1].json()
    assert sent["messages"] == [{"role": "user", "content": "ping"}] and sent["temperature"] == 0.3
    # Kibana's rule would leave "stream" out off api.openai.com; a stream without it would not be one.
    assert sent["stream"] is True and sent["model"] == "gpt-4o-mini" and sent["tools"] == []
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    # No stream_options off api.openai.com (as Kibana), so the server sends no usage and the counts are estimated.
    assert (event.sub_action, event.outcome, event.usage_source) == ("invokeStream", "success", "estimated")


def test_stream_false_answers_like_run(asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = post_execute(asgi_live_server, operator, connector, stream_params(stream=False))
    envelope = response.json()
    assert envelope["status"] == "ok" and envelope["data"]["object"] == "chat.completion"
    assert "stream" not in fake_openai.requests[-1].json()  # off api.openai.com the body is sent as it came
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().sub_action == "stream"


@pytest.mark.parametrize(
    "scenario, retry, service_message",
    [
        ("status-429", True, "Status code: 429. Message: API Error: Too Many Requests - Simulated 429"),
        ("status-500", True, "Status code: 500. Message: API Error: Internal Server Error - Simulated 500"),
        # retry true for every error thrown while running, 4xx included (docs/KIBANA.md 4.2).
        ("status-400", True, "Status code: 400. Message: API Error: Bad Request - Simulated 400"),
    ],
)
def test_an_upstream_error_before_the_stream_answers_with_the_error_envelope(
    asgi_live_server, recorded_events, operator, make_connector, fake_openai, scenario, retry, service_message
):
    connector = make_connector(api_url=fake_openai.url(scenario))
    response = post_execute(asgi_live_server, operator, connector, stream_params())
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    envelope = response.json()
    assert (envelope["status"], envelope["retry"], envelope["message"]) == (
        "error", retry, "an error occurred while running the action")
    assert envelope["service_message"].startswith(service_message)
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.upstream_status, event.usage_source) == ("failure", int(scenario[-3:]), "none")


def test_a_refused_connection_answers_with_the_error_envelope(asgi_live_server, recorded_events, operator,
                                                              make_connector):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    connector = make_connector(api_url=f"http://127.0.0.1:{closed_port}/v1/chat/completions")
    envelope = post_execute(asgi_live_server, operator, connector, stream_params()).json()
    assert envelope["status"] == "error" and envelope["retry"] is True
    assert f"127.0.0.1:{closed_port}" in envelope["service_message"]
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().outcome == "failure"


def test_allowed_hosts_is_enforced_for_streams(asgi_live_server, recorded_events, operator, make_connector,
                                               fake_openai, actions_config):
    connector = make_connector(api_url=fake_openai.url("stream"))
    actions_config({"allowedHosts": ["api.openai.com"]})
    envelope = post_execute(asgi_live_server, operator, connector, stream_params()).json()
    # Kibana validates the connector's config when it runs (docs/KIBANA.md 6).
    assert envelope == {
        "status": "error", "connector_id": connector.pk, "retry": False, "errorSource": "framework",
        "message": "error validating action type config: Error configuring OpenAI action: Error: error validating "
                   f'url: target url "{connector.api_url}" is not added to the Kibana config xpack.actions.allowedHosts'}
    assert fake_openai.requests == []
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().outcome == "failure"


def test_a_provider_that_never_answers_times_out_before_the_stream(asgi_live_server, recorded_events, operator,
                                                                   make_connector, fake_openai, actions_config):
    connector = make_connector(api_url=fake_openai.url("stall"))
    actions_config({"responseTimeout": "300ms"})
    envelope = post_execute(asgi_live_server, operator, connector, stream_params()).json()
    assert envelope["status"] == "error" and envelope["retry"] is True and "timeout of 300ms exceeded" in envelope["service_message"]
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().outcome == "failure"


def test_a_stream_that_stalls_midway_ends_and_is_recorded_as_a_failure(asgi_live_server, recorded_events, operator,
                                                                       make_connector, fake_openai, actions_config):
    connector = make_connector(api_url=fake_openai.url("stream-slow-2000"))
    actions_config({"responseTimeout": "300ms"})
    response = post_execute(asgi_live_server, operator, connector, stream_params())
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [p["choices"][0]["delta"]["content"] for p in sse_payloads(response.text)] == ["Hello"]
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and "stalled" in event.error_message
    assert event.usage_source == "estimated" and event.completion_tokens == 1


@pytest.mark.parametrize(
    "params, message",
    [
        (stream_params(stream="yes"), "[stream]: expected value of type [boolean]"),
        ({"params": {"subAction": "invokeStream", "subActionParams": {"messages": []}}},
         "[messages]: expected a non-empty array"),
        ({"params": {"subAction": "stream", "subActionParams": {"body": "{not json", "stream": True}}},
         "[body]: body is not valid JSON"),
    ],
)
def test_invalid_stream_params_are_refused_and_recorded(asgi_live_server, recorded_events, operator, make_connector,
                                                        fake_openai, params, message):
    connector = make_connector(api_url=fake_openai.url("stream"))
    envelope = post_execute(asgi_live_server, operator, connector, params).json()
    # Kibana's "Request validation failed (...)", thrown while running, a user error.
    assert (envelope["status"], envelope["retry"], envelope["errorSource"]) == ("error", True, "user")
    assert envelope["message"] == "an error occurred while running the action"
    assert envelope["service_message"].startswith("Request validation failed (Error: ")
    assert message in envelope["service_message"]
    assert fake_openai.requests == []
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().outcome == "failure"


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 403), ("analyst", 403)])
def test_streaming_needs_the_execute_permission(asgi_live_server, personas, make_connector, fake_openai, who, status):
    connector = make_connector(api_url=fake_openai.url("stream"))
    headers = {} if who == "anonymous" else {"kbn-xsrf": "true", "Authorization": basic_auth(personas[who])}
    response = httpx.post(f"{asgi_live_server.url}/api/actions/connector/{connector.pk}/_execute",
                          json=stream_params(), headers=headers, timeout=10)
    assert response.status_code == status and fake_openai.requests == []
    assert not ExecutionEvent.objects.exists()


def _sse(*payloads, newline=b"\n") -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + newline * 2 for p in payloads)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("piece", [1, 7, 10_000])
def test_the_tracker_reads_events_split_anywhere_and_drops_only_the_usage_event(newline, piece):
    from connectors.outbound.streaming import SSEUsageTracker

    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    stream = _sse(
        {"choices": [], "prompt_filter_results": [{"prompt_index": 0}]},
        {"model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "delta": {"content": "Hé"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
                      "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": usage},
        b"[DONE]",
        newline=newline,
    )
    for whole, drop in ((False, False), (True, False), (True, True)):
        tracker = SSEUsageTracker(max_event_bytes=1024, whole_events=whole, drop_usage_only_events=drop)
        passed = b"".join(tracker.feed(stream[i:i + piece]) for i in range(0, len(stream), piece)) + tracker.close()
        assert tracker.usage == usage and tracker.model == "gpt-4o-2024-08-06"
        assert tracker.completion.pending_text == "Héf{}" and tracker.done and tracker.complete
        if drop:
            assert passed == stream.replace(_sse({"choices": [], "usage": usage}, newline=newline), b"")
        else:
            assert passed == stream
