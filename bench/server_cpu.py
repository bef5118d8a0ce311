"""CPU time the server spends per execution: one uvicorn worker, sequential keep-alive calls, /proc accounting.

Latency on a 2-CPU machine moves by a few tenths of a millisecond from run to run (the client, the upstream,
PostgreSQL and the workers share the CPUs); the CPU time a worker process spends per request does not, so this is
the figure that shows what a change to the execution path costs, and by how much, before ``bench.latency`` shows
it in milliseconds. It counts every thread of the worker (the event loop, the event writer, the sync thread) and,
separately, every PostgreSQL process (the event log's statement).

Example: ``python -m bench.server_cpu --target apikey --requests 2000 --repeats 3``  (about 40 seconds).
``--governed redis`` puts a budget and a rate limit on the connector (bench/seed.py); ``--observability off|on`` as
bench/latency.py takes it (on: Prometheus metrics, and spans exported over OTLP/HTTP to a local receiver).
``--space team-a`` runs with spaces in use (bench/harness.py): the connector and the API key in a second space, the
Basic user's role granted there only, the calls under ``/s/team-a/``; the events are printed by space at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bench import harness, latency
from bench.loadgen import Connection, install_uvloop


async def run(port: int, path: str, body: bytes, headers: dict, count: int) -> float:
    """``count`` sequential requests on one connection; their median latency in ms."""
    connection = await Connection("127.0.0.1", port).open()
    elapsed = []
    try:
        for _ in range(count):
            response = await connection.request("POST", path, body, headers)
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {response.body[:300]!r}")
            elapsed.append(response.elapsed * 1000)
    finally:
        await connection.close()
    return statistics.median(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("apikey", "basic", "openai"), default="apikey",
                        help="_execute with an API key or HTTP Basic, or the OpenAI-compatible endpoint")
    parser.add_argument("--requests", type=int, default=2000, help="requests per measured repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    harness.add_governed_argument(parser)
    parser.add_argument("--observability", choices=("off", "on"), help="as bench.latency takes it")
    harness.add_space_argument(parser)
    args = parser.parse_args()
    install_uvloop()
    receiver, receiver_port = latency.start_otlp_receiver() if args.observability == "on" else (None, None)
    app_env = latency.observability_environment(args.observability, receiver_port)
    try:
        measure(args, app_env)
    finally:
        if receiver is not None:
            harness.stop(receiver)


def measure(args, app_env: dict) -> None:
    with harness.stack(["ok"], workers=1, governed=args.governed, app_env=app_env, space=args.space) as stack:
        connector = stack.connector("ok")
        path, body, headers = harness.target_request(stack, args.target, connector)
        asyncio.run(run(stack.app_port, path, body, headers, args.warmup))
        print(harness.machine_description())
        print(f"one worker, {args.target}, governed: {args.governed}, observability: "
              f"{args.observability or 'app defaults'}, space: {stack.space}, {args.requests} sequential requests a "
              "repeat")
        for _ in range(args.repeats):
            meter = harness.CpuMeter([stack.app.pid]).start()
            median = asyncio.run(run(stack.app_port, path, body, headers, args.requests))
            meter.stop()
            user, system, postgres = (seconds / args.requests * 1000
                                      for seconds in (meter.user, meter.system, meter.postgres))
            print(f"server CPU {user + system:.3f} ms/request (user {user:.3f}, system {system:.3f})   PostgreSQL CPU "
                  f"{postgres:.3f} ms/request   latency p50 {median:.2f} ms")
        expected = args.warmup + args.repeats * args.requests
        print(f"events recorded for the connector in space {stack.space}: {stack.count_events(connector)} (expected "
              f"{expected}); {stack.events_summary()}")


if __name__ == "__main__":
    main()
