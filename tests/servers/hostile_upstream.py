"""An OpenAI-shaped upstream whose streams never end well, over real sockets, for tests and bench/stream_bounds.py.

The first path segment picks the stream (``http://127.0.0.1:<port>/<scenario>/v1/chat/completions``); each one
answers ``200 text/event-stream`` and then:

- ``flood-<bytes>``: content events of about <bytes> each, back to back, forever;
- ``noline``: the start of a ``data:`` line, then bytes without a newline, forever;
- ``noline-gated-<bytes>``: the same, but after <bytes> it waits for ``release()`` (the test does something in
  the meantime) before going on forever;
- ``trickle-<ms>``: a one-word content event every <ms> milliseconds, forever (a slowloris);
- ``idle``: one content event, then nothing, with the connection held open.

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
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            exchange = Exchange(scenario=target.strip("/").split("/", 1)[0])
            self.connections.append(exchange)
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


if __name__ == "__main__":
    import sys

    server = HostileUpstream(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"hostile upstream on http://{server.host}:{server.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
