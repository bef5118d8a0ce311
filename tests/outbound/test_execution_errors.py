"""Upstream failures end in Kibana's error envelope with a service_message that says what happened, the right
``retry``, and exactly one recorded event without the secret: stalls, 429, 5xx, HTML, oversized bodies, refusals."""

import asyncio
import json
import threading

import pytest

from tests.conftest import basic_auth
from tests.helpers.outbound import SECRET, assert_recorded_once, closed_port, run
from usage.models import ExecutionEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("debug_logs")]

ACTION_ERROR = "an error occurred while running the action"


class EndlessBodyServer:
    """Answers 200 and then writes JSON-ish bytes until the client hangs up; ``hung_up`` is set when it does.

    With ``declare_length`` the head announces a huge Content-Length, otherwise the body is close-delimited, so
    a client that does not stop reading at its limit would never finish.
    """

    def __init__(self, declare_length: bool):
        self.declare_length = declare_length
        self.hung_up = threading.Event()
        self.bytes_sent = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="endless-body")

    def start(self):
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def _serve(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await self._stop.wait()

        asyncio.run(main())

    async def _handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        framing = b"content-length: 10000000000\r\n" if self.declare_length else b"connection: close\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + framing + b"\r\n" + b'{"padding": "')
        chunk = b"x" * 65536
        try:
            while True:
                writer.write(chunk)
                await writer.drain()
                self.bytes_sent += len(chunk)
        except (ConnectionError, OSError):
            self.hung_up.set()
        finally:
            writer.close()


@pytest.fixture
def fast_timeouts(actions_config):
    return actions_config({"responseTimeout": "300ms"})


def test_a_stalled_server_times_out_after_the_response_timeout(make_connector, fake_openai, fast_timeouts, caplog):
    # the `stream` sub-action has no default call timeout in Kibana (run/test/invokeAI wait 200 s), so
    # responseTimeout alone bounds it (docs/KIBANA.md 4.9).
    connector = make_connector(api_url=fake_openai.url("stall"), api_key=SECRET)
    execution = run(connector, sub_action="stream")
    assert execution.envelope == {
        "status": "error",
        "connector_id": connector.pk,
        "message": ACTION_ERROR,
        # Kibana's text for a failure without an HTTP status, with the code axios gives a timeout.
        "service_message": "Status code: undefined. Message: Unexpected API Error: ECONNABORTED - "
                           "timeout of 300ms exceeded",
        "retry": True,
        "errorSource": "framework",
    }
    event = assert_recorded_once(execution, caplog, outcome="failure")
    assert event.duration_ms >= 300
    assert event.upstream_status is None


def test_the_calls_timeout_extends_a_shorter_response_timeout(make_connector, fake_openai, fast_timeouts, caplog):
    # The answer comes after the 300 ms responseTimeout, and long before the call's own 60 s: only the extension
    # can let it through, whatever the machine's load.
    connector = make_connector(api_url=fake_openai.url("sleep-450"), api_key=SECRET)
    execution = run(connector, timeout=60_000)
    assert execution.envelope["status"] == "ok"
    event = assert_recorded_once(execution, caplog, outcome="success")
    assert event.duration_ms >= 450


def test_without_a_call_timeout_a_stream_call_gets_the_response_timeout(make_connector, fake_openai, fast_timeouts,
                                                                       caplog):
    connector = make_connector(api_url=fake_openai.url("sleep-450"), api_key=SECRET)
    execution = run(connector, sub_action="stream")
    assert "timeout of 300ms exceeded" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_without_a_call_timeout_run_waits_kibanas_200_s_default_not_the_shorter_response_timeout(
        make_connector, fake_openai, fast_timeouts, caplog):
    # (docs/KIBANA.md 4.9) timeout ?? 200000 ms for run/test/invokeAI, and max() with responseTimeout.
    connector = make_connector(api_url=fake_openai.url("sleep-450"), api_key=SECRET)
    execution = run(connector)
    assert execution.envelope["status"] == "ok", execution.envelope
    assert_recorded_once(execution, caplog, outcome="success")


def test_the_connectors_own_timeout_replaces_the_200_s_default(make_connector, fake_openai, fast_timeouts, caplog):
    connector = make_connector(api_url=fake_openai.url("stall"), api_key=SECRET, timeout_ms=400)
    execution = run(connector)
    assert "timeout of 400ms exceeded" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_a_calls_timeout_wins_over_the_connectors_own(make_connector, fake_openai, fast_timeouts, caplog):
    connector = make_connector(api_url=fake_openai.url("stall"), api_key=SECRET, timeout_ms=60_000)
    execution = run(connector, timeout=500)
    assert "timeout of 500ms exceeded" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_a_call_timeout_shorter_than_the_response_timeout_does_not_shorten_it(make_connector, fake_openai,
                                                                                actions_config, caplog):
    # effective timeout = max(responseTimeout, timeout): 50 ms asked, 60 s granted, the 300 ms answer arrives (a
    # minute is more than any load can make a 300 ms answer late by).
    actions_config({"responseTimeout": "60s"})
    connector = make_connector(api_url=fake_openai.url("sleep-300"), api_key=SECRET)
    execution = run(connector, timeout=50)
    assert execution.envelope["status"] == "ok"
    assert_recorded_once(execution, caplog, outcome="success")


def test_a_longer_call_timeout_waits_longer_on_a_stalled_server(make_connector, fake_openai, fast_timeouts, caplog):
    connector = make_connector(api_url=fake_openai.url("stall"), api_key=SECRET)
    execution = run(connector, timeout=600)
    assert "timeout of 600ms exceeded" in execution.envelope["service_message"]
    event = assert_recorded_once(execution, caplog, outcome="failure")
    assert event.duration_ms >= 600


def test_429_is_retryable_with_the_providers_retry_after(make_connector, fake_openai, caplog):
    connector = make_connector(api_url=fake_openai.url("status-429"), api_key=SECRET)
    execution = run(connector)
    envelope = execution.envelope
    assert envelope["message"] == ACTION_ERROR
    # Kibana's exact text: the retry-after hint is in retry_after only (no " (retry after" suffix).
    assert envelope["service_message"] == (
        "Status code: 429. Message: API Error: Too Many Requests - Simulated 429 from the fake server"
    )
    assert envelope["retry"] is True and envelope["retry_after"] == 7
    event = assert_recorded_once(execution, caplog, outcome="failure")
    assert event.upstream_status == 429


@pytest.mark.parametrize("status, reason", [(500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Service Unavailable")])
def test_server_errors_are_retryable(make_connector, fake_openai, caplog, status, reason):
    connector = make_connector(api_url=fake_openai.url(f"status-{status}"), api_key=SECRET)
    execution = run(connector)
    assert execution.envelope["service_message"] == (
        f"Status code: {status}. Message: API Error: {reason} - Simulated {status} from the fake server"
    )
    assert execution.envelope["retry"] is True and "retry_after" not in execution.envelope
    assert assert_recorded_once(execution, caplog, outcome="failure").upstream_status == status


@pytest.mark.parametrize("status, text", [
    (400, "API Error: Bad Request - "), (401, "Unauthorized API Error - "), (404, "API Error: Not Found - ")])
def test_client_errors_read_as_kibanas_and_are_retry_true_as_every_thrown_error(make_connector, fake_openai, caplog,
                                                                               status, text):
    # Kibana's executor says retry true for any error
    # thrown while running, and 401 reads "Unauthorized API Error" (docs/KIBANA.md 4.2, 4.4).
    execution = run(make_connector(api_url=fake_openai.url(f"status-{status}"), api_key=SECRET))
    assert execution.envelope["service_message"] == (
        f"Status code: {status}. Message: {text}Simulated {status} from the fake server")
    assert execution.envelope["retry"] is True and execution.envelope["errorSource"] == "framework"
    assert "retry_after" not in execution.envelope
    assert_recorded_once(execution, caplog, outcome="failure")


def test_html_instead_of_json_is_a_clear_error(make_connector, fake_openai, caplog):
    execution = run(make_connector(api_url=fake_openai.url("html"), api_key=SECRET))
    assert execution.envelope["service_message"] == (
        "Status code: 200. Message: the provider's response is not JSON (content-type text/html)"
    )
    assert execution.envelope["retry"] is True
    event = assert_recorded_once(execution, caplog, outcome="failure")
    assert event.upstream_status == 200


def test_a_response_larger_than_the_limit_is_a_clear_error(make_connector, fake_openai, actions_config, caplog):
    actions_config({"maxResponseContentLength": "1kb"})
    execution = run(make_connector(api_url=fake_openai.url("big-5000"), api_key=SECRET))
    assert execution.envelope["service_message"] == (
        "Status code: undefined. Message: Unexpected API Error: ERR_BAD_RESPONSE - "
        "The response (5015 bytes) exceeds maxResponseContentLength (1024 bytes)."
    )
    assert execution.envelope["retry"] is True
    assert_recorded_once(execution, caplog, outcome="failure")


def test_a_response_within_the_limit_is_returned(make_connector, fake_openai, actions_config, caplog):
    actions_config({"maxResponseContentLength": "1kb"})
    execution = run(make_connector(api_url=fake_openai.url("big-900"), api_key=SECRET))
    assert execution.envelope["status"] == "ok" and len(execution.envelope["data"]["padding"]) == 900
    assert_recorded_once(execution, caplog, outcome="success")


@pytest.mark.parametrize("declare_length", [True, False], ids=["declared-length", "close-delimited"])
def test_reading_stops_at_the_limit_without_reading_the_whole_body(make_connector, actions_config, caplog,
                                                                   declare_length):
    actions_config({"maxResponseContentLength": "256kb", "responseTimeout": "60s"})
    server = EndlessBodyServer(declare_length).start()
    try:
        execution = run(make_connector(api_url=server.url, api_key=SECRET))
        # The body never ends: only a client that stops reading at its limit gets here without timing out (a
        # timeout would say "No complete response").
        assert "exceeds" in execution.envelope["service_message"] or "exceeded" in execution.envelope["service_message"]
        assert "maxResponseContentLength (262144 bytes)" in execution.envelope["service_message"]
        assert server.hung_up.wait(30), "the client closed the connection instead of draining the body"
        assert_recorded_once(execution, caplog, outcome="failure")
    finally:
        server.stop()


def test_a_refused_connection_is_a_retryable_error(make_connector, caplog):
    port = closed_port()
    execution = run(make_connector(api_url=f"http://127.0.0.1:{port}/v1/chat/completions", api_key=SECRET))
    assert execution.envelope["service_message"].startswith(
        f"Status code: undefined. Message: Unexpected API Error: ECONNREFUSED - Could not connect to 127.0.0.1:{port}")
    assert execution.envelope["retry"] is True
    assert_recorded_once(execution, caplog, outcome="failure")


def test_the_execute_api_answers_an_upstream_failure_with_http_200_and_the_envelope(client, operator, make_connector,
                                                                                     fake_openai, caplog):
    connector = make_connector(api_url=fake_openai.url("status-429"), api_key=SECRET)
    body = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": []})}}}
    response = client.post(f"/api/actions/connector/{connector.pk}/_execute", body, content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(operator))
    assert response.status_code == 200
    envelope = response.json()
    # Kibana's envelope keys only; the wait goes into the Retry-After header.
    assert envelope["status"] == "error" and envelope["retry"] is True and "retry_after" not in envelope
    assert response["Retry-After"] == "7"
    assert envelope["service_message"].startswith("Status code: 429. Message: API Error: Too Many Requests - ")
    assert SECRET not in response.content.decode() and SECRET not in caplog.text
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and event.error_message == envelope["service_message"]


def test_a_key_that_would_split_the_request_is_never_sent(make_connector, fake_openai, caplog):
    """A stored key holding a line break (the form refuses one; a key stored otherwise, or decrypted wrong, might):
    the client refuses to write the request, so no header is injected upstream, and the failure says so without
    the key."""
    execution = run(make_connector(api_url=fake_openai.url("ok"), api_key=SECRET + "\r\nX-Injected: 1"))
    message = execution.envelope["service_message"]
    assert message.startswith("Status code: undefined. Message: Unexpected API Error: ERR_INVALID_CHAR - "
                              f"The request to 127.0.0.1:{fake_openai.port} was not sent")
    assert SECRET not in message and "X-Injected" not in message
    assert fake_openai.requests == []
    assert_recorded_once(execution, caplog, outcome="failure")
