"""Two checkouts side by side, both running at once, measured in turns: the comparison that survives a noisy VM.

``bench.server_cpu`` and ``bench.throughput`` run one checkout after the other, a minute or more apart; on a shared
2-vCPU VM the machine's speed moves by more than the difference being measured in that time (the same checkout's CPU
per call by 25 % to 150 % from one run to the next, seen on 2026-12-07). Here both checkouts' stacks (upstream,
app, database) are started first and stay up; then short batches of calls go to one and the other in turns, in the
order A B, B A, A B, ..., so that a slow stretch of the machine falls on both. Each round gives a ratio of this
checkout's figure to the other's, taken a few seconds apart; the median of those ratios is the comparison.

- ``--measure cpu``: one worker, sequential calls on one connection: the worker's user and system CPU per call, the
  PostgreSQL server's CPU per call (all its processes: the other stack is idle meanwhile), the latency's median.
- ``--measure throughput``: two workers, ``--clients`` keep-alive connections: requests a second, the workers' CPU.

Each side is this module run with ``--serve`` by the other checkout's own virtualenv, in its own directory, so each
runs its own code; the load generator is the same (``bench/loadgen.py``, copied with this file, ``harness.py`` and
``server_cpu.py`` into the other checkout). At the end each side checks that its database holds one event per call.

Example: ``python -m bench.paired --against /path/to/other/checkout --measure cpu --rounds 8`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench import harness
from bench.loadgen import install_uvloop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="CHECKOUT", help="the other checkout (with its own .venv)")
    parser.add_argument("--measure", choices=("cpu", "throughput"), default="cpu")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, help="calls a batch (cpu: 1,000; throughput: 5,000)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=64, help="throughput: concurrent connections")
    parser.add_argument("--target", choices=("apikey", "basic", "openai"), default="basic")
    harness.add_governed_argument(parser)
    harness.add_space_argument(parser)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-db", type=int, default=13, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.requests = args.requests or (1000 if args.measure == "cpu" else 5000)
    if args.serve:
        serve(args)
    elif not args.against:
        parser.error("--against CHECKOUT is required")
    else:
        compare(args)


# The coordinator ---------------------------------------------------------------------------------------------------

class Side:
    """One checkout's serving process, driven over its stdin and stdout (one JSON line an answer)."""

    def __init__(self, name: str, checkout: Path, args, redis_db: int):
        self.name = name
        command = [str(checkout / ".venv" / "bin" / "python"), "-m", "bench.paired", "--serve",
                   "--measure", args.measure, "--requests", str(args.requests), "--warmup", str(args.warmup),
                   "--clients", str(args.clients), "--target", args.target, "--governed", args.governed,
                   "--redis-db", str(redis_db), *(["--space", args.space] if args.space else [])]
        self.process = subprocess.Popen(command, cwd=checkout, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name}: the serving process ended (exit status {self.process.wait()})")
        return json.loads(line)


def compare(args) -> None:
    here = Path(__file__).resolve().parent.parent
    other = Path(args.against).resolve()
    this_side = Side(f"this ({here.name})", here, args, args.redis_db)
    other_side = Side(f"other ({other.name})", other, args, args.redis_db - 1)
    try:
        for side in (this_side, other_side):
            print(f"{side.name}: {side.ask('ready')['description']}", flush=True)
        print(harness.machine_description())
        figure = "server CPU ms/call" if args.measure == "cpu" else "requests/s"
        rows = []
        for round_ in range(args.rounds):
            order = (other_side, this_side) if round_ % 2 == 0 else (this_side, other_side)
            results = {side.name: side.ask("run") for side in order}
            mine, theirs = results[this_side.name], results[other_side.name]
            rows.append((mine, theirs))
            print(f"round {round_ + 1}: {describe(mine)}  |  other: {describe(theirs)}  |  ratio "
                  f"{mine['figure'] / theirs['figure']:.3f}", flush=True)
        ratios = [mine["figure"] / theirs["figure"] for mine, theirs in rows]
        print(f"\n{figure}: this {statistics.median(m['figure'] for m, _ in rows):.3f} "
              f"(range {min(m['figure'] for m, _ in rows):.3f}-{max(m['figure'] for m, _ in rows):.3f}), "
              f"other {statistics.median(t['figure'] for _, t in rows):.3f} "
              f"(range {min(t['figure'] for _, t in rows):.3f}-{max(t['figure'] for _, t in rows):.3f})")
        print(f"this / other, round by round: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-"
              f"{max(ratios):.3f}")
        for side in (this_side, other_side):
            print(f"{side.name}: {side.ask('events')['events']}")
    finally:
        for side in (this_side, other_side):
            try:
                side.ask("stop")
            except (SystemExit, BrokenPipeError, json.JSONDecodeError):
                pass
            side.process.wait(timeout=60)


def describe(result: dict) -> str:
    if "user" in result:
        return (f"{result['figure']:.3f} ms (user {result['user']:.3f}, system {result['system']:.3f}; PostgreSQL "
                f"{result['postgres']:.3f}; p50 {result['p50']:.2f} ms)")
    return f"{result['figure']:.0f}/s (workers {result['workers_cpu']:.1f} s CPU; PostgreSQL {result['postgres']:.1f} s)"


# A serving side ----------------------------------------------------------------------------------------------------

def serve(args) -> None:
    """Start this checkout's stack, then answer the coordinator's commands until ``stop``."""
    from bench.server_cpu import run
    from bench.throughput import load

    install_uvloop()
    reply = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not be taken for an answer
    workers = 1 if args.measure == "cpu" else 2
    with harness.stack(["ok"], workers=workers, governed=args.governed, space=args.space,
                       redis_url=f"redis://127.0.0.1:6379/{args.redis_db}") as stack:
        connector = stack.connector("ok")
        path, body, headers = harness.target_request(stack, args.target, connector)
        sent = 0

        def answer(value: dict) -> None:
            reply.write(json.dumps(value) + "\n")
            reply.flush()

        for line in sys.stdin:
            command = line.strip()
            if command == "ready":
                if args.measure == "cpu":
                    asyncio.run(run(stack.app_port, path, body, headers, args.warmup))
                else:
                    asyncio.run(load(stack.app_port, path, body, headers, args.clients, args.warmup, 600))
                sent += args.warmup
                answer({"description": f"{workers} worker(s), {args.target}, governed: {args.governed}, space: "
                                       f"{stack.space}, {args.requests} calls a batch"})
            elif command == "run":
                pids = harness.worker_pids(stack.app.pid) or [stack.app.pid]
                meter = harness.CpuMeter(pids).start()
                if args.measure == "cpu":
                    median = asyncio.run(run(stack.app_port, path, body, headers, args.requests))
                else:
                    wall, _latencies, errors = asyncio.run(
                        load(stack.app_port, path, body, headers, args.clients, args.requests, 600))
                    if errors:
                        raise SystemExit(f"{len(errors)} errors, the first: {errors[0]}")
                sent += args.requests
                meter.stop()
                user, system, postgres = meter.user, meter.system, meter.postgres
                if args.measure == "cpu":
                    per_call = 1000 / args.requests
                    answer({"figure": (user + system) * per_call, "user": user * per_call, "system": system * per_call,
                            "postgres": postgres * per_call, "p50": median})
                else:
                    answer({"figure": args.requests / wall, "workers_cpu": user + system, "postgres": postgres})
            elif command == "events":
                recorded = stack.count_events(connector)
                answer({"events": f"{recorded} events recorded for {sent} calls"
                                  f"{'' if recorded == sent else ' (NOT one per call)'}; {stack.events_summary()}"})
            elif command == "stop":
                answer({})
                break


if __name__ == "__main__":
    main()
