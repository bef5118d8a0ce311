"""Time the /audit/ page's queries at scale: keyset pages with each filter, first and deep, on PostgreSQL.

    .venv/bin/python bench/audit_pages.py --records 10000000
    .venv/bin/python bench/audit_pages.py --records 1000000 --database audit_bench_small

The records go into a database of their own (``audit_bench`` on postgres://postgres@127.0.0.1:5432 unless
--database says otherwise; dropped and recreated on each run, dropped at the end unless --keep), migrated with the
app's migrations, filled with one ``INSERT … SELECT generate_series`` (records spread over two years, 200 actors,
10,000 objects, the trail's actions), then ANALYZEd. Each case calls ``connectors.audit.queries.page`` — the code
the page runs — five times and reports the median: the first page, and a page deep in the results (its cursor
taken half-way down the filtered records). Results: docs/PERFORMANCE.md, section "Audit trail pages".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_SERVER = "postgres://postgres@127.0.0.1:5432"

FILL = """
INSERT INTO audit_auditrecord
    (at, actor, actor_user_id, api_key_id, api_key_name, via, client_ip, user_agent, object_type, object_id,
     object_repr, action, changes)
SELECT now() - (interval '2 years') * (1 - n::float / %(records)s),
       'user' || (n %% 200), n %% 200, NULL, '', (ARRAY['page','api','admin','command','sso'])[1 + n %% 5],
       '10.0.0.1', 'bench', (ARRAY['connector','api_key','user','group'])[1 + n %% 4], 'obj' || (n %% 10000),
       'Object ' || (n %% 10000),
       (ARRAY['create','update','delete','sign_in','sign_in_failed','grant','remove','revoke'])[1 + (n / 7) %% 8],
       '{"name": ["before", "after"]}'::jsonb
FROM generate_series(1, %(records)s) AS n
"""


def recreate(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')


def drop(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def timed(function, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--database", default="audit_bench")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    recreate(args.database)
    os.environ.update({"DATABASE_URL": f"{PG_SERVER}/{args.database}", "DEBUG": "true", "ENV_FILE": "",
                       "DATABASE_POOL": "false"})
    os.environ.setdefault("CONNECTORS_ENCRYPTION_KEYS", "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=")
    os.environ["DJANGO_SETTINGS_MODULE"] = "connectors_admin.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from connectors.audit import queries
    from connectors.audit.models import AuditRecord

    try:
        call_command("migrate", verbosity=0)
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(FILL, {"records": args.records})
            cursor.execute("ANALYZE audit_auditrecord")
        print(f"loaded {args.records:,} records in {time.perf_counter() - start:.0f} s")

        cases = {
            "no filter": {},
            "actor": {"actor": "user42"},
            "object": {"object_type": "connector", "object_id": "obj1236"},
            "action": {"action": "sign_in_failed"},
            "date range (one month, a year ago)": {"from": "", "to": ""},
        }
        from datetime import timedelta

        from django.utils import timezone

        year_ago = timezone.now() - timedelta(days=365)
        cases["date range (one month, a year ago)"] = {"from": year_ago.isoformat(),
                                                      "to": (year_ago + timedelta(days=30)).isoformat()}
        print(f"{'filter':40} {'matching':>12} {'first page ms':>14} {'deep page ms':>13}")
        for name, params in cases.items():
            query = queries.parse_query(params)
            matching = queries.filtered(query).count()
            middle = queries.filtered(query).values_list("id", flat=True)[matching // 2]
            first = timed(lambda q=query: queries.page(q))
            deep = timed(lambda q=query, c=str(middle): queries.page(q, c))
            print(f"{name:40} {matching:>12,} {first:>14.2f} {deep:>13.2f}")
        assert AuditRecord.objects.exists()
    finally:
        connection.close()
        if not args.keep:
            drop(args.database)


if __name__ == "__main__":
    main()
