"""N requests at once against a slow upstream: all must succeed, with exactly N events, within a time bound.

Each request has its own connection, all opened and sent at the same moment. First the same generator runs
direct against the upstream (the baseline: what the generator and the upstream cost by themselves), then
through the gateway (``_execute`` run, HTTP Basic as Kibana scripts send it, or an API key).

A slow provider:  ``python -m bench.concurrency --requests 200 --upstream-ms 500 --limit 5``
1,000 at once:   ``python -m bench.concurrency --requests 1000 --upstream-ms 1000 --limit 3``
With spaces in use: ``--space team-a`` (bench/harness.py): the connector and the API key in a second space, the
Basic user's role granted there only, every call under ``/s/team-a/``; the events are counted in that space.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench import harness
from bench.loadgen import (
    Connection,
    HTTPClientError,
    install_uvloop,
    percentile,
    print_table,
)


async def burst(port: int, path: str, body: bytes, headers: dict, count: int) -> tuple[float, list, list[float]]:
    """Open ``count`` connections, send one request on each at once; (wall seconds, failures, latencies ms)."""
    started = time.perf_counter()

    async def one(index: int):
        connection = Connection("127.0.0.1", port)
        try:
            response = await connection.request("POST", path, body, headers)
        except (HTTPClientError, OSError) as exc:
            return index, f"{type(exc).__name__}: {exc}", 0.0
        finally:
            await connection.close()
        ok = response.status == 200 and (b'"status": "ok"' in response.body or b'"choices"' in response.body)
        return index, None if ok else f"HTTP {response.status}: {response.body[:200]!r}", response.elapsed * 1000

    results = await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - started
    failures = [(i, error) for i, error, _ms in results if error]
    return wall, failures, [ms for _i, error, ms in results if not error]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests sent at once")
    parser.add_argument("--upstream-ms", type=int, default=1000, help="how long the upstream takes to answer")
    parser.add_argument("--limit", type=float, default=3.0, help="the target: total wall time in seconds")
    parser.add_argument("--auth", choices=["basic", "apikey"], default="basic")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--repeat", type=int, default=3, help="bursts through the gateway (the best and worst are shown)")
    parser.add_argument("--upstream", choices=["fast", "fake"], default="fast",
                        help="bench/upstream.py (default) or tests/servers/fake_openai.py")
    parser.add_argument("--write-behind", action="store_true", help="run the app with EVENT_WRITE_BEHIND=true")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    harness.add_governed_argument(parser)
    harness.add_space_argument(parser)
    args = parser.parse_args()
    install_uvloop()

    scenario = f"sleep-{args.upstream_ms}"
    app_env = {"EVENT_WRITE_BEHIND": "true" if args.write_behind else "false"}
    with harness.stack([scenario], workers=args.workers, upstream=args.upstream, app_env=app_env, governed=args.governed,
                       space=args.space) as stack:
        connector = stack.connector(scenario)
        gateway_path, _body, gateway_headers = harness.target_request(stack, args.auth, connector)
        # One request first, as a Kibana script's first call would: it pays for the password hash (hundreds of ms).
        asyncio.run(burst(stack.app_port, gateway_path, harness.execute_body(), gateway_headers, 1))

        rows = []
        wall, failures, latencies = asyncio.run(
            burst(stack.upstream_port, f"/{scenario}/v1/chat/completions", harness.chat_body(), {}, args.requests)
        )
        rows.append(["direct (generator + upstream)", args.requests, args.requests - len(failures), "-", wall,
                     percentile(latencies, 0.5) / 1000, percentile(latencies, 0.99) / 1000])
        results = {"direct": {"wall_s": wall, "failures": len(failures)}, "gateway": []}
        all_ok = not failures
        for attempt in range(args.repeat):
            before = stack.count_events(connector)
            wall, failures, latencies = asyncio.run(
                burst(stack.app_port, gateway_path, harness.execute_body(), gateway_headers, args.requests)
            )
            if args.write_behind:
                deadline = time.monotonic() + 30
                while stack.count_events(connector) - before < args.requests and time.monotonic() < deadline:
                    time.sleep(0.1)
            events = stack.count_events(connector) - before
            rows.append([f"gateway, {args.auth}, burst {attempt + 1}", args.requests, args.requests - len(failures),
                         events, wall, percentile(latencies, 0.5) / 1000, percentile(latencies, 0.99) / 1000])
            results["gateway"].append({"wall_s": wall, "failures": len(failures), "events": events})
            all_ok = all_ok and not failures and events == args.requests and wall < args.limit
            for index, error in failures[:5]:
                print(f"  request {index} failed: {error}")
        rollup = stack.count_rollup_requests(connector)
        events_summary = stack.events_summary()

    print(harness.machine_description())
    print_table(
        f"{args.requests} requests at once, upstream waits {args.upstream_ms} ms, {args.workers} workers"
        f"{', write-behind' if args.write_behind else ', group commit'} (target: all succeed, "
        f"{args.requests} events, under {args.limit:g} s)",
        ["run", "sent", "succeeded", "events", "wall s", "p50 s", "p99 s"],
        rows,
    )
    print(f"rollup requests for the connector: {rollup} (1 warm-up + {args.repeat} x {args.requests}); "
          f"{events_summary}")
    print("RESULT:", "PASS" if all_ok else "FAIL")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
