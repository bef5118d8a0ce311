"""Per-connector figures for the connector list: the last 24 hours from the rollups, and the last execution.

Both are one query for every connector of the list together, never one per row, and both are of the current space
(a preconfigured connector, in every space, shows each space its own calls: README "Spaces").
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from usage import space_scope
from usage.models import ExecutionEvent, Outcome, UsageHourlyTotal
from usage.ranges import floor_hour


@dataclass
class RecentUsage:
    requests: int = 0
    failures: int = 0
    total_tokens: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None


def usage_last_24_hours(now: datetime | None = None) -> dict[str, RecentUsage]:
    """Requests, failures and tokens per connector over the last 24 whole hours plus the current one.

    UsageHourlyTotal holds two rows per connector, space and hour, so this reads at most 50 rows per connector.
    """
    start = floor_hour(now or timezone.now()) - timedelta(hours=24)
    rows = (
        UsageHourlyTotal.objects.filter(space_id=space_scope.space_id(), bucket__gte=start)
        .order_by()
        .values("connector_id")
        .annotate(
            sum_requests=Sum("requests"),
            sum_failures=Sum("requests", filter=Q(outcome=Outcome.FAILURE)),
            sum_total_tokens=Sum("total_tokens"),
        )
    )
    return {
        row["connector_id"]: RecentUsage(
            row["sum_requests"] or 0, row["sum_failures"] or 0, row["sum_total_tokens"] or 0
        )
        for row in rows
    }


@dataclass
class LastExecution:
    timestamp: datetime
    outcome: str


def last_executions(connector_ids: list[str]) -> dict[str, LastExecution]:
    """The newest event of each connector in the current space, in one statement.

    One scalar subquery per connector picks the id of its newest event, each served by the index
    event_connector_time_id (an index scan backward, LIMIT 1; the space a filter on it, which a stored connector's
    events all meet); the outer query reads those rows by primary key. A GROUP BY or DISTINCT ON would read every
    event of every connector instead.
    """
    if not connector_ids:
        return {}
    table = ExecutionEvent._meta.db_table
    newest = (f'SELECT (SELECT e.id FROM "{table}" e WHERE e.connector_id = %s AND e.space_id = %s '
              f'ORDER BY e.timestamp DESC, e.id DESC LIMIT 1)')
    space_id = space_scope.space_id()
    ids = RawSQL(" UNION ALL ".join([newest] * len(connector_ids)),
                 [param for connector_id in connector_ids for param in (connector_id, space_id)])
    rows = ExecutionEvent.objects.filter(pk__in=ids).values_list("connector_id", "timestamp", "outcome")
    return {connector_id: LastExecution(moment, outcome) for connector_id, moment, outcome in rows}
