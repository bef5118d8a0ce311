"""A flame graph of one uvicorn worker under sequential keep-alive calls, with py-spy (pip install py-spy).

py-spy samples the worker (``--nonblocking``: without stopping it, so the calls keep their pace) while this
process sends ``_execute`` calls (or OpenAI-endpoint calls) one after the other, and writes an SVG flame graph.
``--native`` adds the C frames (uvloop, psycopg, the kernel calls) but stops the process at each sample, which
several times slows the calls down.

Example: ``python -m bench.flame --target basic --seconds 20 --out docs/flame-after.svg``; an ``--out`` ending in
``.txt`` gets py-spy's collapsed stacks instead (one line per stack and its sample count), which
``python -m bench.flame_table`` sums into the functions that take the most time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import harness
from bench.harness import cpu_seconds
from bench.loadgen import install_uvloop
from bench.server_cpu import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("apikey", "basic", "openai"), default="basic")
    parser.add_argument("--out", required=True, help="the SVG to write")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=500, help="samples a second")
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--gil", action="store_true",
                        help="only samples of the thread holding the GIL: where Python's CPU goes, without the waits")
    harness.add_governed_argument(parser)
    harness.add_space_argument(parser)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    install_uvloop()
    with harness.stack(["ok"], workers=1, governed=args.governed, space=args.space) as stack:
        connector = stack.connector("ok")
        path, body, headers = harness.target_request(stack, args.target, connector)
        asyncio.run(run(stack.app_port, path, body, headers, 500))
        command = [py_spy, "record", "--rate", str(args.rate), "--format", "raw" if args.out.endswith(".txt") else "flamegraph", "-o", args.out,
                   "--pid", str(stack.app.pid), "--duration", str(args.seconds)]
        command += ["--native"] if args.native else ["--nonblocking"]
        command += ["--gil"] if args.gil else []
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        calls, started = 0, cpu_seconds(stack.app.pid)
        while spy.poll() is None:
            asyncio.run(run(stack.app_port, path, body, headers, 200))
            calls += 200
        cpu = (cpu_seconds(stack.app.pid) - started) / calls * 1000
        print(f"{calls} calls while sampling, server CPU {cpu:.3f} ms a call; {args.out}")


if __name__ == "__main__":
    main()
