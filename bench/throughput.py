"""Throughput at C concurrent keep-alive clients against an instant upstream, and the server's memory over a run.

The generator runs direct against the upstream first (its own ceiling), then through the gateway (``_execute`` run
with HTTP Basic). The server's RSS (its worker processes, summed) is read after a warm-up and after the run; the
events recorded must equal the requests sent.

Example: ``python -m bench.throughput --clients 64 --requests 100000``  (about 5 minutes on 2 cores)

``--space team-a`` runs with spaces in use (bench/harness.py): the connector in a second space ``team-a``, the
Basic user's role granted there only, a connector in the default space beside it, the calls to
``/s/team-a/api/actions/connector/<id>/_execute``; the events must all be recorded in ``team-a``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench import harness
from bench.loadgen import Connection, install_uvloop, percentile, print_table


async def load(port: int, path: str, body: bytes, headers: dict, clients: int, total: int, deadline_s: float):
    """``clients`` connections send back to back until ``total`` requests are done; (wall s, latencies ms, errors)."""
    remaining = total
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + deadline_s

    async def client():
        nonlocal remaining
        connection = await Connection("127.0.0.1", port).open()
        try:
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                response = await connection.request("POST", path, body, headers)
                if response.status != 200 or b'"status":"error"' in response.body.replace(b" ", b""):
                    errors.append(f"HTTP {response.status}: {response.body[:200]!r}")
                latencies.append(response.elapsed * 1000)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=100_000, help="requests through the gateway")
    parser.add_argument("--warmup", type=int, default=2_000, help="requests before the first RSS reading")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop the run after this long in any case")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-behind", action="store_true", help="run the app with EVENT_WRITE_BEHIND=true")
    parser.add_argument("--json", metavar="FILE")
    harness.add_space_argument(parser)
    args = parser.parse_args()
    install_uvloop()

    app_env = {"EVENT_WRITE_BEHIND": "true" if args.write_behind else "false"}
    with harness.stack(["ok"], workers=args.workers, app_env=app_env, space=args.space) as stack:
        connector = stack.connector("ok")
        path, body, headers = harness.target_request(stack, "basic", connector)
        direct = asyncio.run(load(stack.upstream_port, "/ok/v1/chat/completions", harness.chat_body(), {},
                                  args.clients, max(10_000, args.clients * 100), args.max_seconds))
        asyncio.run(load(stack.app_port, path, body, headers, args.clients, args.warmup, args.max_seconds))
        rss_before = stack.server_rss_kib()
        workers = harness.worker_pids(stack.app.pid) or [stack.app.pid]
        cpu_before = [harness.cpu_seconds(pid) for pid in workers]
        wall, latencies, errors = asyncio.run(
            load(stack.app_port, path, body, headers, args.clients, args.requests, args.max_seconds)
        )
        rss_after = stack.server_rss_kib()
        worker_cpu = [harness.cpu_seconds(pid) - before for pid, before in zip(workers, cpu_before, strict=True)]
        if args.write_behind:
            time.sleep(2)
        events = stack.count_events(connector)
        events_summary = stack.events_summary()

    rows = [
        ["direct (generator + upstream)", len(direct[1]), len(direct[1]) / direct[0], percentile(direct[1], 0.5),
         percentile(direct[1], 0.99), len(direct[2])],
        [f"gateway _execute, Basic, {args.workers} workers", len(latencies), len(latencies) / wall,
         percentile(latencies, 0.5), percentile(latencies, 0.99), len(errors)],
    ]
    print(harness.machine_description())
    print_table(f"{args.clients} concurrent keep-alive clients, instant upstream", ["run", "requests", "req/s",
                "p50 ms", "p99 ms", "errors"], rows)
    print(f"server RSS (workers summed): {rss_before / 1024:.1f} MiB after {args.warmup} warm-up requests, "
          f"{rss_after / 1024:.1f} MiB after {len(latencies)} more: {(rss_after - rss_before) / 1024:+.1f} MiB")
    # How the load fell on the workers: the connections are opened at once, and each worker serves those it accepted.
    print("workers' CPU during the measured requests: " + " / ".join(f"{seconds:.1f} s" for seconds in worker_cpu))
    print(f"events recorded in space {stack.space}: {events} (expected {args.warmup + len(latencies)}); "
          f"{events_summary}")
    for error in errors[:5]:
        print("  error:", error)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rps": len(latencies) / wall, "rss_before_kib": rss_before, "rss_after_kib": rss_after,
                       "events": events, "space": stack.space, "requests": args.warmup + len(latencies), "errors": len(errors)}, handle)
    if errors or events != args.warmup + len(latencies):
        raise SystemExit("FAIL: errors, or not one event per request")


if __name__ == "__main__":
    main()
