"""An OpenAI-shaped upstream whose streams never end well, over real sockets, for tests and bench/stream_bounds.py.

The first path segment picks the stream (``http://127.0.0.1:<port>/<scenario>/v1/chat/completions``); each one
answers ``200 text/event-stream`` and then:

- ``flood-<bytes>``: content events of about <bytes> each, back to back, forever;
- ``noline``: the start of a ``data:`` line, then bytes without a newline, forever;
- ``noline-gated-<bytes>``: the same, but after <bytes> it waits for ``release()`` (the test does something in
  the meantime) before going on forever;
- ``trickle-<ms>``: a one-word content event every <ms> milliseconds, forever (a slowloris);
- ``idle``: one content event, then nothing, with the connection held open.

And the ``echo-<spelling>[-error]`` scenarios, which echo the key the request carried (``Authorization: Bearer``)
spelled JSON-escaped, so that no byte form of it is in the answer and only a JSON reader sees it: ``one`` (its first
character as ``\\u0073``), ``all`` (every character as ``\\uXXXX``, upper-case hex), ``slash`` (its ``/`` as ``\\/``)
and ``utf16`` (the key as it is, the body in UTF-16). The key is in the message's text, the model, an object key at
depth and the id. A request with ``"stream": true`` gets it in SSE events written a few bytes at a time, so that
chunks end inside escapes; ``-error`` answers 400 with the key in ``error.message``.

Every write waits for the socket to drain, so the upstream goes only as fast as the gateway reads. Each exchange is
kept in ``connections`` (scenario, body bytes written, and an event set once the peer has closed the connection).
Run on its own: ``python -m tests.servers.hostile_upstream <port>``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

FLOOD_WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


def content_event(text: str) -> bytes:
    body = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def flood_text(size: int) -> str:
    """About ``size`` characters of words, ending with a space (so that joined events read as words)."""
    return (FLOOD_WORDS * (size // len(FLOOD_WORDS) + 1))[:size].rsplit(" ", 1)[0] + " "


@dataclass
class Exchange:
    scenario: str
    sent: int = 0  # body bytes written to the socket
    closed: threading.Event = field(default_factory=threading.Event)  # the peer closed the connection


class HostileUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.connections: list[Exchange] = []
        self.gate_reached = threading.Event()  # a noline-gated stream has sent its bytes and waits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gates: list[asyncio.Event] = []  # the waits of gated streams
        self._thread: threading.Thread | None = None

    def start(self) -> HostileUpstream:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="hostile-upstream")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            async def shutdown() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._loop.stop()

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
            self._thread.join(5)

    def url(self, scenario: str) -> str:
        return f"http://{self.host}:{self.port}/{scenario}/v1/chat/completions"

    def release(self) -> None:
        """Let the gated streams go on."""

        def open_gates() -> None:
            for gate in self._gates:
                gate.set()
            self._gates.clear()

        self._loop.call_soon_threadsafe(open_gates)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        exchange = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode("latin-1")
            length, key = 0, ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                if name.strip().lower() == b"authorization":
                    key = value.strip().decode("utf-8").removeprefix("Bearer ")
            request = json.loads(await reader.readexactly(length) or b"{}")
            exchange = Exchange(scenario=target.strip("/").split("/", 1)[0])
            self.connections.append(exchange)
            if exchange.scenario.startswith("echo-"):
                await self._echo(exchange, writer, key, request.get("stream") is True)
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            # Whichever ends first: the stream (a write fails once the peer is gone) or the peer closing.
            sending = asyncio.ensure_future(self._stream(exchange, writer))
            peer_gone = asyncio.ensure_future(reader.read())
            await asyncio.wait({sending, peer_gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sending, peer_gone):
                task.cancel()
            await asyncio.gather(sending, peer_gone, return_exceptions=True)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            if exchange is not None:
                exchange.closed.set()

    async def _write(self, exchange: Exchange, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
        exchange.sent += len(data)

    async def _echo(self, exchange: Exchange, writer: asyncio.StreamWriter, key: str, stream: bool) -> None:
        spelling, _, error = exchange.scenario.removeprefix("echo-").partition("-")
        encoding = "utf-16" if spelling == "utf16" else "utf-8"

        def spelled_in(payload: dict) -> bytes:  # the payload's ECHO written as the spelled key
            return json.dumps(payload).replace("ECHO", spell(key, spelling)).encode(encoding)

        if error:
            body = {"error": {"message": "Incorrect API key provided: ECHO", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}}
            return await self._answer(exchange, writer, 400, "application/json", [spelled_in(body)])
        usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
        if not stream:
            body = {"id": "chatcmpl-ECHO", "object": "chat.completion", "created": 0, "model": "ECHO",
                    "system_fingerprint": {"ECHO": ["ECHO"]}, "usage": usage,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Your key is ECHO."},
                                 "finish_reason": "stop"}]}
            return await self._answer(exchange, writer, 200, f"application/json; charset={encoding}",
                                      [spelled_in(body)])
        event = {"id": "chatcmpl-ECHO", "object": "chat.completion.chunk", "created": 0, "model": "ECHO",
                 "choices": [{"index": 0, "delta": {"content": "Your key is ECHO."}, "finish_reason": None}]}
        last = {"id": "chatcmpl-0", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
        raw = b"data: " + spelled_in(event) + b"\n\n"
        pieces = [raw[at:at + 3] for at in range(0, len(raw), 3)]
        pieces.append(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
        await self._answer(exchange, writer, 200, "text/event-stream", pieces)

    async def _answer(self, exchange: Exchange, writer: asyncio.StreamWriter, status: int, content_type: str,
                      pieces: list[bytes]) -> None:
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                     f"transfer-encoding: chunked\r\n\r\n".encode())
        for piece in pieces:
            await self._write(exchange, writer, piece)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _stream(self, exchange: Exchange, writer: asyncio.StreamWriter) -> None:
        scenario = exchange.scenario
        if scenario.startswith("flood-"):
            event = content_event(flood_text(int(scenario.split("-")[1])))
            while True:
                await self._write(exchange, writer, event)
        elif scenario.startswith("noline"):
            gate = int(scenario.rsplit("-", 1)[1]) if scenario.startswith("noline-gated-") else None
            await self._write(exchange, writer, b'data: {"choices": [{"index": 0, "delta": {"content": "')
            piece = b"x" * 16384
            while True:
                if gate is not None and exchange.sent >= gate:
                    gate = asyncio.Event()
                    self._gates.append(gate)
                    self.gate_reached.set()
                    await gate.wait()
                    gate = None
                await self._write(exchange, writer, piece)
        elif scenario.startswith("trickle-"):
            delay = int(scenario.split("-")[1]) / 1000
            while True:
                await self._write(exchange, writer, content_event("drip "))
                await asyncio.sleep(delay)
        elif scenario == "idle":
            await self._write(exchange, writer, content_event("Hello"))
            await asyncio.Event().wait()
        else:
            await self._write(exchange, writer, b'data: {"error": {"message": "unknown scenario"}}\n\n')


def spell(key: str, spelling: str) -> str:
    """``key`` as the ``echo-<spelling>`` scenarios write it inside a JSON string (see the module's docstring)."""
    if spelling == "one":
        return f"\\u{ord(key[0]):04x}" + json.dumps(key[1:])[1:-1]
    if spelling == "all":
        return "".join(f"\\u{ord(char):04X}" for char in key)
    if spelling == "slash":
        return json.dumps(key)[1:-1].replace("/", "\\/")
    return json.dumps(key, ensure_ascii=False)[1:-1]  # utf16: the body's encoding hides it


if __name__ == "__main__":
    import sys

    server = HostileUpstream(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"hostile upstream on http://{server.host}:{server.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
