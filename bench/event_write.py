"""What writing a batch of execution events costs on PostgreSQL's day-partitioned event table, variant by variant.

    .venv/bin/python -m bench.event_write --sizes 1 8 64 --repeats 400

The event writer (usage/recording/writer.py) hands each batch to ``ExecutionEvent.objects.insert_batch``
(usage/models/events.py), which inserts the events and adds them to the rollups in one autocommitted statement;
the rollups' triggers (migration 0002) add them to the hourly and daily summaries. An execution is answered once
that commit returns, so its cost is what the event log adds to a call. This times the write for batches of 1, 8
and 64 events, the variants **alternating** batch by batch (A, B, C, A, B, C…, the order rotated every round), so
that a machine shared with other work slows every variant alike. Per batch it reports the medians of:

- ``wall_us``: the write, from the events to the commit's answer (the caller's wait);
- ``client_cpu_us``: this thread's CPU (building the statement, binding, psycopg);
- ``server_cpu_us``: the PostgreSQL backend's CPU (parse, plan, execute, triggers, commit), read from its
  ``/proc/<pid>/schedstat`` (nanoseconds, so a batch at a time) — run as root or as the postgres user;
- ``server_queue_us``: the time the backend waited for a CPU (high: the machine is loaded, not the statement);

the rollup tables vacuumed every ten rounds, outside the timing (see VACUUM_EVERY);

and, from one traced batch per variant (libpq's protocol trace), the statements sent, the round trips (the
client's turns to wait for the server) and the statements parsed; and for the statement before and now,
``EXPLAIN ANALYZE``: planning, execution and the summaries' triggers. Variants (``--variants``):

- ``app``: ``insert_batch`` as the app runs it now (each table's rows as one JSON document,
  ``json_populate_recordset`` in SQL, a prepared statement);
- ``values_client``: the statement before it (the rollups' upsert in a ``WITH``, then ``INSERT ... VALUES``: a
  text per batch size, its parameters bound client-side by psycopg, as Django does, unprepared);
- ``values_prepared``: that text bound server-side and prepared (psycopg's key is the text and the parameters'
  types, so one statement per batch size and per pattern of NULLs and integer widths);
- ``json_client``: the app's statement bound client-side, unprepared (what the prepared statement saves);
- ``pipeline``: ``BEGIN``, the events' ``INSERT ... VALUES``, the rollups' upsert and ``COMMIT`` as four
  statements sent in one go (psycopg's pipeline mode), prepared;
- ``values_partition``: ``values_client`` inserting into the day's partition instead of the parent table (ids
  from the parent's sequence: a partition has no identity of its own);
- ``values_client_async_commit``, ``app_async_commit``: those with ``synchronous_commit = off`` for the session,
  for the figure only: the app never turns it off (a committed event must survive a crash).

A database of its own, ``connectors_bench_event_write`` on postgres://postgres@127.0.0.1:5432 (dropped at the
end unless ``--keep``). Results: docs/PERFORMANCE.md, "The event write, statement by statement".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import dashboard  # noqa: E402

dashboard.PG_DATABASE = "connectors_bench_event_write"


def make_events(size: int, round_number: int) -> list:
    """``size`` events of now: a few connectors, users, models and outcomes, so a batch of 64 has about a dozen
    rollup rows (a busy gateway's batch); odd ones carry no cached or reasoning tokens, an API key or a status."""
    from tests.helpers.events import build_event

    now = datetime.now(UTC)
    events = []
    for index in range(size):
        n = round_number * size + index
        events.append(build_event(
            now, connector_id=f"bench-{n % 3}", user_name=f"user{n % 4}", requested_model=("gpt-4o", "o3-mini")[n % 2],
            outcome="failure" if n % 17 == 0 else "success", prompt_tokens=100 + n % 900, completion_tokens=n % 300,
            cached_tokens=None if n % 2 else n % 50, reasoning_tokens=None if n % 3 else 7,
            upstream_status=None if n % 5 == 0 else 200, duration_ms=5.0 + (n * 37) % 900, cost_nanos=n * 1000,
        ))
    return events


# --- the variants -------------------------------------------------------------------------------------------------
# Each writes ``events`` (not stored yet) and their rollups and returns once they are committed.

def _values_statement(events: list, *, table: str | None = None) -> tuple[str, list]:
    """The statement before the JSON rows (commit 104469f's ``_insert_and_roll_up``): the rollups' upsert in a
    WITH, then ``INSERT ... VALUES`` with a parameter per value, converted by ``get_db_prep_save``."""
    from django.db import connections

    from usage.models.events import _EVENT_FIELDS
    from usage.models.rollups import rollup_deltas, rollup_upsert, sorted_deltas

    for event in events:
        event.make_storable()
    rollup_sql, rollup_params = rollup_upsert(sorted_deltas(rollup_deltas(events)))
    db = connections["default"]
    params: list = []
    for event in events:
        params += [field.get_db_prep_save(field.pre_save(event, True), db) for field in _EVENT_FIELDS]
    return f"WITH rollups AS ({rollup_sql} RETURNING 1) {_values_insert_sql(len(events), table)}", rollup_params + params


@functools.lru_cache(maxsize=256)
def _values_insert_sql(rows: int, table: str | None) -> str:
    from django.db import connection

    from usage.models.events import _EVENT_FIELDS, ExecutionEvent

    quote = connection.ops.quote_name
    row = "(" + ",".join(["%s"] * len(_EVENT_FIELDS)) + ")"
    columns = ",".join(quote(f.column) for f in _EVENT_FIELDS)
    if table:  # a partition has no identity of its own: the parent's sequence gives the id
        row = "(nextval('usage_executionevent_id_seq')," + row[1:]
        columns = "id," + columns
    return (
        f"INSERT INTO {quote(table or ExecutionEvent._meta.db_table)} ({columns}) "
        f"VALUES {','.join([row] * rows)} RETURNING id"
    )


def values_client(events: list) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(*_values_statement(events))
        cursor.fetchall()


def values_partition(events: list) -> None:
    from django.db import connection

    from usage.models.partitions import day_partition_name

    with connection.cursor() as cursor:
        cursor.execute(*_values_statement(events, table=day_partition_name(events[0].timestamp.date())))
        cursor.fetchall()


def values_prepared(events: list) -> None:
    import psycopg

    with psycopg.Cursor(_raw_connection()) as cursor:
        cursor.execute(*_values_statement(events), prepare=True)
        cursor.fetchall()


def json_client(events: list) -> None:
    """The app's statement (rows as JSON) bound client-side, unprepared: what the prepared statement saves."""
    from django.db import connections

    from usage.models.events import write_statement

    for event in events:
        event.make_storable()
    with connections["default"].cursor() as cursor:
        cursor.execute(*write_statement(events, connections["default"]))
        cursor.fetchall()


def pipeline(events: list) -> None:
    import psycopg
    from django.db import connections

    from usage.models.events import _EVENT_FIELDS
    from usage.models.rollups import rollup_deltas, rollup_upsert, sorted_deltas

    for event in events:
        event.make_storable()
    rollup_sql, rollup_params = rollup_upsert(sorted_deltas(rollup_deltas(events)))
    db = connections["default"]
    params: list = []
    for event in events:
        params += [field.get_db_prep_save(field.pre_save(event, True), db) for field in _EVENT_FIELDS]
    raw = _raw_connection()
    with raw.pipeline(), psycopg.Cursor(raw) as cursor:
        cursor.execute("BEGIN")
        cursor.execute(_values_insert_sql(len(events), None), params, prepare=True)
        cursor.execute(rollup_sql, rollup_params, prepare=True)
        cursor.execute("COMMIT")


def app(events: list) -> None:
    from usage.models.events import ExecutionEvent

    ExecutionEvent.objects.insert_batch(events)


VARIANTS = {
    "app": app,
    "values_client": values_client,
    "values_prepared": values_prepared,
    "json_client": json_client,
    "pipeline": pipeline,
    "values_partition": values_partition,
    "values_client_async_commit": values_client,
    "app_async_commit": app,
}


def _raw_connection():
    """psycopg's connection under Django's (its prepare_threshold set by connectors_admin/postgresql/base.py)."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection


# --- measuring ----------------------------------------------------------------------------------------------------

def _backend_pid(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting for one) of process ``pid``."""
    running, waiting, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(running), int(waiting)


def _session_for(name: str) -> contextlib.AbstractContextManager:
    """The session settings of a variant (only the ``..._async_commit`` ones have any)."""
    from django.db import connection

    @contextlib.contextmanager
    def async_commit():
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit = on")

    return async_commit() if name.endswith("_async_commit") else contextlib.nullcontext()


# Every batch updates the same few rollup rows (the current hour's), each update leaving a dead version behind until
# VACUUM: on a shared server autovacuum's workers may not come round for minutes, and the upserts then slow down as
# those rows' pages and indexes fill (tens of thousands of dead versions of 24 rows by the end of a run). Vacuumed
# every few rounds, outside the timing, as autovacuum keeps them on a server of their own.
VACUUM_EVERY = 10


def _vacuum_rollups() -> None:
    from django.db import connection

    from usage.models import UsageDailyRollup, UsageHourlyTotal, UsageRollup

    tables = ", ".join(model._meta.db_table for model in (UsageRollup, UsageHourlyTotal, UsageDailyRollup))
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {tables}")


def time_batches(names: list[str], sizes: list[int], repeats: int) -> dict:
    """Every (variant, size) ``repeats`` times, variants alternating batch by batch."""
    from django.db import connection

    pid = _backend_pid(connection)
    samples = {(name, size): {"wall_us": [], "client_cpu_us": [], "server_cpu_us": [], "server_queue_us": []}
               for name in names for size in sizes}
    for round_number in range(repeats):
        if round_number % VACUUM_EVERY == 0:
            _vacuum_rollups()
        for size in sizes:
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                events = make_events(size, round_number)
                with _session_for(name):
                    server_before = _schedstat(pid)
                    cpu_before = time.thread_time_ns()
                    started = time.perf_counter_ns()
                    VARIANTS[name](events)
                    wall = time.perf_counter_ns() - started
                    cpu = time.thread_time_ns() - cpu_before
                    server_after = _schedstat(pid)
                sample = samples[(name, size)]
                sample["wall_us"].append(wall / 1000)
                sample["client_cpu_us"].append(cpu / 1000)
                sample["server_cpu_us"].append((server_after[0] - server_before[0]) / 1000)
                sample["server_queue_us"].append((server_after[1] - server_before[1]) / 1000)
    return {key: {measure: round(statistics.median(values)) for measure, values in sample.items()}
            for key, sample in samples.items()}


_FRONTEND = re.compile(r"^F\t\d+\t(\w+)")


def trace_batch(name: str, size: int) -> dict:
    """One batch under libpq's protocol trace: statements sent, round trips (the client's turns to wait), parses."""
    import psycopg.pq

    raw = _raw_connection()
    with tempfile.TemporaryFile("w+") as trace, _session_for(name):
        raw.pgconn.trace(trace.fileno())
        raw.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            VARIANTS[name](make_events(size, 10_000))
        finally:
            raw.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().splitlines()
    directions = [line[0] for line in lines if line[:1] in ("F", "B")]
    round_trips = sum(1 for before, after in zip(directions, directions[1:], strict=False)
                      if before == "F" and after == "B")
    messages = [match.group(1) for line in lines if (match := _FRONTEND.match(line))]
    return {"statements": messages.count("Query") + messages.count("Execute"), "round_trips": round_trips,
            "parses": messages.count("Parse"), "messages": " ".join(m for m in messages if m != "Flush")}


def explain_statements(size: int, runs: int = 7) -> dict:
    """``EXPLAIN ANALYZE`` of the statement before (``values``) and now (``json``), unprepared, rolled back, ``runs``
    times each: the medians of planning, execution, and the summaries' triggers (part of the execution), in ms."""
    from django.db import connection, transaction

    from usage.models.events import write_statement

    found = {}
    for label, build in (("values", _values_statement), ("json", lambda events: write_statement(events, connection))):
        measured: dict[str, list[float]] = {"planning_ms": [], "execution_ms": [], "triggers_ms": []}
        for run in range(runs):
            events = make_events(size, 20_000 + run)
            for event in events:
                event.make_storable()
            sql, params = build(events)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, SUMMARY) " + sql, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                transaction.set_rollback(True)
            measured["planning_ms"].append(float(re.search(r"Planning Time: ([\d.]+)", plan).group(1)))
            measured["execution_ms"].append(float(re.search(r"Execution Time: ([\d.]+)", plan).group(1)))
            measured["triggers_ms"].append(sum(float(t) for t in re.findall(r"Trigger .*time=([\d.]+)", plan)))
        found |= {f"{label}_{key}": round(statistics.median(values), 3) for key, values in measured.items()}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=400, help="batches of each size per variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    dashboard.configure_environment("postgres")
    dashboard.recreate_database("postgres")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Sum

    from usage.models import ExecutionEvent, UsageDailyRollup, UsageHourlyTotal, UsageRollup
    from usage.models.partitions import ensure_partitions, is_partitioned

    try:
        call_command("migrate", verbosity=0, interactive=False)
        ensure_partitions(connection)
        if not is_partitioned(connection):
            raise SystemExit("the event table is not partitioned")
        for name in args.variants:  # warm-up: plans, prepared statements, caches
            for size in args.sizes:
                for round_number in range(20):
                    VARIANTS[name](make_events(size, round_number))
        load_before = os.getloadavg()
        started = time.time()
        timings = time_batches(args.variants, args.sizes, args.repeats)
        seconds = round(time.time() - started, 1)
        load_after = os.getloadavg()
        rows = []
        for size in args.sizes:
            for name in args.variants:
                row = {"variant": name, "size": size, **timings[(name, size)], **trace_batch(name, size)}
                rows.append(row)
                print(json.dumps(row))
        _vacuum_rollups()
        for size in args.sizes:  # last: their rollbacks make psycopg forget the connection's prepared statements
            explained = {"size": size, **explain_statements(size)}
            rows.append(explained)
            print(json.dumps(explained))
        # Every variant must have written what it was given: as many requests and tokens in each summary as events.
        totals = [ExecutionEvent.objects.aggregate(requests=Count("id"), tokens=Sum("prompt_tokens"))]
        totals += [model.objects.aggregate(requests=Sum("requests"), tokens=Sum("prompt_tokens"))
                   for model in (UsageRollup, UsageHourlyTotal, UsageDailyRollup)]
        if any(total != totals[0] for total in totals):
            raise SystemExit(f"events, rollups, hourly totals and daily rollups differ: {totals}")
        summary = {"repeats": args.repeats, "seconds": seconds, "load_average_before": load_before,
                   "load_average_after": load_after, "events": totals[0]["requests"], "rows": rows}
        print(json.dumps({key: value for key, value in summary.items() if key != "rows"}))
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "event_write.json").write_text(json.dumps(summary, indent=2))
    finally:
        if not args.keep:
            dashboard.drop_database("postgres")


if __name__ == "__main__":
    main()
