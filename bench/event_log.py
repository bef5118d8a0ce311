"""Benchmark the partitioned event log at scale on PostgreSQL: bulk-generated events, then the dashboard, the Logs
tab, the exports' first byte and the prune of a month.

    .venv/bin/python -m bench.event_log --events 100000000 --keep --load-only   # generate (about 40 minutes here)
    .venv/bin/python -m bench.event_log --reuse                                  # time the pages and the prune
    .venv/bin/python -m bench.event_log --events 200000                          # a quick check that it works

The events are generated inside PostgreSQL with ``generate_series`` (no round trip per row), in chunks of
``CHUNK`` events each committed on its own, spread evenly over the 90 days before now and one more month before
that (the month the prune then drops): half of them on bench/dashboard.py's connector, the rest over 9 others;
50 users with a skewed share, 4 models, 3% failures. The rollups are built from them with the code of ``manage.py
rebuild_usage_rollups``. Database ``connectors_bench_eventlog`` on postgres://postgres@127.0.0.1:5432. Pages are
timed in-process with Django's test Client (bench/dashboard.py, bench/logs.py). Results: docs/PERFORMANCE.md,
"Event log at scale".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import dashboard  # noqa: E402

dashboard.PG_DATABASE = "connectors_bench_eventlog"
CHUNK = 2_000_000
DAYS = 120  # 90 days for the dashboard, and a month before them for the prune

GENERATE_SQL = """
INSERT INTO usage_executionevent (timestamp, connector_id, connector_name, connector_is_preconfigured, user_name,
  source, sub_action, outcome, duration_ms, upstream_status, requested_model, response_model, prompt_tokens,
  completion_tokens, total_tokens, cached_tokens, reasoning_tokens, usage_source, error_message, request_bytes,
  response_bytes, uid, api_key_id, space_id)
SELECT %(end)s - (i * %(step)s) * interval '1 second',
  CASE WHEN r1 < 0.5 THEN %(connector)s ELSE 'other-' || (i %% 9) END, 'Bench connector', false,
  'user' || lpad(floor(50 * r2 * r2)::int::text, 2, '0') || '@example.com', 'api', 'invokeAI',
  CASE WHEN r3 < 0.03 THEN 'failure' ELSE 'success' END, round((200 + 2000 * r4 * r4)::numeric, 1),
  CASE WHEN r3 < 0.03 THEN 500 ELSE 200 END, model,
  CASE WHEN r3 < 0.03 THEN '' ELSE model || '-2025-01-01' END,
  prompt, completion, prompt + completion, CASE WHEN r4 < 0.3 THEN prompt / 2 ELSE 0 END, NULL, 'provider',
  CASE WHEN r3 < 0.03 THEN 'upstream error' ELSE '' END, 1200, 2400, gen_random_uuid(),
  CASE WHEN r5 < 0.6 THEN (%(keys)s::bigint[])[1 + (floor(50 * r2 * r2)::int %% %(key_count)s)] END,
  'default'
FROM (
  SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
    (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4o-mini', 'o3-mini', 'gpt-4.1'])[1 + (i %% 5)] AS model,
    200 + (i * 7919) %% 1400 AS prompt, 50 + (i * 104729) %% 450 AS completion
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
) AS g
"""


def bench_api_keys(count: int = 20) -> list[int]:
    """API keys for 60 % of the generated events (so the per-key breakdown has something to group)."""
    from django.contrib.auth.models import User

    from connectors.models import ApiKey

    owner, _ = User.objects.get_or_create(username="bench-key-owner")
    keys = []
    for number in range(count):
        key, _ = ApiKey.objects.get_or_create(
            digest=f"{number:064x}", defaults={"user": owner, "name": f"bench key {number}", "prefix": f"bk{number}"})
        keys.append(key.pk)
    return keys


def secondary_indexes(cursor) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_executionevent' "
        "AND indexdef NOT LIKE 'CREATE UNIQUE%%'")
    return cursor.fetchall()


def generate(count: int, end: datetime, workers: int = 2) -> dict:
    """Generate the events in ``workers`` connections at once; above a million events the secondary indexes are
    dropped first and built again at the end (faster than keeping six indexes up to date row by row)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection, connections

    from usage.models.partitions import create_day_partition

    step = DAYS * 86400 / count
    keys = bench_api_keys()
    timings = {}
    with connection.cursor() as cursor:
        for offset in range(DAYS + 1):
            create_day_partition(cursor, (end - timedelta(days=offset)).date())
        indexes = secondary_indexes(cursor) if count > 1_000_000 else []
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

    def load(chunks: list[tuple[int, int]]) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit = off")
                # The bench's own rows reference existing keys; skipping the per-row foreign-key triggers halves the load.
                cursor.execute("SET session_replication_role = replica")
                for first, last in chunks:
                    started = time.perf_counter()
                    cursor.execute(GENERATE_SQL, {"end": end, "step": step, "connector": dashboard.CONNECTOR_ID,
                                                  "first": first, "last": last, "keys": keys,
                                                  "key_count": len(keys)})
                    print(f"  events {first:,}..{last:,} in {time.perf_counter() - started:.1f} s", flush=True)
        finally:
            connections.close_all()

    chunks = [(first, min(first + CHUNK - 1, count)) for first in range(1, count + 1, CHUNK)]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(load, [chunks[worker::workers] for worker in range(workers)]))
    timings["insert_seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for name, definition in indexes:
            index_started = time.perf_counter()
            cursor.execute(definition.replace(" ON ONLY ", " ON "))
            print(f"  index {name} in {time.perf_counter() - index_started:.1f} s", flush=True)
    timings["index_seconds"] = round(time.perf_counter() - started, 1)
    return timings


def first_byte_ms(client, url: str, runs: int) -> tuple[float, int]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        first = next(iter(response.streaming_content))
        timings.append((time.perf_counter() - started) * 1000)
        response.close()
    return statistics.median(timings), len(first)


def time_exports(runs: int) -> list[dict]:
    from django.contrib.auth.models import User
    from django.test import Client

    admin, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_superuser": True, "is_staff": True})
    client = Client()
    client.force_login(admin)
    results = []
    for name, url in (
        ("raw events CSV, 90 days", f"/usage/connectors/{dashboard.CONNECTOR_ID}/events.csv?range=90d"),
        ("usage API NDJSON export, 90 days", "/api/usage/events.ndjson?" + urlencode({
            "connector": dashboard.CONNECTOR_ID, "from": (datetime.now(UTC) - timedelta(days=90)).isoformat(),
            "to": datetime.now(UTC).isoformat()})),
    ):
        median, size = first_byte_ms(client, url, runs)
        results.append({"export": name, "first_byte_median_ms": round(median, 1), "first_chunk_bytes": size})
        print(f"  {name}: first byte after {median:.1f} ms (median of {runs})", flush=True)
    return results


def time_prune() -> dict:
    """Prune a month: first 30 whole days (a cut at midnight UTC, as EVENT_RETENTION_DAYS makes it: partitions dropped,
    nothing deleted row by row), then 5 more hours (a cut inside a day: its events deleted in batches). Counts
    the events newer than each cut before and after."""
    from django.db import connection

    from usage.models import ExecutionEvent
    from usage.models.partitions import release_pruned_partitions
    from usage.operations.maintenance import prune_events

    oldest = ExecutionEvent.objects.order_by("timestamp").values_list("timestamp", flat=True).first()
    midnight = datetime(oldest.year, oldest.month, oldest.day, tzinfo=UTC) + timedelta(days=31)
    results = {}
    for name, cutoff in (("30 whole days", midnight), ("5 hours inside the next day", midnight + timedelta(hours=5))):
        newer_before = ExecutionEvent.objects.filter(timestamp__gte=cutoff).count()
        started = time.perf_counter()
        deleted = prune_events(cutoff)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        released = release_pruned_partitions(connection)
        release_seconds = time.perf_counter() - started
        newer_after = ExecutionEvent.objects.filter(timestamp__gte=cutoff).count()
        older_left = ExecutionEvent.objects.filter(timestamp__lt=cutoff).count()
        print(f"  {name}, before {cutoff:%Y-%m-%d %H:%M}: {deleted:,} events in {seconds:.2f} s; newer events "
              f"{newer_before:,} before, {newer_after:,} after; {older_left} older left; then {released} detached "
              f"partitions dropped in {release_seconds:.2f} s", flush=True)
        results[name] = {"cutoff": cutoff.isoformat(), "deleted": deleted, "seconds": round(seconds, 2),
                         "released_partitions": released, "release_seconds": round(release_seconds, 2),
                         "newer_before": newer_before, "newer_after": newer_after, "older_left": older_left}
    return results


def time_dashboard_queries(runs: int) -> list[dict]:
    """The dashboard's data for 90 days, with and without the per-API-key breakdown, for a viewer in UTC (whole UTC
    days only) and in New York (two partial UTC days at the ends, read from the hourly summaries)."""
    from usage.dashboards.queries import connector_usage
    from usage.ranges import parse_range

    results = []
    for tz in ("UTC", "America/New_York"):
        for with_api_keys in (False, True):
            timings = []
            for _ in range(runs):
                usage_range = parse_range({"range": "90d", "tz": tz})
                started = time.perf_counter()
                connector_usage(dashboard.CONNECTOR_ID, usage_range, with_api_keys=with_api_keys)
                timings.append((time.perf_counter() - started) * 1000)
            results.append({"tz": tz, "with_api_keys": with_api_keys,
                            "median_ms": round(statistics.median(timings), 1)})
            print(f"  90d data ({tz}) {'with' if with_api_keys else 'without'} the per-key breakdown: "
                  f"median {results[-1]['median_ms']} ms", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dashboard-runs", type=int, default=15, help="Timed dashboard requests per range and view.")
    parser.add_argument("--pages-only", action="store_true", help="Time the dashboard and the Logs tab only.")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="Time an existing database (from --keep).")
    parser.add_argument("--load-only", action="store_true")
    parser.add_argument("--no-prune", action="store_true")
    parser.add_argument("--prune-only", action="store_true")
    parser.add_argument("--rebuild-rollups", action="store_true",
                        help="With --reuse: migrate and rebuild the rollups of the kept events first.")
    parser.add_argument("--skip-rollups", action="store_true", help="Generate the events only (see --rebuild-rollups).")
    args = parser.parse_args()

    dashboard.configure_environment("postgres")
    if not args.reuse:
        dashboard.recreate_database("postgres")
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import override_settings

    from bench import logs
    from usage.operations.maintenance import rebuild_rollups

    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()
    summary: dict = {"events": args.events}
    try:
        if not args.reuse or args.rebuild_rollups:
            call_command("migrate", verbosity=0, interactive=False)
        if not args.reuse:
            print(f"Generating {args.events:,} events...", flush=True)
            started = time.perf_counter()
            summary.update(generate(args.events, datetime.now(UTC)))
            summary["load_seconds"] = round(time.perf_counter() - started, 1)
        if (not args.reuse and not args.skip_rollups) or args.rebuild_rollups:
            started = time.perf_counter()
            result = rebuild_rollups()
            summary["rollup_seconds"] = round(time.perf_counter() - started, 1)
            print(f"  rollups: {result.rollup_rows:,} rows in {summary['rollup_seconds']} s", flush=True)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            summary["database_size"] = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_executionevent'::regclass")
            summary["partitions"] = cursor.fetchone()[0]
        if args.load_only:
            print(json.dumps(summary))
            return
        from bench.seed import _connector
        from connectors.models import Connector

        if not Connector.objects.filter(pk=dashboard.CONNECTOR_ID).exists():
            # The timed pages belong to a stored connector, as in use (a deleted one's name is looked up in events).
            _connector(dashboard.CONNECTOR_ID, "Bench connector", "https://api.openai.com/v1/chat/completions", "default")
        summary["load_average_before"] = os.getloadavg()
        if args.prune_only:
            summary["prune"] = time_prune()
            return
        print("Dashboard:", flush=True)
        summary["dashboard_queries"] = time_dashboard_queries(max(3, args.runs // 3))
        dashboard.RANGES = ("24h", "90d", "90d&tz=America/New_York")
        summary["dashboard"] = dashboard.time_views(args.dashboard_runs, 2)
        print("Logs tab:", flush=True)
        summary["logs"] = logs.time_views(args.runs, args.warmup)
        if args.pages_only:
            print(json.dumps({"dashboard": summary["dashboard"], "logs": summary["logs"]}))
            return
        print("Exports:", flush=True)
        summary["exports"] = time_exports(5)
        if not args.no_prune:
            print("Prune:", flush=True)
            summary["prune"] = time_prune()
        summary["load_average_after"] = os.getloadavg()
        print(f"  load average before {summary['load_average_before']}, after {summary['load_average_after']}")
    finally:
        if not args.keep:
            dashboard.drop_database("postgres")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "event_log.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
