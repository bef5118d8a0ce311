"""How far a hard token budget can be overshot: 200 calls at once, through 4 workers, against an upstream that
reports 200,000 tokens per call (``usage-200000-500`` of bench/upstream.py, whatever the call's max_tokens, after
500 ms).

The rule (usage/governance/enforcement/admission.py, README "Guarantees"): a call reserves its prompt's estimate (request
bytes / 4) plus its completion cap (``max_tokens``, or the budget's completion allowance when it sets none), and is
refused when that does not fit in what is left. What a period counts ends above the budget by at most what the
admitted calls used beyond their reservations: admitted x (200,000 - reservation) here, since this upstream writes
past any cap. Three cases, each a fresh budget counted in Redis:

- ``no cap, 1,000``: the case of the report (a budget of 1,000 tokens, calls without max_tokens): the allowance
  (4,096 by default) does not fit, nothing is sent;
- ``max_tokens 200,000``: calls that declare what they may spend (the provider keeps to it: 200,000 in all is
  less than the prompt plus 200,000): the budget is never passed;
- ``no cap, allowance``: calls without a cap against a budget that fits a few allowances: the provider writes
  past the allowance, and the overshoot is that excess, bounded by how many reservations fit in the budget.

Reports, per case: calls admitted and refused, tokens spent (the events' usage) against the budget, the overshoot
and the rule's bound. Example: ``python -m bench.budget_overshoot`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import time

from bench import harness
from bench.governance import burst, totals
from bench.loadgen import install_uvloop, print_table

# An answer after 500 ms, as a model writing takes time: every call of a burst is in flight at once, so none is
# settled before the others are admitted (the worst case for the rule).
SCENARIO = "usage-200000-500"
REPORTED_TOKENS = 200_000

RULES_SCRIPT = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")
django.setup()
from decimal import Decimal
from usage.governance.models import Budget, Period, RateLimit, Scope, Unit
connector, amount, allowance = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
Budget.objects.all().delete(); RateLimit.objects.all().delete()
budget = Budget(name="Bench tokens", scope=Scope.CONNECTOR, connector_id=connector, period=Period.DAY,
                time_zone="UTC", unit=Unit.TOKENS, amount=Decimal(amount))
if hasattr(budget, "completion_allowance"):  # so that the same script measures the rule before the allowance
    budget.completion_allowance = allowance
budget.save()
"""

DEFAULT_ALLOWANCE = 4096
# (case, budget in tokens, the calls' max_tokens or None, the budget's completion allowance)
CASES = [
    ("no cap, 1,000", 1_000, None, DEFAULT_ALLOWANCE),
    ("max_tokens 200,000", 1_000_000, 200_000, DEFAULT_ALLOWANCE),
    ("no cap, allowance", 100_000, None, DEFAULT_ALLOWANCE),
]


def reservation(payload: dict, cap: int | None, allowance: int) -> int:
    """What one call reserves: the body the app sends (the caller's, with ``stream`` set) in bytes / 4, plus the
    cap or the allowance."""
    sent = json.dumps({**payload, "stream": False}, separators=(",", ":"), ensure_ascii=False).encode()
    return len(sent) // 4 + (cap if cap is not None else allowance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    install_uvloop()
    rows = []
    # governed="redis": the counters in Redis (database 13, emptied first); the seeded rules are replaced below.
    with harness.stack([SCENARIO], workers=args.workers, governed="redis") as stack:
        connector = stack.connector(SCENARIO)
        path = f"/api/openai/{connector}/v1/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.seed['api_key']}"}
        env = harness.app_environment(stack.database_url, {"REDIS_URL": ""})
        for case, amount, cap, allowance in CASES:
            subprocess.run([harness.PYTHON, "-c", RULES_SCRIPT, connector, str(amount), str(allowance)],
                           cwd=harness.ROOT, env=env, check=True)
            time.sleep(1.0)  # the workers drop their cached rules on the change notice (LISTEN/NOTIFY)
            payload = json.loads(harness.chat_body())
            if cap is not None:
                payload["max_tokens"] = cap
            since = dt.datetime.now(dt.UTC)
            wall, counts = asyncio.run(burst(stack.app_port, path, json.dumps(payload).encode(), headers, args.calls))
            deadline = time.monotonic() + 30
            events, spent = totals(stack, connector, since)
            while events < args.calls and time.monotonic() < deadline:
                time.sleep(0.2)  # the workers commit in their own processes: there is nothing to await here
                events, spent = totals(stack, connector, since)
            admitted, refused = counts.get(200, 0), counts.get(429, 0)
            reserved = reservation(payload, cap, allowance)
            overshoot = max(0, spent - amount)
            bound = admitted * max(0, REPORTED_TOKENS - reserved)
            rows.append([case, f"{amount:,}", f"{reserved:,}", args.calls, admitted, refused, events, f"{spent:,}",
                         f"{overshoot:,}", f"{bound:,}", "yes" if overshoot <= bound else "NO", wall])
    print(harness.machine_description())
    print_table(
        f"{args.calls} calls at once, {args.workers} workers, counters in Redis, upstream reporting "
        f"{REPORTED_TOKENS:,} tokens per call",
        ["case", "budget", "reserved per call", "sent", "admitted", "refused (429)", "events", "tokens spent",
         "overshoot", "bound: admitted x (200,000 - reserved)", "within bound", "wall s"],
        rows,
    )


if __name__ == "__main__":
    main()
