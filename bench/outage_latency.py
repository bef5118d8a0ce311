"""How long callers wait while the database refuses connections, and how soon the spool is replayed after it.

1. A PostgreSQL bench database, an OpenAI-shaped upstream (tests/servers/fake_openai.py) and the app under uvicorn
   (``--workers``, production settings, its event spool in a temporary folder); warm-up calls, so that each worker
   has verified the credential and cached the connector.
2. The database is made to refuse every connection (``ALLOW_CONNECTIONS false``, its connections terminated).
3. ``--calls`` ``_execute`` run calls, ``--concurrency`` at a time, each with its own model name: their answer
   times (warm: credential and connector cached; the events go to the spool).
4. The app is restarted, still in the outage, and the same calls are sent again (cold: the credential cannot be
   checked, so the answer is 503; the event of such a call is spooled too).
5. The database is opened again and no call is made: the time until the spool is replayed and every answered
   call has its event.

``python -m bench.outage_latency`` (500 calls, 20 at a time, 2 workers). Results in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections import Counter

from bench import harness
from bench.faults import call_body, event_models, set_database_reachable
from bench.loadgen import Connection, HTTPClientError, install_uvloop, print_table
from tests.servers.fake_openai import FakeOpenAI


async def send(port: int, path: str, headers: dict, calls: int, concurrency: int, prefix: str):
    """(status or error name, seconds) per call."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> tuple[str, float]:
        async with gate:
            started = time.monotonic()
            connection = Connection("127.0.0.1", port)
            try:
                response = await connection.request("POST", path, call_body(index, prefix), headers)
                outcome = str(response.status)
            except (HTTPClientError, OSError) as exc:
                outcome = type(exc).__name__
            finally:
                await connection.close()
            return outcome, time.monotonic() - started

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(calls)))
    return results, time.monotonic() - started


def summary(name: str, results: list[tuple[str, float]], elapsed: float) -> list:
    seconds = sorted(took for _outcome, took in results)
    statuses = Counter(outcome for outcome, _took in results)
    return [name, len(results), elapsed, seconds[len(seconds) // 2], seconds[int(len(seconds) * 0.99) - 1],
            seconds[-1], ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500, help="calls per phase")
    parser.add_argument("--concurrency", type=int, default=20, help="calls in flight at a time")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--replay-timeout", type=float, default=120, help="how long to wait for the replay")
    args = parser.parse_args()
    install_uvloop()

    upstream = FakeOpenAI(host="127.0.0.1").start()
    spool_dir = tempfile.mkdtemp(prefix="outage-spool-")
    rows, replay = [], {}
    try:
        with harness.bench_database() as database_url:
            env = harness.app_environment(database_url, {"EVENT_SPOOL_DIR": spool_dir})
            subprocess.run([harness.PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=harness.ROOT,
                           env=env, check=True)
            subprocess.run([harness.PYTHON, "manage.py", "collectstatic", "--no-input", "-v", "0"],
                           cwd=harness.ROOT, env=env, check=True)
            seed = json.loads(subprocess.run(
                [harness.PYTHON, "-m", "bench.seed", upstream.base_url, "ok"], cwd=harness.ROOT, env=env,
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1])
            stack = harness.Stack(upstream.port, harness.free_port(), database_url, seed)
            path = f"/api/actions/connector/{stack.connector('ok')}/_execute"
            headers = {"Content-Type": "application/json", "Authorization": stack.basic_header, "kbn-xsrf": "true"}
            app = harness.start_app(stack.app_port, env, args.workers)
            try:
                warm, _ = asyncio.run(send(stack.app_port, path, headers, 40, args.concurrency, "warm-up"))
                assert {outcome for outcome, _took in warm} == {"200"}, Counter(o for o, _t in warm)
                set_database_reachable(database_url, False)
                results, elapsed = asyncio.run(send(stack.app_port, path, headers, args.calls, args.concurrency,
                                                    "warm"))
                rows.append(summary("warm workers (credential cached)", results, elapsed))
                harness.stop(app, timeout=60)
                app = harness.start_app(stack.app_port, env, args.workers)
                results, elapsed = asyncio.run(send(stack.app_port, path, headers, args.calls, args.concurrency,
                                                    "cold"))
                rows.append(summary("restarted in the outage (cold)", results, elapsed))
                set_database_reachable(database_url, True)
                replay = wait_for_replay(database_url, spool_dir, args.calls, time.monotonic(), args.replay_timeout)
            finally:
                set_database_reachable(database_url, True)
                harness.stop(app)
    finally:
        upstream.stop()
    print_table(f"Database refusing connections: {args.calls} calls, {args.concurrency} at a time, "
                f"{args.workers} workers (seconds)",
                ["phase", "calls", "all answered in", "p50", "p99", "max", "statuses"], rows)
    print("after the database came back, with no call:", json.dumps(replay))


def wait_for_replay(database_url: str, spool_dir: str, warm_calls: int, since: float, timeout: float) -> dict:
    """Poll (no call to the app) until the spool folder is empty and the warm calls' events are all stored."""
    deadline = since + timeout
    while time.monotonic() < deadline:
        if not any(name.startswith("events-") for name in os.listdir(spool_dir)):
            try:
                models = event_models(database_url)
            except Exception:  # noqa: BLE001 - the database may still be refusing this client
                models = Counter()
            by_phase = Counter(model.rsplit("-", 1)[0] for model in models.elements())
            if by_phase["warm"] >= warm_calls:
                return {"replayed after s": round(time.monotonic() - since, 2), "events by phase": by_phase}
        time.sleep(0.1)
    return {"replayed after s": None, "timeout": timeout}


if __name__ == "__main__":
    main()
