"""Where one call's CPU goes: a budget per stage, in microseconds of CPU per call, from one uvicorn worker.

The worker serves bench/stage_probe.py's application: the real one, with the functions of each stage wrapped so
that the event loop thread's CPU time inside them is charged to the stage. Sequential keep-alive calls (one in
flight), then the totals are read from the worker. The other threads of the worker (the event writer, asgiref's
thread for sync code, the database pool's) are read from /proc per thread, and the whole process's CPU per call is
given with the probe and, in a run without it (``bench.server_cpu``), for comparison.

Example: ``python -m bench.stages --target basic --requests 3000 --repeats 3``  (about 40 seconds).
``--space team-a``: with spaces in use, as bench/harness.py sets them up (the calls under ``/s/team-a/``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
from pathlib import Path

from bench import harness
from bench.loadgen import Connection, install_uvloop
from bench.server_cpu import run

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int, names: dict[str, str]) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, summed by Python thread name (``names``: by native id; a name's
    trailing number, as in ThreadPoolExecutor-0_1, left out)."""
    totals: dict[str, float] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = names.get(task.name, "other").rstrip("0123456789").rstrip("_-")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if task.name == str(pid):
            name = "event loop"
        totals[name] += (int(fields[11]) + int(fields[12])) / TICKS
        totals[name + " (system)"] += int(fields[12]) / TICKS
    return totals


async def read_stages(port: int) -> dict:
    connection = await Connection("127.0.0.1", port).open()
    try:
        response = await connection.request("GET", "/__stages", b"", {})
    finally:
        await connection.close()
    return json.loads(response.body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("apikey", "basic", "openai"), default="basic")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    harness.add_governed_argument(parser)
    harness.add_space_argument(parser)
    args = parser.parse_args()
    install_uvloop()
    with harness.stack(["ok"], workers=1, governed=args.governed, app="bench.stage_probe:application",
                       space=args.space) as stack:
        connector = stack.connector("ok")
        path, body, headers = harness.target_request(stack, args.target, connector)
        asyncio.run(run(stack.app_port, path, body, headers, args.warmup))
        print(harness.machine_description())
        print(f"one worker, {args.target}, governed: {args.governed}, space: {stack.space}, {args.requests} sequential requests a repeat, "
              f"{args.repeats} repeats; microseconds of CPU per call")
        stage_sums: dict[str, float] = collections.Counter()
        thread_sums: dict[str, float] = collections.Counter()
        for _ in range(args.repeats):
            names = asyncio.run(read_stages(stack.app_port))["threads"]  # and the totals start here
            before = thread_cpu(stack.app.pid, names)
            asyncio.run(run(stack.app_port, path, body, headers, args.requests))
            stages = asyncio.run(read_stages(stack.app_port))
            after = thread_cpu(stack.app.pid, {**names, **stages["threads"]})
            calls = stages["calls"] - 1  # the /__stages request itself
            for stage, ns in stages["stages"].items():
                stage_sums[stage] += ns / 1000 / calls / args.repeats
            for name in after:
                thread_sums[name] += (after[name] - before.get(name, 0.0)) * 1e6 / calls / args.repeats
        system = {name: thread_sums.pop(name) for name in list(thread_sums) if name.endswith(" (system)")}
        loop = thread_sums.pop("event loop", 0.0)
        writer_stages = {name: stage_sums.pop(name) for name in list(stage_sums) if name.startswith("[")}
        staged = sum(stage_sums.values())
        rows = sorted(stage_sums.items(), key=lambda item: -item[1])
        rows.append(("ASGI, handler and view glue (the loop thread outside every stage)", loop - staged))
        width = max(len(name) for name, _ in rows) + 2
        print(f"{'event loop thread, by stage':{width}} {loop:8.0f}")
        for name, value in rows:
            print(f"  {name:{width - 2}} {value:8.0f}")
        for name, value in sorted(thread_sums.items(), key=lambda item: -item[1]):
            if value >= 0.5:
                print(f"{'thread ' + name:{width}} {value:8.0f}")
        for name, value in writer_stages.items():
            print(f"  {name:{width - 2}} {value:8.0f}")
        print(f"{'the whole process':{width}} {loop + sum(thread_sums.values()):8.0f}")
        print("of which in the kernel (system time): " + ", ".join(
            f"{name.removesuffix(' (system)')} {value:.0f}" for name, value in system.items() if value >= 0.5))


if __name__ == "__main__":
    main()
