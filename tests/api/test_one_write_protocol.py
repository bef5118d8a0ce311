"""connectors_admin/http_protocol.py: a response of known length goes out in one write; anything else as uvicorn
writes it.

The protocol is driven as uvicorn drives it (a connection made, bytes received), over a transport that records each
write, with small ASGI applications standing for the cases. The project's own responses are served with it by every
test that uses ``asgi_live_server`` (tests/servers/asgi_server.py), streams and hang-ups included.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from connectors_admin.http_protocol import PROTOCOL, OneWriteHttpToolsProtocol
from tests.conftest import basic_auth

pytest_plugins = ["tests.servers.asgi_server"]

JSON_BODY = b'{"status":"ok"}'
GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


class RecordingTransport:
    """An asyncio transport that keeps what is written, one entry a write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args, **kwargs) -> None:
        pass


def sized_json(status: int = 200, body: bytes = JSON_BODY):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    return app


async def serve(app, request: bytes, transport: RecordingTransport, *, settle: float = 0.05) -> RecordingTransport:
    config = Config(app, http=PROTOCOL, lifespan="off", log_level="warning", access_log=False)
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    assert isinstance(protocol, OneWriteHttpToolsProtocol)
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.sleep(settle)
    protocol.connection_lost(None)
    return transport


def run(app, request: bytes = GET, transport: RecordingTransport | None = None) -> RecordingTransport:
    return asyncio.run(serve(app, request, transport or RecordingTransport()))


def test_a_response_of_known_length_is_written_once_head_and_body_together():
    transport = run(sized_json())
    assert len(transport.writes) == 1
    head, body = transport.writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 15" in head
    assert body == JSON_BODY


def test_a_body_sent_in_pieces_goes_with_the_head_first_then_piece_by_piece():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    transport = run(app)
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\nabc")
    assert transport.writes[1] == b"def"


def test_a_stream_has_its_head_written_before_its_first_event():
    transport = RecordingTransport()
    written_before_first_event: list[int] = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        written_before_first_event.append(len(transport.writes))
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    run(app, transport=transport)
    assert written_before_first_event == [1]  # the head, alone, before any event
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in transport.writes[0]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"HEAD / HTTP/1.1\r\nHost: example\r\n\r\n", 200),
    (GET, 204),
    (GET, 304),
])
def test_a_response_without_a_body_has_its_head_written_at_once(request_bytes, status):
    transport = RecordingTransport()
    written_after_head: list[int] = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"15")] if status == 200 else []})
        written_after_head.append(len(transport.writes))
        await send({"type": "http.response.body", "body": b""})

    run(app, request_bytes, transport)
    assert written_after_head == [1]
    assert transport.writes[0].startswith(b"HTTP/1.1 %d" % status)
    assert b"".join(transport.writes).count(b"HTTP/1.1") == 1


def test_a_connection_that_closes_after_the_response_gets_head_and_body_before_the_close():
    transport = run(sized_json(), b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"\r\n\r\n" + JSON_BODY)
    assert transport.closed


def test_pipelined_requests_are_each_answered_in_one_write_in_order():
    async def app(scope, receive, send):
        await receive()
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    transport = run(app, b"GET /first HTTP/1.1\r\nHost: e\r\n\r\nGET /second HTTP/1.1\r\nHost: e\r\n\r\n")
    assert [write.rsplit(b"\r\n\r\n", 1)[1] for write in transport.writes] == [b"/first", b"/second"]


def test_a_body_longer_than_declared_is_refused_as_uvicorn_refuses_it_and_the_head_still_goes():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"too long"})

    transport = run(app)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"\r\n\r\n")
    assert b"too long" not in b"".join(transport.writes)
    assert transport.closed  # uvicorn closes a connection whose application failed mid-response


def test_the_api_answers_with_a_content_length_over_the_short_path_and_in_one_piece(asgi_live_server, operator,
                                                                                    make_connector):
    connector = make_connector()
    headers = {"Authorization": basic_auth(operator)}
    for path in (f"/api/actions/connector/{connector.pk}", "/api/actions/connectors", "/api/actions/connector/none"):
        response = httpx.get(f"{asgi_live_server.url}{path}", headers=headers)
        assert response.status_code in (200, 404)
        assert int(response.headers["content-length"]) == len(response.content) > 0
        assert "transfer-encoding" not in response.headers


def test_the_test_server_serves_with_the_protocol_make_run_uses():
    from tests.servers.asgi_server import HTTP_PROTOCOL

    assert HTTP_PROTOCOL == PROTOCOL
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert f"--http {PROTOCOL}" in makefile


def test_the_gunicorn_worker_serves_with_the_protocol_too():
    from connectors_admin.gunicorn_worker import Worker

    assert Worker.CONFIG_KWARGS["http"] == PROTOCOL
    assert Worker.CONFIG_KWARGS["loop"] == "auto"
