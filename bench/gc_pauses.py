"""Time one worker spends in Python's garbage collector while calls run concurrently.

One worker serves the real application wrapped by ``application`` below, which times every collection (by
generation, with ``gc.callbacks``) from the ``--skip``-th request to the ``--skip + --requests``-th and writes the
totals to a file when the last one arrives. ``--clients`` connections send ``_execute`` calls (HTTP Basic) back to back.

Example: ``python -m bench.gc_pauses --clients 32 --requests 2000``  (about 20 seconds). ``--python-defaults`` runs
the worker with the collector as Python sets it (no ``gc.freeze``, thresholds 700, 10, 10) instead of as
connectors_admin/worker_warm_up.py settles it, for the comparison of docs/PERFORMANCE.md, "The garbage collector".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path

_inner = None
_seen = 0
_first, _end = 0, 0  # the measured requests: from the _first-th to the one before the _end-th (set on the first call)
_collections = {generation: [0, 0.0] for generation in range(3)}
_started = [0.0]


def _timed(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    elif _first <= _seen < _end:
        stopped = time.perf_counter()
        entry = _collections[info["generation"]]
        entry[0] += 1
        entry[1] += stopped - _started[0]


async def application(scope, receive, send):
    """The project's ASGI application, with the collector's work counted (served by uvicorn in the worker)."""
    global _inner, _seen, _first, _end
    if _inner is None:
        _first = int(os.environ["GC_PAUSES_SKIP"])
        _end = _first + int(os.environ["GC_PAUSES_REQUESTS"])
        from connectors_admin.asgi import application as inner

        if os.environ.get("GC_PAUSES_PYTHON_DEFAULTS"):  # before the lifespan's start-up, which this call is
            from connectors_admin import worker_warm_up

            worker_warm_up.settle_garbage_collector = lambda: None

        gc.callbacks.append(_timed)
        _inner = inner
    if scope["type"] == "http":
        _seen += 1
        if _seen == _end:
            Path(os.environ["GC_PAUSES_OUT"]).write_text(json.dumps({
                "collections": _collections, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                "tracked": len(gc.get_objects()),
            }))
    await _inner(scope, receive, send)


def main() -> None:
    from bench import harness
    from bench.loadgen import install_uvloop
    from bench.throughput import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="calls measured")
    parser.add_argument("--skip", type=int, default=300, help="calls before the measured ones")
    parser.add_argument("--python-defaults", action="store_true", help="the collector as Python sets it")
    args = parser.parse_args()
    install_uvloop()
    out = Path(tempfile.mkdtemp()) / "gc.json"
    app_env = {"GC_PAUSES_SKIP": str(args.skip), "GC_PAUSES_REQUESTS": str(args.requests), "GC_PAUSES_OUT": str(out),
               **({"GC_PAUSES_PYTHON_DEFAULTS": "1"} if args.python_defaults else {})}
    with harness.stack(["ok"], workers=1, app="bench.gc_pauses:application", app_env=app_env) as stack:
        path, body, headers = harness.target_request(stack, "basic", stack.connector("ok"))
        total = args.skip + args.requests + args.clients
        asyncio.run(load(stack.app_port, path, body, headers, args.clients, total, 600))
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    result = json.loads(out.read_text())
    print(harness.machine_description())
    print(f"one worker, {args.clients} clients, {args.requests} calls measured; collector: "
          f"{'Python defaults' if args.python_defaults else 'as the worker settles it'} (thresholds "
          f"{tuple(result['threshold'])}, {result['frozen']} objects frozen, {result['tracked']} tracked)")
    spent = 0.0
    for generation, (count, seconds) in sorted(result["collections"].items()):
        spent += seconds
        print(f"generation {generation}: {count} collections, {seconds * 1000:.1f} ms"
              f"{f' ({seconds / count * 1000:.2f} ms each)' if count else ''}")
    print(f"in the collector: {spent * 1e6 / args.requests:.1f} µs a call")


if __name__ == "__main__":
    main()
