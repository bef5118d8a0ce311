"""The direct connections' HTTP/1.1 client (connectors/outbound/direct_http.py), against servers on real sockets
that write exactly the bytes each test needs. The outbound path's own tests (this folder) run every call through it
as well: redirects, timeouts, TLS, masking, streams and their bounds."""

from __future__ import annotations

import asyncio
import errno
import gzip
import zlib
from contextlib import asynccontextmanager

import pytest

from connectors.outbound import direct_http

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"ok\": true}"


class Scripted:
    """A server that reads each request's head (and its Content-Length body), records it, and answers with what
    ``answer(request_number)`` gives: bytes to write, or None to close the connection without a word."""

    def __init__(self, answer, *, close_after: bool = False, delay: float = 0):
        self.answer, self.close_after, self.delay = answer, close_after, delay
        self.requests: list[bytes] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0

    async def handle(self, reader, writer):
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = self.answer(len(self.requests))
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    return
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def serving(answer, **kwargs):
    scripted = Scripted(answer, **kwargs)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    scripted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        yield scripted
    finally:
        server.close()


def client(**kwargs) -> direct_http.DirectClient:
    return direct_http.DirectClient(None, limit=kwargs.pop("limit", 10), keepalive_seconds=kwargs.pop("keepalive", 30))


async def whole(response: direct_http.Response) -> bytes:
    body = b"".join([chunk async for chunk in response.chunks()])
    response.release()
    return body


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_request_is_written_in_one_piece_with_host_length_and_the_default_accept_headers():
    async def go():
        async with serving(lambda n: OK) as server:
            http = client()
            response = await http.request("POST", server.url.replace("completions", "compl etions?a=b c"),
                                          {"Authorization": "Bearer k", "Accept-Encoding": "identity"}, b'{"x": 1}')
            assert response.status == 200 and response.reason == "OK"
            assert response.headers["content-type"] == "application/json"
            assert await whole(response) == b'{"ok": true}'
            await http.close()
            return server.requests[0]

    request = run(go())
    head, body = request.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/compl%20etions?a=b%20c HTTP/1.1"
    assert lines[1].startswith(b"Host: 127.0.0.1:")
    assert b"Authorization: Bearer k" in lines and b"Content-Length: 8" in lines and b"Accept: */*" in lines
    assert b"Accept-Encoding: identity" in lines and b"Accept-Encoding: gzip, deflate" not in lines
    assert b"User-Agent: connectors-admin" in lines
    assert body == b'{"x": 1}'


def test_a_get_sends_no_body_and_no_length():
    async def go():
        async with serving(lambda n: OK) as server:
            http = client()
            await whole(await http.request("GET", server.url, {}, None))
            await http.close()
            return server.requests[0]

    assert b"content-length" not in run(go()).lower()


@pytest.mark.parametrize("header", [("X-Evil", "a\r\nX-Injected: 1"), ("X-Evil", "a\nb"), ("X-Evil", "a\x00"),
                                   ("X-Evil\r\nX-Injected", "1"), ("X-Evil: 1", "2")])
def test_a_header_that_would_split_the_request_is_refused_before_anything_is_sent(header):
    async def go():
        async with serving(lambda n: OK) as server:
            http = client()
            with pytest.raises(direct_http.InvalidRequest) as refused:
                await http.request("POST", server.url, dict([header]), b"{}")
            await asyncio.sleep(0.05)
            await http.close()
            return server.connections, str(refused.value)

    connections, message = run(go())
    assert connections == 0 and header[1] not in message


def test_keep_alive_connections_are_reused_and_closed_after_the_keepalive_time():
    async def go():
        async with serving(lambda n: OK) as server:
            http = client(keepalive=0.3)
            for _ in range(3):
                await whole(await http.request("POST", server.url, {}, b"{}"))
            reused = server.connections
            await asyncio.sleep(0.5)  # idle longer than the keep-alive time: closed by the pool
            closed_when_idle = server.open_now
            await whole(await http.request("POST", server.url, {}, b"{}"))
            await http.close()
            return reused, closed_when_idle, server.connections

    assert run(go()) == (1, 0, 2)


def test_a_chunked_body_is_read_whole_and_the_connection_reused():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    async def go():
        async with serving(lambda n: chunked) as server:
            http = client()
            bodies = [await whole(await http.request("POST", server.url, {}, b"{}")) for _ in range(2)]
            await http.close()
            return bodies, server.connections

    assert run(go()) == ([b"hello world"] * 2, 1)


def test_a_body_without_a_length_runs_until_the_server_closes_and_the_connection_is_not_reused():
    async def go():
        async with serving(lambda n: b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True) as server:
            http = client()
            bodies = [await whole(await http.request("POST", server.url, {}, b"{}")) for _ in range(2)]
            await http.close()
            return bodies, server.connections

    assert run(go()) == ([b"until the end"] * 2, 2)


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),  # as the RFC says: zlib-wrapped
    ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send it
])
def test_gzip_and_deflate_bodies_are_inflated(encoding, compress):
    text = b'{"choices": []}' * 1000
    packed = compress(text)
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        encoding.encode(), len(packed), packed)

    async def go():
        async with serving(lambda n: answer) as server:
            http = client()
            body = await whole(await http.request("POST", server.url, {}, b"{}"))
            await http.close()
            return body

    assert run(go()) == text


def test_a_compressed_bomb_is_inflated_in_bounded_pieces():
    packed = gzip.compress(b"\0" * (20 * 1024 * 1024))  # 20 MiB of zeros in about 20 KiB
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed)

    async def go():
        async with serving(lambda n: answer) as server:
            http = client()
            response = await http.request("POST", server.url, {}, b"{}")
            sizes = []
            async for piece in response.chunks():
                sizes.append(len(piece))
                if sum(sizes) > 1024 * 1024:
                    break  # as the response size limit stops a reader
            response.release()
            await http.close()
            return sizes

    sizes = run(go())
    assert max(sizes) <= direct_http.INFLATED_PIECE and sum(sizes) <= 1024 * 1024 + direct_http.INFLATED_PIECE


def test_a_corrupt_compressed_body_is_a_malformed_response():
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\n\r\nnot gzip!!"

    async def go():
        async with serving(lambda n: answer) as server:
            http = client()
            response = await http.request("POST", server.url, {}, b"{}")
            with pytest.raises(direct_http.MalformedResponse):
                await whole(response)
            response.release()
            await http.close()

    run(go())


def test_a_body_cut_short_breaks_the_connection_and_the_next_request_gets_a_new_one():
    answers = {1: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", 2: OK}

    async def go():
        async with serving(lambda n: answers[n], close_after=True) as server:
            http = client()
            response = await http.request("POST", server.url, {}, b"{}")
            with pytest.raises(direct_http.ConnectionBroke, match="Response payload is not completed"):
                await whole(response)
            response.release()
            body = await whole(await http.request("POST", server.url, {}, b"{}"))
            await http.close()
            return body, server.connections

    assert run(go()) == (b'{"ok": true}', 2)


def test_a_server_that_closes_without_answering_is_a_disconnection():
    async def go():
        async with serving(lambda n: None) as server:
            http = client()
            with pytest.raises(direct_http.ConnectionBroke, match="Server disconnected"):
                await http.request("POST", server.url, {}, b"{}")
            await http.close()

    run(go())


@pytest.mark.parametrize("answer", [b"HTTP/1.1 2x0 OK\r\n\r\n", b"garbage\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"])
def test_bytes_that_are_not_a_response_are_a_malformed_response(answer):
    async def go():
        async with serving(lambda n: answer) as server:
            http = client()
            with pytest.raises(direct_http.MalformedResponse):
                response = await http.request("POST", server.url, {}, b"{}")
                await whole(response)
            await http.close()

    run(go())


def test_a_connection_that_answered_twice_is_not_reused():
    async def go():
        async with serving(lambda n: OK + OK) as server:
            http = client()
            first = await whole(await http.request("POST", server.url, {}, b"{}"))
            await asyncio.sleep(0.05)
            second = await whole(await http.request("POST", server.url, {}, b"{}"))
            await http.close()
            return first, second, server.connections

    assert run(go()) == (b'{"ok": true}', b'{"ok": true}', 2)


def test_an_informational_response_is_skipped():
    async def go():
        async with serving(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n" + OK) as server:
            http = client()
            response = await http.request("POST", server.url, {}, b"{}")
            status, body = response.status, await whole(response)
            await http.close()
            return status, body

    assert run(go()) == (200, b'{"ok": true}')


def test_a_response_left_unread_closes_its_connection():
    async def go():
        async with serving(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" if n == 1 else OK) as server:
            http = client()
            response = await http.request("POST", server.url, {}, b"{}")
            response.release()  # the body never came
            body = await whole(await http.request("POST", server.url, {}, b"{}"))
            await http.close()
            return body, server.connections

    assert run(go()) == (b'{"ok": true}', 2)


def test_no_more_connections_than_the_limit_are_open_and_every_caller_is_answered():
    async def go():
        async with serving(lambda n: OK, delay=0.05) as server:
            http = client(limit=2)

            async def one():
                return await whole(await http.request("POST", server.url, {}, b"{}"))

            bodies = await asyncio.gather(*(one() for _ in range(6)))
            await http.close()
            return bodies, server.most_open

    bodies, most_open = run(go())
    assert bodies == [b'{"ok": true}'] * 6 and most_open == 2


def test_a_refused_connection_is_a_connect_failure_with_the_systems_error():
    async def go():
        async with serving(lambda n: OK) as server:
            url = server.url
        await asyncio.sleep(0.05)  # the server is gone: its port refuses
        http = client()
        with pytest.raises(direct_http.ConnectFailed) as failed:
            await http.request("POST", url, {}, b"{}")
        await http.close()
        return failed.value

    failure = run(go())
    assert failure.os_error.errno == errno.ECONNREFUSED


def test_a_reader_that_stops_reading_stops_the_socket_being_read():
    big = b"x" * (8 * 1024 * 1024)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)

    async def go():
        async with serving(lambda n: answer) as server:
            http = client()
            response = await http.request("POST", server.url, {}, b"{}")
            await asyncio.sleep(0.3)  # nothing read meanwhile
            held = response._connection.buffered
            body = await whole(response)
            await http.close()
            return held, len(body)

    held, length = run(go())
    assert held <= 2 * direct_http.MAX_BUFFERED and length == len(big)


def test_closing_the_client_closes_its_idle_connections():
    async def go():
        async with serving(lambda n: OK) as server:
            http = client()
            await whole(await http.request("POST", server.url, {}, b"{}"))
            await http.close()
            await asyncio.sleep(0.05)
            return http.closed, server.open_now

    assert run(go()) == (True, 0)
