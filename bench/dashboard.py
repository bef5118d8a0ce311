"""Benchmark the token usage dashboard at scale: bulk-load synthetic events, build rollups, time the views.

    .venv/bin/python bench/dashboard.py --database postgres --events 10000000
    .venv/bin/python bench/dashboard.py --database sqlite --events 1000000

PostgreSQL: the events go into a database of their own (``connectors_bench`` on postgres://postgres@127.0.0.1:5432,
dropped and recreated on each run, dropped again at the end unless --keep) with COPY through psycopg. SQLite: a file
in /tmp, filled with executemany in large transactions. The rollups are then built with the same code as
``manage.py rebuild_usage_rollups`` (usage.operations.maintenance.rebuild_rollups), and the dashboard page and the JSON
endpoint are timed for the 24h, 30d and 90d ranges in-process with Django's test Client: server time from the
request entering the middleware to the response being rendered, no network and no browser. Results and how to
read them: docs/PERFORMANCE.md, section "Usage dashboard".

The synthetic connector: events spread evenly over the last 90 days; 50 users with Zipf-like weights (a few
heavy users, a long tail); 4 models; 3% failures; log-normal durations and token counts; some cached and
reasoning tokens. Seeded, so every run loads the same events.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_DATABASE = "connectors_bench"
SQLITE_PATH = Path("/tmp/connectors_bench.sqlite3")
CONNECTOR_ID = "bench-connector"
RANGES = ("24h", "30d", "90d")
USERS = [f"user{index:02d}@example.com" for index in range(50)]
USER_WEIGHTS = [1 / (rank + 1) ** 1.1 for rank in range(len(USERS))]
MODELS = ["gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4.1"]
MODEL_WEIGHTS = [0.35, 0.45, 0.1, 0.1]
COLUMNS = (
    "timestamp",
    "connector_id",
    "connector_name",
    "connector_is_preconfigured",
    "user_name",
    "source",
    "sub_action",
    "outcome",
    "duration_ms",
    "upstream_status",
    "requested_model",
    "response_model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage_source",
    "error_message",
    "request_bytes",
    "response_bytes",
    "space_id",
)


def configure_environment(database: str) -> None:
    """Before Django reads its settings: a self-contained production-like environment (DEBUG off)."""
    os.environ["ENV_FILE"] = ""
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production")
    os.environ.setdefault("CONNECTORS_ENCRYPTION_KEYS", "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["LOG_LEVEL"] = "WARNING"
    if database == "postgres":
        os.environ["DATABASE_URL"] = f"{PG_SERVER}/{PG_DATABASE}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{SQLITE_PATH}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "connectors_admin.settings"


def recreate_database(database: str) -> None:
    if database == "postgres":
        import psycopg

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {PG_DATABASE}")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)


def drop_database(database: str) -> None:
    from django.db import connections

    connections.close_all()
    if database == "postgres":
        import psycopg

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)


def synthetic_events(count: int, end: datetime, seed: int = 20250101):
    """``count`` event rows (tuples in COLUMNS order), oldest first, evenly over the 90 days before ``end``."""
    rng = random.Random(seed)
    span = timedelta(days=90).total_seconds()
    start = end - timedelta(days=90)
    step = span / count
    users = rng.choices(USERS, USER_WEIGHTS, k=4096)
    models = rng.choices(MODELS, MODEL_WEIGHTS, k=4096)
    for index in range(count):
        timestamp = start + timedelta(seconds=index * step + rng.random() * step)
        model = models[rng.getrandbits(12)]
        failed = rng.random() < 0.03
        duration = min(rng.lognormvariate(math.log(900), 0.8), 120_000.0)
        if failed:
            prompt = completion = cached = 0
            reasoning = None
            status = 429 if rng.random() < 0.5 else 500
        else:
            prompt = int(rng.lognormvariate(math.log(800), 0.9))
            completion = int(rng.lognormvariate(math.log(250), 0.8))
            cached = prompt // 2 if rng.random() < 0.3 else 0
            reasoning = completion // 3 if model == "o3-mini" else None
            status = 200
        yield (
            timestamp,
            CONNECTOR_ID,
            "Bench connector",
            False,
            users[rng.getrandbits(12)],
            "api",
            "invokeAI",
            "failure" if failed else "success",
            round(duration, 1),
            status,
            model,
            "" if failed else model + "-2025-01-01",
            prompt,
            completion,
            prompt + completion,
            cached,
            reasoning,
            "none" if failed else "provider",
            "upstream error" if failed else "",
            1200,
            0 if failed else 2400,
            "default",
        )


def load_postgres(count: int, end: datetime) -> None:
    from django.db import connection

    from usage.models import ExecutionEvent

    table = ExecutionEvent._meta.db_table
    connection.ensure_connection()
    with connection.cursor() as cursor:
        # COPY text format: tab-separated, \N for NULL; none of the synthetic strings need escaping.
        with cursor.cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for number, row in enumerate(synthetic_events(count, end), start=1):
                buffer.write("\t".join(_copy_value(value) for value in row))
                buffer.write("\n")
                if number % 100_000 == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def load_sqlite(count: int, end: datetime) -> None:
    from django.db import connection, transaction

    from usage.models import ExecutionEvent

    table = ExecutionEvent._meta.db_table
    sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    timestamp_field = ExecutionEvent._meta.get_field("timestamp")
    batch: list = []
    for row in synthetic_events(count, end):
        batch.append((timestamp_field.get_db_prep_value(row[0], connection), *row[1:]))
        if len(batch) == 50_000:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, batch)
            batch = []
    if batch:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)


def analyse(database: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if database == "postgres" else "ANALYZE")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def time_views(runs: int, warmup: int) -> list[dict]:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    viewer, _ = User.objects.get_or_create(username="bench-viewer")
    viewer.groups.add(Group.objects.get(name="Usage viewers"))
    client = Client()
    client.force_login(viewer)
    results = []
    for range_key in RANGES:
        for name, url in (
            ("page", f"/usage/connectors/{CONNECTOR_ID}/?range={range_key}"),
            ("json", f"/api/usage/connectors/{CONNECTOR_ID}?range={range_key}"),
        ):
            timings = []
            for attempt in range(warmup + runs):
                started = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{url} answered {response.status_code}")
                if attempt >= warmup:
                    timings.append(elapsed)
            if name == "json":
                requests = response.json()["totals"]["requests"]
            else:
                # response.context is only captured under the test runner's instrumentation, which costs time.
                found = re.search(rb'data-total="requests">([0-9,]+)<', response.content)
                requests = int(found.group(1).replace(b",", b"")) if found else 0
            results.append(
                {
                    "range": range_key,
                    "view": name,
                    "median_ms": round(statistics.median(timings), 1),
                    "p95_ms": round(percentile(timings, 0.95), 1),
                    "min_ms": round(min(timings), 1),
                    "runs": runs,
                    "requests_in_range": requests,
                    "bytes": len(response.content),
                }
            )
            print(f"  {range_key:>4} {name:<4} median {results[-1]['median_ms']:7.1f} ms  p95 {results[-1]['p95_ms']:7.1f} ms  "
                  f"({requests:,} requests in range, {len(response.content):,} bytes)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("postgres", "sqlite"), required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20, help="Timed requests per view and range (after warm-up).")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database afterwards.")
    parser.add_argument("--reuse", action="store_true", help="Time an existing benchmark database (from --keep).")
    args = parser.parse_args()

    configure_environment(args.database)
    if not args.reuse:
        recreate_database(args.database)

    import warnings

    import django

    # whitenoise warns that STATIC_ROOT does not exist: the benchmark serves no static files.
    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    from django.core.management import call_command
    from django.test.utils import override_settings

    from usage.models import ExecutionEvent, UsageRollup
    from usage.operations.maintenance import rebuild_rollups

    # The pages use {% static %}; without collectstatic's manifest, plain storage (as the tests do).
    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()

    summary: dict = {"database": args.database, "events": args.events}
    try:
        if not args.reuse:
            call_command("migrate", verbosity=0, interactive=False)
            end = datetime.now(UTC)
            print(f"Loading {args.events:,} events into {args.database}...", flush=True)
            started = time.perf_counter()
            (load_postgres if args.database == "postgres" else load_sqlite)(args.events, end)
            summary["load_seconds"] = round(time.perf_counter() - started, 1)
            print(f"  loaded in {summary['load_seconds']} s", flush=True)

            started = time.perf_counter()
            result = rebuild_rollups()
            summary["rollup_seconds"] = round(time.perf_counter() - started, 1)
            print(f"  rollups: {result.rollup_rows:,} rows from {result.events:,} events in {summary['rollup_seconds']} s", flush=True)
            analyse(args.database)
        summary["event_rows"] = ExecutionEvent.objects.count()
        summary["rollup_rows"] = UsageRollup.objects.count()
        print(f"Timing ({args.runs} runs after {args.warmup} warm-up, in-process test Client):", flush=True)
        # Other work on the machine skews the figures; the load average is printed so that a reader can tell.
        summary["load_average_before"] = os.getloadavg()
        summary["timings"] = time_views(args.runs, args.warmup)
        summary["load_average_after"] = os.getloadavg()
        print(f"  load average before {summary['load_average_before']}, after {summary['load_average_after']}")
    finally:
        if not args.keep:
            drop_database(args.database)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"dashboard-{args.database}-{args.events}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"Wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
