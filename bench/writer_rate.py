"""Benchmark the event writer's sustained insert rate on the partitioned event table: P server-like processes, each
with its own event writer (usage/recording/writer.py, group commit), each with C executions recording back to back.

    .venv/bin/python -m bench.writer_rate --processes 4 --concurrency 64 --seconds 30 [--on-loop]

Nothing else runs in the processes (no HTTP, no upstream): what is measured is what the batch writer and one
PostgreSQL primary sustain, and how long an execution waits for its event to be committed (the latency the
event log adds to an execution's answer). Database ``connectors_bench_writer`` (dropped at the end). Results:
docs/PERFORMANCE.md and docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import dashboard  # noqa: E402

dashboard.PG_DATABASE = "connectors_bench_writer"


def worker(number: int, concurrency: int, seconds: float, start_at: float, results, on_loop: bool = False) -> None:
    import asyncio

    import django

    dashboard.configure_environment("postgres")
    django.setup()
    from datetime import UTC, datetime

    from tests.helpers.events import build_event
    from usage.recording.writer import drain_loop_writer, record_execution, start_event_writer, stop_event_writer

    if not on_loop:
        start_event_writer()  # the writer thread writes every batch
    latencies: list[float] = []

    async def execution(index: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            event = build_event(datetime.now(UTC), connector_id=f"bench-{(number * concurrency + index) % 40}",
                                user_name=f"user{index % 50}")
            started = time.perf_counter()
            await record_execution(event)
            latencies.append(time.perf_counter() - started)

    async def run() -> None:
        if on_loop:
            start_event_writer()  # from the running loop, as the server's lifespan: the loop writes the batches
        while time.time() < start_at:
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(execution(index, deadline) for index in range(concurrency)))
        await drain_loop_writer()

    asyncio.run(run())
    stop_event_writer()
    results.put(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64, help="executions recording at once per process")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--on-loop", action="store_true",
                        help="the event loop writes the batches (usage/recording/loop_writer.py), as under a server on "
                        "PostgreSQL; without it the writer thread does")
    args = parser.parse_args()
    dashboard.configure_environment("postgres")
    dashboard.recreate_database("postgres")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    connections.close_all()
    # Spawned, not forked: a fork would share the parent's pooled database connections between processes.
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 5
    processes = [context.Process(target=worker, args=(n, args.concurrency, args.seconds, start_at, results,
                                                             args.on_loop))
                 for n in range(args.processes)]
    try:
        for process in processes:
            process.start()
        latencies = [value for _ in processes for value in results.get()]
        for process in processes:
            process.join()
        from usage.models import ExecutionEvent

        stored = ExecutionEvent.objects.count()
        latencies.sort()
        summary = {
            "processes": args.processes, "concurrency": args.concurrency, "seconds": args.seconds,
            "writer": "event loop" if args.on_loop else "thread",
            "events": len(latencies), "stored": stored, "events_per_second": round(len(latencies) / args.seconds),
            "wait_median_ms": round(statistics.median(latencies) * 1000, 2),
            "wait_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "load_average": __import__("os").getloadavg(),
        }
        print(json.dumps(summary, indent=2))
    finally:
        connections.close_all()
        dashboard.drop_database("postgres")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "writer_rate.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
