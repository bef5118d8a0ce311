"""Benchmark the Logs tab at scale: its first page and filtered pages over millions of events on PostgreSQL.

    .venv/bin/python -m bench.logs --events 10000000
    .venv/bin/python -m bench.logs --events 100000          # a quick check that it works

The events are bench/dashboard.py's synthetic connector (90 days, 50 users, 4 models, 3% failures), loaded the same
way (COPY) into a PostgreSQL database of this benchmark's own (``connectors_bench_logs`` on
postgres://postgres@127.0.0.1:5432, dropped at the end unless --keep), with the rollups rebuilt so that the counts
per outcome read them as in production. Each page is then requested in-process with Django's test Client as a
Usage viewer: server time from the request entering the middleware to the rendered response, no network, no
browser. Results and how to read them: docs/PERFORMANCE.md, section "Logs tab".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import dashboard  # noqa: E402

dashboard.PG_DATABASE = "connectors_bench_logs"  # its own database, so it can run beside bench/dashboard.py
CONNECTOR_ID = dashboard.CONNECTOR_ID
LOGS = f"/connectors/{CONNECTOR_ID}/logs/"
# (name, query string): the first page, filtered pages, and a page further down reached with the cursor.
PAGES = (
    ("first page (7 days)", "range=7d"),
    ("first page (90 days)", "range=90d"),
    ("failures only", "range=90d&outcome=failure"),
    ("one user and model", "range=90d&user=user07%40example.com&model=o3-mini-2025-01-01"),
    ("search the message", "range=7d&q=upstream"),
)


def time_page(client, url: str, runs: int, warmup: int) -> tuple[list[float], bytes]:
    timings = []
    for attempt in range(warmup + runs):
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        if attempt >= warmup:
            timings.append(elapsed)
    return timings, response.content


def time_views(runs: int, warmup: int) -> list[dict]:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    viewer, _ = User.objects.get_or_create(username="bench-viewer")
    viewer.groups.add(Group.objects.get(name="Usage viewers"))
    client = Client()
    client.force_login(viewer)
    pages = list(PAGES)
    # The tenth page: follow "Older" nine times from the first page, then time that URL.
    url = f"{LOGS}?range=90d"
    for _ in range(9):
        content = client.get(url).content.decode()
        url = re.search(r'href="([^"]+)" rel="next"', content).group(1).replace("&amp;", "&")
        url = url if url.startswith("/") else LOGS + url
    pages.append(("tenth page (cursor)", url.split("?", 1)[1]))
    results = []
    for name, query in pages:
        timings, content = time_page(client, f"{LOGS}?{query}", runs, warmup)
        rows = len(re.findall(rb"<tr data-event=", content))
        results.append(
            {
                "page": name,
                "query": query,
                "median_ms": round(statistics.median(timings), 1),
                "p95_ms": round(dashboard.percentile(timings, 0.95), 1),
                "min_ms": round(min(timings), 1),
                "runs": runs,
                "rows": rows,
            }
        )
        print(f"  {name:<22} median {results[-1]['median_ms']:7.1f} ms  p95 {results[-1]['p95_ms']:7.1f} ms  ({rows} rows)",
              flush=True)
    return results


def explain_first_page() -> str:
    """PostgreSQL's plan for the first page's query, to compare with the one stated in usage/dashboards/logs.py."""
    from django.db import connection

    from usage.dashboards.event_filters import EventFilters
    from usage.dashboards.logs import LIST_COLUMNS, _events
    from usage.ranges import parse_range

    events = _events(CONNECTOR_ID, parse_range({"range": "90d"}), EventFilters())
    query = events.order_by("-timestamp", "-id").values(*LIST_COLUMNS)[:51]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=20, help="Timed requests per page (after warm-up).")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database afterwards.")
    parser.add_argument("--reuse", action="store_true", help="Time an existing benchmark database (from --keep).")
    args = parser.parse_args()

    dashboard.configure_environment("postgres")
    if not args.reuse:
        dashboard.recreate_database("postgres")

    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    from django.core.management import call_command
    from django.test.utils import override_settings

    from usage.models import ExecutionEvent
    from usage.operations.maintenance import rebuild_rollups

    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()

    summary: dict = {"database": "postgres", "events": args.events}
    try:
        if not args.reuse:
            call_command("migrate", verbosity=0, interactive=False)
            print(f"Loading {args.events:,} events into PostgreSQL...", flush=True)
            started = time.perf_counter()
            dashboard.load_postgres(args.events, datetime.now(UTC))
            summary["load_seconds"] = round(time.perf_counter() - started, 1)
            rebuild_rollups()
            dashboard.analyse("postgres")
            print(f"  loaded and rolled up in {round(time.perf_counter() - started, 1)} s", flush=True)
        summary["event_rows"] = ExecutionEvent.objects.count()
        summary["plan_first_page"] = explain_first_page()
        print(summary["plan_first_page"], flush=True)
        print(f"Timing ({args.runs} runs after {args.warmup} warm-up, in-process test Client):", flush=True)
        summary["load_average_before"] = os.getloadavg()
        summary["timings"] = time_views(args.runs, args.warmup)
        summary["load_average_after"] = os.getloadavg()
        print(f"  load average before {summary['load_average_before']}, after {summary['load_average_after']}")
    finally:
        if not args.keep:
            dashboard.drop_database("postgres")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"logs-postgres-{args.events}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"Wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
