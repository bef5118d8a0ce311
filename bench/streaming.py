"""Streaming: time to the first SSE event through the gateway vs direct, sequential keep-alive, interleaved.

The upstream streams 10 chunks ``--chunk-ms`` apart (scenario ``stream-slow-<ms>``), so a gateway that buffered
the response would show a first-event time near 10 x chunk-ms instead of near the direct one. Measured: time to
the first response byte (head), time to the first ``data:`` event, and time to the end of the stream.

Targets: ``direct``, ``openai-stream`` (``POST /api/openai/<id>/v1/chat/completions`` with ``stream: true``,
Bearer API key) and ``execute-stream`` (``_execute`` with sub-action ``stream`` and ``stream: true``, Basic).

Example: ``python -m bench.streaming --rounds 300``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench import harness
from bench.loadgen import install_uvloop, percentile, print_table


class StreamingConnection:
    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        return self

    async def close(self):
        self.writer.close()

    async def stream(self, path: str, body: bytes, headers: dict) -> tuple[int, float, float, float, bytes]:
        """(status, head s, first data event s, end s, body)."""
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        started = time.perf_counter()
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        head_s = time.perf_counter() - started
        status = int(head.split(b" ", 2)[1])
        header_map = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            header_map[name.strip().lower()] = value.strip()
        first_data = None
        parts = []
        if "content-length" in header_map:
            parts.append(await self.reader.readexactly(int(header_map["content-length"])))
            first_data = time.perf_counter() - started
        else:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                chunk = await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                if first_data is None and b"data:" in chunk:
                    first_data = time.perf_counter() - started
                parts.append(chunk)
        return status, head_s, first_data or float("nan"), time.perf_counter() - started, b"".join(parts)


async def measure(targets: dict, rounds: int, warmup: int) -> dict[str, list[tuple[float, float, float]]]:
    connections = {name: await StreamingConnection(port).open() for name, (port, *_r) in targets.items()}
    samples = {name: [] for name in targets}
    for index in range(warmup + rounds):
        for name, (_port, path, body, headers) in targets.items():
            status, head_s, first_s, end_s, data = await connections[name].stream(path, body, headers)
            if status != 200 or b"[DONE]" not in data and b'"usage"' not in data:
                raise SystemExit(f"{name}: HTTP {status}: {data[:300]!r}")
            if index >= warmup:
                samples[name].append((head_s * 1000, first_s * 1000, end_s * 1000))
    for connection in connections.values():
        await connection.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--chunk-ms", type=int, default=20, help="delay between the upstream's chunks")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    install_uvloop()

    scenario = f"stream-slow-{args.chunk_ms}"
    with harness.stack([scenario], workers=args.workers) as stack:
        connector = stack.connector(scenario)
        chat = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        execute = json.dumps({"params": {"subAction": "stream", "subActionParams": {
            "body": json.dumps({"messages": [{"role": "user", "content": "Hello"}]}), "stream": True}}}).encode()
        json_headers = {"Content-Type": "application/json"}
        targets = {
            "direct": (stack.upstream_port, f"/{scenario}/v1/chat/completions", chat, json_headers),
            "openai-stream": (stack.app_port, f"/api/openai/{connector}/v1/chat/completions", chat,
                              {**json_headers, "Authorization": "Bearer " + stack.seed["api_key"]}),
            "execute-stream": (stack.app_port, f"/api/actions/connector/{connector}/_execute", execute,
                               {**json_headers, "Authorization": stack.basic_header, "kbn-xsrf": "true"}),
        }
        samples = asyncio.run(measure(targets, args.rounds, args.warmup))
        events = stack.count_events(connector)

    direct_first = percentile([s[1] for s in samples["direct"]], 0.5)
    rows = []
    for name, values in samples.items():
        first = [s[1] for s in values]
        rows.append([name, len(values), percentile([s[0] for s in values], 0.5), percentile(first, 0.5),
                     percentile(first, 0.99), percentile([s[2] for s in values], 0.5),
                     percentile(first, 0.5) - direct_first if name != "direct" else 0.0])
    print(harness.machine_description())
    print_table(f"Streaming, ms (upstream: 10 chunks {args.chunk_ms} ms apart; {args.rounds} rounds)",
                ["target", "n", "head p50", "first event p50", "first event p99", "end p50", "added first p50"], rows)
    print(f"events recorded: {events} (expected {2 * (args.rounds + args.warmup)})")


if __name__ == "__main__":
    main()
