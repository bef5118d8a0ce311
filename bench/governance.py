"""How far budgets and rate limits can be overshot: 1,000 calls at once through several workers.

Two rules on one connector, counted in the database or in Redis (``--counters``), each measured in its own burst:

- a rate limit of ``--rpm`` requests per minute: the rule says exactly that many are admitted (a request is
  reserved before it is sent and refused when it would pass the limit);
- a token budget of ``--budget-tokens`` per day: a call reserves its prompt's estimate (request bytes / 4) and its
  completion cap (the budget's completion allowance, since these calls set no max_tokens) and is admitted when
  that fits in what is left; the provider's usage replaces the reservation when it ends. The budget is passed at
  most by what the admitted calls used beyond their reservations (bench/budget_overshoot.py measures that bound).

Reports admitted and refused calls, events, tokens counted vs the budget (the overshoot), and the wall time.

Example: ``python -m bench.governance --counters redis``  (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import time

from bench import harness
from bench.loadgen import Connection, HTTPClientError, install_uvloop, print_table

RULES_SCRIPT = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")
django.setup()
from decimal import Decimal
from usage.governance.models import Budget, Period, RateLimit, Scope, Unit
connector, kind, amount = sys.argv[1], sys.argv[2], int(sys.argv[3])
Budget.objects.all().delete(); RateLimit.objects.all().delete()
if kind == "rpm":
    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id=connector, requests_per_minute=amount)
else:
    Budget.objects.create(name="Bench tokens", scope=Scope.CONNECTOR, connector_id=connector, period=Period.DAY,
                          time_zone="UTC", unit=Unit.TOKENS, amount=Decimal(amount))
"""


async def burst(port: int, path: str, body: bytes, headers: dict, count: int) -> tuple[float, dict[int, int]]:
    started = time.perf_counter()

    async def one() -> int:
        connection = Connection("127.0.0.1", port)
        try:
            response = await connection.request("POST", path, body, headers)
            return response.status
        except (HTTPClientError, OSError):
            return 0
        finally:
            await connection.close()

    statuses = await asyncio.gather(*(one() for _ in range(count)))
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return time.perf_counter() - started, counts


def totals(stack: harness.Stack, connector: str, since: dt.datetime) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(stack.database_url.replace("postgres://", "postgresql://", 1)) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(total_tokens), 0) FROM usage_executionevent "
            "WHERE connector_id = %s AND timestamp >= %s", (connector, since)).fetchone()
    return int(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--counters", choices=("database", "redis"), default="database")
    parser.add_argument("--rpm", type=int, default=250, help="the rate limit, requests per minute")
    parser.add_argument("--budget-tokens", type=int, default=5000, help="the token budget")
    args = parser.parse_args()
    install_uvloop()
    rows = []
    with harness.stack(["ok"], workers=args.workers, governed=args.counters) as stack:
        connector = stack.connector("ok")
        path = f"/api/openai/{connector}/v1/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.seed['api_key']}"}
        env = harness.app_environment(stack.database_url, {"REDIS_URL": ""})
        for kind, amount in (("rpm", args.rpm), ("budget", args.budget_tokens)):
            subprocess.run([harness.PYTHON, "-c", RULES_SCRIPT, connector, kind, str(amount)], cwd=harness.ROOT,
                           env=env, check=True)
            time.sleep(1.0)  # the workers drop their cached rules on the change notice (LISTEN/NOTIFY)
            if kind == "rpm" and dt.datetime.now(dt.UTC).second > 40:  # one calendar minute for the whole burst
                time.sleep(61 - dt.datetime.now(dt.UTC).second)
            since = dt.datetime.now(dt.UTC)
            wall, counts = asyncio.run(burst(stack.app_port, path, harness.chat_body(), headers, args.calls))
            deadline = time.monotonic() + 30
            events, tokens = totals(stack, connector, since)
            while events < args.calls and time.monotonic() < deadline:
                time.sleep(0.2)
                events, tokens = totals(stack, connector, since)
            admitted, refused = counts.get(200, 0), counts.get(429, 0)
            limit = f"{amount} requests/min" if kind == "rpm" else f"{amount} tokens/day"
            overshoot = admitted - amount if kind == "rpm" else tokens - amount
            rows.append([limit, args.calls, admitted, refused, events, tokens, overshoot, wall])
    print(harness.machine_description())
    print_table(
        f"{args.calls} calls at once, {args.workers} workers, counters in {args.counters}",
        ["rule", "sent", "admitted", "refused (429)", "events", "tokens counted", "overshoot", "wall s"],
        rows,
    )


if __name__ == "__main__":
    main()
