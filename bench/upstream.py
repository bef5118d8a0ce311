"""A fast OpenAI-shaped upstream for benchmarks: uvloop + httptools, the same responses as tests/servers/fake_openai.py.

tests/servers/fake_openai.py (asyncio streams, recording every request) is right for tests but spends ~10x more CPU per
request; on a 2-core machine that CPU is taken from the server being measured. This one answers the scenarios
the benchmarks use, from the first path segment (``/<scenario>/v1/chat/completions``):

- ``ok``: a chat completion with usage
- ``sleep-<ms>``: the same after <ms> milliseconds
- ``stream``: SSE chunks with a final usage chunk, then ``[DONE]``
- ``stream-slow-<ms>``: the same with <ms> between chunks
- ``long-<n>`` / ``usage-<n>``: as tests/servers/fake_openai.py (<n> completion tokens unless the cap stops them sooner /
  <n> tokens in all whatever the cap); ``usage-<n>-<ms>`` answers after <ms> milliseconds

Run: ``python -m bench.upstream --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time

import httptools

from tests.servers.fake_openai import REPLY_WORDS, completion, usage_for


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.busy = False  # a response is being produced: pipelined requests wait (tests never pipeline)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url):
        self.url += url

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        keep_alive = self.parser.should_keep_alive()
        scenario = url.split(b"/", 2)[1].decode() if url.count(b"/") >= 2 else "ok"
        if scenario.startswith("sleep-"):
            asyncio.get_running_loop().call_later(int(scenario[6:]) / 1000, self.respond_json, body, keep_alive)
        elif scenario.startswith(("long-", "usage-")):
            parts = scenario.split("-")
            delay = int(parts[2]) / 1000 if len(parts) > 2 else 0
            asyncio.get_running_loop().call_later(delay, self.respond_json, body, keep_alive, scenario)
        elif scenario.startswith("stream"):
            delay = int(scenario.rsplit("-", 1)[1]) / 1000 if scenario.startswith("stream-slow-") else 0
            asyncio.ensure_future(self.respond_stream(body, delay, keep_alive))
        else:
            self.respond_json(body, keep_alive)

    def respond_json(self, body: bytes, keep_alive: bool, scenario: str = "ok"):
        if self.transport.is_closing():
            return
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        data = json.dumps(completion(payload, scenario=scenario)).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data)
        )
        if not keep_alive:
            self.transport.close()

    async def respond_stream(self, body: bytes, delay: float, keep_alive: bool):
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        write = self.transport.write
        write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
              b"transfer-encoding: chunked\r\n\r\n")

        def chunk(data: str) -> None:
            raw = f"data: {data}\n\n".encode()
            write(b"%x\r\n%s\r\n" % (len(raw), raw))

        model = payload.get("model") or "gpt-4o"
        for index, word in enumerate(REPLY_WORDS.split(" ")):
            if self.transport.is_closing():
                return
            delta = {"role": "assistant", "content": word} if index == 0 else {"content": " " + word}
            chunk(json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                              "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            if delay:
                await asyncio.sleep(delay)
        chunk(json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                          "model": model, "choices": [], "usage": usage_for(payload)}))
        chunk("[DONE]")
        write(b"0\r\n\r\n")
        if not keep_alive:
            self.transport.close()


def serve(port: int, host: str = "127.0.0.1") -> None:
    import uvloop

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))

    async def main():
        server = await asyncio.get_running_loop().create_server(UpstreamProtocol, sock=sock, backlog=8192)
        print(f"bench upstream on http://{host}:{port} (pid {os.getpid()})", flush=True)
        await server.serve_forever()

    uvloop.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    try:
        serve(args.port, args.host)
    except KeyboardInterrupt:
        pass
