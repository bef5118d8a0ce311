"""Bounded streams under hostile upstreams: the server's memory before, during and after N such streams at once.

The upstream is tests/servers/hostile_upstream.py (every write waits for the gateway to read it). One phase per scenario,
each with ``--streams`` streams at once, half through ``_execute`` (sub-action ``stream``, HTTP Basic) and half
through ``/api/openai/<id>/v1/chat/completions`` (``stream: true``, Bearer API key):

- ``flood-65536``: 64 KB content events forever, cut at ``STREAM_MAX_BYTES`` (the production default, 64 MiB, unless
  ``--max-bytes``);
- ``noline``: a line that never ends, cut at ``STREAM_MAX_EVENT_BYTES`` (default 1 MiB);
- ``trickle-50``: a word every 50 ms, cut at ``STREAM_MAX_SECONDS`` (``--max-seconds``, 60 here: the default hour
  would make a long benchmark; the floods must end within it to be cut by their own bound);
- ``idle``: one event and then silence, cut at ``responseTimeout`` (``--idle-seconds``, 5 here).

Reported per phase: the streams' outcome (events recorded, and the bound each names), the bytes each caller got,
the wall time, and the RSS of the app's worker process(es) summed: before the phase, the highest sampled during
it (every 50 ms), and after it. The bench client reads as fast as it can and keeps no body. A warm-up phase, one
stream of the first scenario, comes first: the first token estimate loads the tokenizer's vocabularies (about
150 MiB, once per process), which is not growth caused by the streams.

Example: ``python -m bench.stream_bounds`` (``--streams 10``); a quick check: ``--streams 2 --max-bytes 4mb
--scenarios flood-65536 noline``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import harness
from bench.loadgen import install_uvloop, print_table

SCENARIOS = ("flood-65536", "noline", "trickle-50", "idle")
BOUNDS = ("STREAM_MAX_BYTES", "STREAM_MAX_EVENT_BYTES", "STREAM_MAX_SECONDS", "responseTimeout")


@dataclass
class StreamResult:
    status: int
    received: int  # body bytes
    ended: bool  # the server ended the response (chunked terminator)
    interrupted: bool  # an OpenAI caller got the stream_interrupted error event


async def one_stream(port: int, path: str, body: bytes, headers: dict) -> StreamResult:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
                 "Connection: close", *[f"{k}: {v}" for k, v in headers.items()]]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        received, tail = 0, b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return StreamResult(status, received, True, b"stream_interrupted" in tail)
            chunk = (await reader.readexactly(size + 2))[:size]  # and its CRLF
            received += size
            tail = (tail + chunk)[-4096:]
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return StreamResult(0, 0, False, False)
    finally:
        writer.close()


async def phase(stack: harness.Stack, scenario: str, streams: int) -> tuple[list[StreamResult], float, list[int]]:
    """``streams`` streams at once; (results, wall seconds, RSS samples in KiB)."""
    connector = stack.connector(scenario)
    chat = json.dumps({"model": "gpt-4o", "stream": True,
                       "messages": [{"role": "user", "content": "Hello"}]}).encode()
    execute = json.dumps({"params": {"subAction": "stream", "subActionParams": {
        "stream": True, "body": json.dumps({"messages": [{"role": "user", "content": "Hello"}]})}}}).encode()
    json_headers = {"Content-Type": "application/json"}
    targets = [
        (f"/api/openai/{connector}/v1/chat/completions", chat,
         {**json_headers, "Authorization": "Bearer " + stack.seed["api_key"]}),
        (f"/api/actions/connector/{connector}/_execute", execute,
         {**json_headers, "Authorization": stack.basic_header, "kbn-xsrf": "true"}),
    ]
    samples: list[int] = []
    running = True

    async def sample() -> None:
        while running:
            samples.append(stack.server_rss_kib())
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    started = time.perf_counter()
    results = await asyncio.gather(*(one_stream(stack.app_port, *targets[i % 2]) for i in range(streams)))
    elapsed = time.perf_counter() - started
    running = False
    await sampler
    return list(results), elapsed, samples


def event_reasons(stack: harness.Stack, connector_id: str, skip: int) -> list[str]:
    """The bound named by each event of ``connector_id`` after its first ``skip`` (in the order recorded)."""
    import psycopg

    with psycopg.connect(stack.database_url.replace("postgres://", "postgresql://", 1)) as conn:
        rows = conn.execute("SELECT error_message FROM usage_executionevent WHERE connector_id = %s ORDER BY id "
                            "OFFSET %s", (connector_id, skip)).fetchall()
    return [next((bound for bound in BOUNDS if bound in message), message[:60] or "(none)") for (message,) in rows]


def wait_for_events(stack: harness.Stack, connector_id: str, expected: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while stack.count_events(connector_id) < expected and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10, help="streams at once per scenario")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--max-bytes", default="", help="STREAM_MAX_BYTES for the app (default: its own, 64mb)")
    parser.add_argument("--max-seconds", type=int, default=60, help="STREAM_MAX_SECONDS for the app")
    parser.add_argument("--idle-seconds", type=int, default=5, help="responseTimeout for the app")
    parser.add_argument("--workers", type=int, default=1, help="app worker processes (1: every stream in one)")
    args = parser.parse_args()
    install_uvloop()

    with tempfile.TemporaryDirectory() as folder:
        actions = Path(folder) / "actions.yml"
        actions.write_text(f"responseTimeout: {args.idle_seconds}s\n")
        app_env = {"ACTIONS_CONFIG": str(actions), "STREAM_MAX_SECONDS": str(args.max_seconds)}
        if args.max_bytes:
            app_env["STREAM_MAX_BYTES"] = args.max_bytes
        rows = []
        with harness.stack(args.scenarios, workers=args.workers, upstream="hostile", app_env=app_env) as stack:
            phases = [(args.scenarios[0], 1, "warm-up: ")] + [(scenario, args.streams, "") for scenario in args.scenarios]
            for scenario, streams, label in phases:
                connector = stack.connector(scenario)
                recorded = stack.count_events(connector)
                before = stack.server_rss_kib()
                results, elapsed, samples = asyncio.run(phase(stack, scenario, streams))
                wait_for_events(stack, connector, recorded + streams)
                time.sleep(1.0)  # let the server settle after the last stream
                after = stack.server_rss_kib()
                reasons = event_reasons(stack, connector, recorded)
                named = ", ".join(f"{reasons.count(r)} {r}" for r in sorted(set(reasons)))
                received = sorted(r.received for r in results)
                rows.append([
                    label + scenario, streams,
                    f"{sum(r.ended for r in results)}/{streams}",
                    f"{sum(r.interrupted for r in results)}/{(streams + 1) // 2}",
                    f"{len(reasons)}: {named}",
                    f"{received[0] / 1048576:.2f}-{received[-1] / 1048576:.2f}",
                    elapsed, before / 1024, max(samples or [0]) / 1024, after / 1024,
                ])
    print(harness.machine_description())
    limits = (f"STREAM_MAX_BYTES {args.max_bytes or 'default (64mb)'}, STREAM_MAX_EVENT_BYTES default (1mb), "
              f"STREAM_MAX_SECONDS {args.max_seconds}, responseTimeout {args.idle_seconds}s; "
              f"{args.workers} worker(s)")
    print_table(f"Stream bounds ({limits})",
                ["scenario", "streams", "ended", "openai interrupted", "events: bound named", "MiB per caller",
                 "wall s", "RSS before MiB", "RSS peak during MiB", "RSS after MiB"], rows)


if __name__ == "__main__":
    main()
