"""Faults at once: N calls in flight, poisoned strings, callers hanging up, the database away, the app restarted.

Every call must leave exactly one event: those answered, those whose callers hung up, those the provider saw.

1. A PostgreSQL bench database, an OpenAI-shaped upstream (tests/servers/fake_openai.py, in this process, so that every
   request the provider receives is counted) that answers after ``--upstream-ms``, and the app under uvicorn
   (2 workers, production settings, its event spool in a temporary folder).
2. ``--calls`` ``_execute`` run calls are sent at once, each with its own model name (``fault-<i>``), so that its
   event can be found; 1 in 500 carries a lone surrogate as its sub-action instead; half of the callers hang up
   after ``--hang-up-ms``.
3. While they wait for the provider, the database is made unreachable (``ALLOW_CONNECTIONS false`` and every
   connection to it terminated) for ``--outage-s`` seconds; during the outage the app is stopped (SIGTERM: it
   finishes the calls in flight and spools their events) and started again.
4. When the database is back, the script waits until the events stop arriving, then reports calls answered,
   calls the provider saw, events, and the calls of each kind that lack an event (the target: none).

``python -m bench.faults`` (1,000 calls, 3 s upstream, hang-up after 1 s, 8 s outage, restart 2 s into it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter

from bench import harness
from bench.loadgen import Connection, HTTPClientError, install_uvloop, print_table
from tests.servers.fake_openai import FakeOpenAI

POISONED = b'{"params": {"subAction": "\\ud800", "subActionParams": {}}}'


def call_body(index: int, prefix: str = "fault") -> bytes:
    body = json.dumps({"model": f"{prefix}-{index}", "messages": [{"role": "user", "content": f"call {index}"}]})
    return json.dumps({"params": {"subAction": "run", "subActionParams": {"body": body}}}).encode()


def admin_connection():
    import psycopg

    return psycopg.connect(harness.POSTGRES_ADMIN_URL.replace("postgres://", "postgresql://", 1), autocommit=True)


def set_database_reachable(database_url: str, reachable: bool) -> None:
    """Open or close the bench database to every client; closing also ends the connections it has."""
    name = database_url.rsplit("/", 1)[1]
    with admin_connection() as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def event_models(database_url: str) -> Counter:
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as conn:
        rows = conn.execute("SELECT requested_model, sub_action FROM usage_executionevent").fetchall()
    return Counter(model if model else f"sub_action:{sub_action}" for model, sub_action in rows)


async def one_call(port: int, path: str, body: bytes, headers: dict, hang_up_after: float | None) -> str:
    """'answered', 'hung up', or what went wrong."""
    connection = Connection("127.0.0.1", port)
    try:
        request = connection.request("POST", path, body, headers)
        if hang_up_after is None:
            response = await request
            return "answered" if response.status in (200, 503) else f"HTTP {response.status}"
        try:
            async with asyncio.timeout(hang_up_after):
                await request
            return "answered"  # faster than the hang-up
        except TimeoutError:
            return "hung up"
    except (HTTPClientError, OSError) as exc:
        return f"{type(exc).__name__}"
    finally:
        await connection.close()


async def send_all(port: int, connector: str, auth: str, calls: int, hang_up_after: float,
                   prefix: str = "fault") -> dict[int, str]:
    path = f"/api/actions/connector/{connector}/_execute"
    headers = {"Content-Type": "application/json", "Authorization": auth, "kbn-xsrf": "true"}

    async def call(index: int) -> tuple[int, str]:
        body = POISONED if index % 500 == 250 else call_body(index, prefix)
        return index, await one_call(port, path, body, headers, hang_up_after if index % 2 else None)

    return dict(await asyncio.gather(*(call(i) for i in range(calls))))


def wait_until_settled(database_url: str, spool_dir: str, quiet_seconds: float, timeout: float) -> Counter:
    """Wait until the spool is replayed (its files are removed) and the event count has not changed for
    ``quiet_seconds``."""
    deadline, last, last_change = time.monotonic() + timeout, -1, time.monotonic()
    models: Counter = Counter()
    while time.monotonic() < deadline:
        if any(name.startswith("events-") for name in os.listdir(spool_dir)):
            time.sleep(0.5)
            continue
        try:
            models = event_models(database_url)
        except Exception:  # noqa: BLE001 - the database may still be refusing connections
            models = Counter()
        total = sum(models.values())
        if total != last:
            last, last_change = total, time.monotonic()
        elif time.monotonic() - last_change >= quiet_seconds:
            break
        time.sleep(0.5)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="calls sent at once")
    parser.add_argument("--upstream-ms", type=int, default=3000, help="how long the provider takes to answer")
    parser.add_argument("--hang-up-ms", type=int, default=1000, help="when half of the callers hang up")
    parser.add_argument("--outage-s", type=float, default=8.0, help="how long the database is unreachable")
    parser.add_argument("--outage-at-ms", type=int, default=500, help="when the outage starts (after the send)")
    parser.add_argument("--restart-at-s", type=float, default=2.0, help="when, into the outage, the app restarts")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    install_uvloop()

    scenario = f"sleep-{args.upstream_ms}"
    upstream = FakeOpenAI(host="127.0.0.1").start()
    spool_dir = tempfile.mkdtemp(prefix="faults-spool-")
    try:
        with harness.bench_database() as database_url:
            env = harness.app_environment(database_url, {"EVENT_SPOOL_DIR": spool_dir})
            subprocess.run([harness.PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=harness.ROOT,
                           env=env, check=True)
            subprocess.run([harness.PYTHON, "manage.py", "collectstatic", "--no-input", "-v", "0"],
                           cwd=harness.ROOT, env=env, check=True)
            seed = json.loads(subprocess.run(
                [harness.PYTHON, "-m", "bench.seed", upstream.base_url, scenario], cwd=harness.ROOT, env=env,
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1])
            stack = harness.Stack(upstream.port, harness.free_port(), database_url, seed)
            connector = stack.connector(scenario)
            app = harness.start_app(stack.app_port, env, args.workers)
            timeline: dict = {}
            try:
                results = run_faults(args, stack, env, app, connector, upstream, timeline)
                models = wait_until_settled(database_url, spool_dir, quiet_seconds=3, timeout=180)
            finally:
                set_database_reachable(database_url, True)
                harness.stop(timeline.get("app", app))
                harness.stop(app)
            report(args, results, models, upstream, timeline)
    finally:
        upstream.stop()


def run_faults(args, stack, env, app, connector: str, upstream: FakeOpenAI, timeline: dict) -> dict[int, str]:
    # Warm-up: each worker verifies the password once and caches the connector (a cache miss during the outage
    # is answered 503; that is tested in tests/recording/test_resilience_events.py, not here).
    warm = asyncio.run(send_all(stack.app_port, connector, stack.basic_header, 40, 10.0, prefix="warm-up"))
    upstream.clear()
    assert set(warm.values()) <= {"answered", "hung up"}, warm

    def faults() -> None:
        time.sleep(args.outage_at_ms / 1000)
        set_database_reachable(stack.database_url, False)
        timeline["outage_start"] = time.monotonic()
        time.sleep(args.restart_at_s)
        harness.stop(app, timeout=60)  # SIGTERM: the calls in flight finish, their events go to the spool
        timeline["stopped"] = time.monotonic()
        timeline["app"] = harness.start_app(stack.app_port, env, args.workers)
        timeline["restarted"] = time.monotonic()
        remaining = args.outage_s - (time.monotonic() - timeline["outage_start"])
        time.sleep(max(0.0, remaining))
        set_database_reachable(stack.database_url, True)
        timeline["outage_end"] = time.monotonic()

    injector = threading.Thread(target=faults, name="faults")
    started = time.monotonic()
    injector.start()
    results = asyncio.run(send_all(stack.app_port, connector, stack.basic_header, args.calls, args.hang_up_ms / 1000))
    injector.join()
    for name, value in list(timeline.items()):
        if isinstance(value, float):
            timeline[name] = value - started
    return results


def report(args, results: dict[int, str], models: Counter, upstream: FakeOpenAI, timeline: dict) -> None:
    poisoned = {i for i in results if i % 500 == 250}
    answered = {i for i, outcome in results.items() if outcome == "answered"}
    hung_up = {i for i, outcome in results.items() if outcome == "hung up"}
    other = Counter(outcome for outcome in results.values() if outcome not in ("answered", "hung up"))
    seen = Counter(request.json().get("model") for request in upstream.requests)
    recorded = {i for i in results if i not in poisoned and models.get(f"fault-{i}", 0) >= 1}
    duplicated = [name for name, count in models.items() if count > 1 and name.startswith("fault-")]
    poisoned_events = models.get("sub_action:\ufffd", 0)
    provider_calls = {int(name.split("-")[1]) for name in seen if isinstance(name, str) and name.startswith("fault-")}
    rows = [
        ["calls sent", args.calls],
        ["answered (HTTP response received)", len(answered)],
        ["hung up by the caller", len(hung_up)],
        ["other (no response)", sum(other.values())],
        ["calls the provider received", len(provider_calls)],
        ["events (fault-<i> calls + poisoned)", sum(models.get(f"fault-{i}", 0) for i in results) + poisoned_events],
        ["answered calls without an event", len((answered - poisoned) - recorded)
         + max(0, len(answered & poisoned) - poisoned_events)],
        ["hung-up calls without an event", len((hung_up - poisoned) - recorded)],
        ["provider-received calls without an event", len(provider_calls - recorded)],
        ["calls with more than one event", len(duplicated)],
        ["poisoned calls / their events", f"{len(poisoned)} / {poisoned_events}"],
    ]
    print_table(f"Faults: {args.calls} calls, {args.upstream_ms} ms upstream, half hang up after "
                f"{args.hang_up_ms} ms, database away {args.outage_s:g} s, app restarted during it",
                ["", "count"], rows)
    print("timeline (s after the send):", json.dumps({k: round(v, 2) for k, v in timeline.items()
                                                       if isinstance(v, float)}))
    if other:
        print("other outcomes:", dict(other))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "timeline": {k: v for k, v in timeline.items() if isinstance(v, float)},
                       "other": dict(other)}, handle, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(harness.ROOT))
    main()
