"""Instructions the server executes per call, counted by valgrind's callgrind: the same figure on any run.

``bench.server_cpu`` measures CPU seconds, which move by 10-20 % from run to run on a shared 2-vCPU VM (a
neighbour, the CPU's clock): a cut of 30 µs a call cannot be told from noise there. Callgrind counts the
instructions the worker process executes (every thread: the event loop, the event writer, the sync thread), which
repeat to within a fraction of a percent for the same code and the same calls, whatever else the machine does.
They are not time: a cache miss or a system call costs more than its instructions, and the kernel's work is not
counted at all. Use it to compare two versions of the code, ``bench.server_cpu`` and ``bench.latency`` for what a
call costs.

How: one uvicorn worker runs under ``valgrind --tool=callgrind --instr-atstart=no`` (no counting while it starts:
a start-up under full instrumentation takes minutes); after ``--warmup`` sequential calls, counting is switched on
(``callgrind_control --instr=on``), ``--requests`` calls are made, and the counters are dumped and read. The
PostgreSQL server's instructions are not counted (another process).

Example: ``python -m bench.instructions --target basic --requests 300 --repeats 2``  (about 2 minutes; needs
valgrind, Debian's package).

``--keep DIR`` copies each repeat's dump files there (one file per thread): ``callgrind_annotate --inclusive=yes --tree=caller
DIR/callgrind.out.<pid>.<n>-01`` then shows where the event loop thread's instructions go in the interpreter's C
functions (``slot_tp_getattr_hook``: attribute lookups through a Python ``__getattr__`` or ``__getattribute__``;
``PyErr_Format``: exceptions raised and caught), which is how the cuts of docs/PERFORMANCE.md's "The settings and the
request's end" were found. A Python profiler cannot see those: it adds its own cost to every Python call.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import harness
from bench.loadgen import install_uvloop
from bench.server_cpu import run

_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def control(*args: str) -> str:
    return subprocess.run(["callgrind_control", *args], capture_output=True, text=True, timeout=120, check=True).stdout


def dumped_instructions(folder: Path, before: set[Path]) -> int:
    """The instruction count of the dump that appeared in ``folder`` since ``before`` (callgrind writes one file per
    dump and thread: the counts of all of them)."""
    deadline = time.monotonic() + 60
    while not set(folder.iterdir()) - before:
        if time.monotonic() > deadline:
            raise SystemExit("callgrind wrote no dump")
        time.sleep(0.2)
    time.sleep(0.5)  # let every thread's file be written
    totals = (_TOTALS.search(path.read_bytes()) for path in set(folder.iterdir()) - before)
    return sum(int(found.group(1)) for found in totals if found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("apikey", "basic", "openai"), default="basic")
    parser.add_argument("--requests", type=int, default=300, help="calls counted per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--keep", metavar="DIR", type=Path, help="copy each repeat's callgrind dumps into DIR")
    harness.add_governed_argument(parser)
    harness.add_space_argument(parser)
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    install_uvloop()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as folder_name:
        folder = Path(folder_name)
        prefix = ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                  f"--callgrind-out-file={folder}/callgrind.out.%p")
        with harness.stack(["ok"], workers=1, space=args.space, governed=args.governed, command_prefix=prefix,
                           start_seconds=600) as stack:
            connector = stack.connector("ok")
            path, body, headers = harness.target_request(stack, args.target, connector)
            asyncio.run(run(stack.app_port, path, body, headers, args.warmup))
            pid = str(stack.app.pid)
            control("--instr=on", pid)
            asyncio.run(run(stack.app_port, path, body, headers, 20))  # the code the switch threw away, translated again
            print(harness.machine_description())
            print(f"one worker under callgrind, {args.target}, governed: {args.governed}, space: {stack.space}, "
                  f"{args.requests} sequential requests a repeat")
            for _ in range(args.repeats):
                control("--zero", pid)
                asyncio.run(run(stack.app_port, path, body, headers, args.requests))
                before = set(folder.iterdir())
                control("--dump", pid)
                per_call = dumped_instructions(folder, before) / args.requests
                print(f"instructions per call: {per_call / 1000:,.0f} thousand")
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for dump in set(folder.iterdir()) - before:
                        shutil.copy(dump, args.keep / dump.name)
            print(f"events recorded for the connector in space {stack.space}: {stack.count_events(connector)}")


if __name__ == "__main__":
    main()
