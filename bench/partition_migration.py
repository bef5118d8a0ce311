"""Benchmark migration 0008 (usage/operations/partition_conversion.py): an unpartitioned event table of N events
made partitioned while events keep being recorded, and how long recording is held up.

    .venv/bin/python -m bench.partition_migration --events 10000000

Database ``connectors_bench_convert`` on postgres://postgres@127.0.0.1:5432 (dropped at the end). The usage app is
migrated to 0007 (the plain table), N events are generated in SQL (bench/event_log.py's generator), then
``migrate usage 0008`` runs while a thread records events through ExecutionEvent.objects.insert_batch (the event
writer's insert), 20 at a time back to back. Reported: the write lock the conversion held (its own measure), the
longest an insert waited (what recording saw), and that every event is in the partitioned table afterwards.
Results: docs/PERFORMANCE.md, "Partitions".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import dashboard, event_log  # noqa: E402

dashboard.PG_DATABASE = "connectors_bench_convert"


class Recorder(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.recorded = 0
        self.slowest = 0.0
        self.errors: list[str] = []

    def run(self):
        from django.db import DatabaseError, connection

        from tests.helpers.events import build_event

        try:
            while not self.stop.is_set():
                from usage.models import ExecutionEvent

                batch = [build_event(datetime.now(UTC)) for _ in range(20)]
                started = time.perf_counter()
                try:
                    ExecutionEvent.objects.insert_batch(batch)
                except DatabaseError as exc:  # counted: the event writer would retry or spool these
                    self.errors.append(str(exc)[:200])
                    continue
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.recorded += len(batch)
        finally:
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    dashboard.configure_environment("postgres")
    dashboard.recreate_database("postgres")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    messages: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logging.getLogger("usage.operations.partition_conversion").addHandler(Capture())
    logging.getLogger("usage.operations.partition_conversion").setLevel(logging.INFO)
    summary: dict = {"events": args.events}
    try:
        call_command("migrate", verbosity=0, interactive=False)
        call_command("migrate", "usage", "0007", verbosity=0, interactive=False)
        with connection.cursor() as cursor:
            # Back to the plain table of 0007 (the reverse of 0008 leaves the table as it is).
            cursor.execute("DROP TABLE usage_executionevent CASCADE")
        from django.db.migrations.loader import MigrationLoader

        state = MigrationLoader(connection).project_state(("usage", "0007_event_indexes_for_slices"))
        with connection.schema_editor() as editor:
            editor.create_model(state.apps.get_model("usage", "ExecutionEvent"))
        print(f"Generating {args.events:,} events into the plain table...", flush=True)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for first in range(1, args.events + 1, event_log.CHUNK):
                last = min(first + event_log.CHUNK - 1, args.events)
                cursor.execute(event_log.GENERATE_SQL, {
                    "end": datetime.now(UTC), "step": 90 * 86400 / args.events, "connector": dashboard.CONNECTOR_ID,
                    "first": first, "last": last})
            cursor.execute("ANALYZE usage_executionevent")
        summary["load_seconds"] = round(time.perf_counter() - started, 1)
        print(f"  in {summary['load_seconds']} s; migrating while recording...", flush=True)
        recorder = Recorder()
        recorder.start()
        started = time.perf_counter()
        call_command("migrate", "usage", "0008", verbosity=0, interactive=False)
        summary["migration_seconds"] = round(time.perf_counter() - started, 1)
        recorder.stop.set()
        recorder.join()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM usage_executionevent")
            stored = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_executionevent'::regclass")
            summary["partitions"] = cursor.fetchone()[0]
        summary.update(
            conversion=messages, recorded_during=recorder.recorded, insert_errors=len(recorder.errors),
            slowest_insert_ms=round(recorder.slowest * 1000, 1), stored=stored,
            all_kept=stored == args.events + recorder.recorded,
        )
        print(json.dumps(summary, indent=2), flush=True)
    finally:
        if not args.keep:
            dashboard.drop_database("postgres")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "partition_migration.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
