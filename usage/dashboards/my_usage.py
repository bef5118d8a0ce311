""""My usage" (/usage/me/): one user's calls, tokens and cost across connectors and per API key, for a range.

Read from the raw events through the (user, timestamp) index (migration usage/0005), grouped by connector and API
key in the database: the rollups keep a user's name as it was at the time, not the user, and no API key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Max

from connectors.lookup import find
from connectors.models import ApiKey
from usage import space_scope
from usage.dashboards.queries import UsageSums, event_sum_expressions
from usage.ranges import UsageRange


@dataclass
class MyUsageRow:
    key: str  # a connector id, or an API key id ("" for calls without a key)
    label: str
    sums: UsageSums = field(default_factory=UsageSums)


@dataclass
class MyUsage:
    totals: UsageSums
    by_connector: list[MyUsageRow]
    by_api_key: list[MyUsageRow]


def my_usage(user, usage_range: UsageRange) -> MyUsage:
    rows = (
        space_scope.events().filter(user=user, timestamp__gte=usage_range.start, timestamp__lt=usage_range.end)
        .order_by()
        .values("connector_id", "api_key_id")
        .annotate(connector_name=Max("connector_name"), **event_sum_expressions())
    )
    keys = {key.pk: key for key in ApiKey.objects.filter(user=user)}
    totals = UsageSums()
    by_connector: dict[str, MyUsageRow] = {}
    by_key: dict[str, MyUsageRow] = {}
    for row in rows:
        totals.add_row(row)
        connector_id = row["connector_id"]
        if connector_id not in by_connector:
            live = find(connector_id)
            by_connector[connector_id] = MyUsageRow(connector_id, live.name if live else row["connector_name"])
        by_connector[connector_id].sums.add_row(row)
        key_id = row["api_key_id"]
        if key_id is None:
            label = "Without an API key (browser or password)"
        else:
            label = str(keys[key_id]) if key_id in keys else f"API key #{key_id}"
        by_key.setdefault(str(key_id or ""), MyUsageRow(str(key_id or ""), label)).sums.add_row(row)

    def ordered(items: dict[str, MyUsageRow]) -> list[MyUsageRow]:
        return sorted(items.values(), key=lambda r: (-r.sums.cost_nanos, -r.sums.total_tokens, r.label))

    return MyUsage(totals, ordered(by_connector), ordered(by_key))
