"""What each budget and rate limit has used in its current period, for the pages (never the execution path).

Read from the same counters admission reserves against (usage/governance/enforcement/counters.py), by the same keys
(``admission.budget_counter_key`` and ``admission.rate_limit_counter_keys``), so a page shows exactly what the
next execution will be admitted against: estimates of executions still running included.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.db.models import Q, Sum
from django.utils import timezone

from connectors.access.policy import may
from usage import space_scope
from usage.formatting import format_cost, format_tokens
from usage.governance.enforcement.admission import budget_counter_key, rate_limit_counter_keys
from usage.governance.enforcement.counters import counter_store
from usage.governance.models import Budget, RateLimit, Scope, Unit
from usage.governance.permissions import VIEW_BUDGET, VIEW_RATE_LIMIT
from usage.models import ExecutionEvent, UsageHourlyTotal
from usage.ranges import ceil_hour, floor_hour


def _quantity(value: int, unit: str) -> str:
    return format_cost(value) if unit == Unit.COST else format_tokens(value)


@dataclass
class BudgetStatus:
    budget: Budget
    used: int  # counter units: tokens, or nanos of USAGE_CURRENCY
    period_start: dt.datetime
    resets_at: dt.datetime

    @property
    def limit(self) -> int:
        return self.budget.limit_units

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def percent_used(self) -> float | None:
        return 100 * self.used / self.limit if self.limit else None

    @property
    def used_text(self) -> str:
        return _quantity(self.used, self.budget.unit)

    @property
    def left_text(self) -> str:
        return _quantity(self.left, self.budget.unit)

    @property
    def amount_text(self) -> str:
        return _quantity(self.limit, self.budget.unit)

    @property
    def allowance_text(self) -> str:
        """What a call that sets no completion cap reserves for its answer (usage/governance/enforcement/admission.py)."""
        return _quantity(self.budget.completion_allowance, Unit.TOKENS)

    @property
    def state(self) -> str:
        """``exhausted`` (a hard limit refuses now), ``over`` (a soft-only budget passed), ``warning`` (past the
        soft threshold) or ``ok``."""
        if self.limit and self.used >= self.limit:
            return "exhausted" if self.budget.hard_limit else "over"
        percent = self.percent_used
        if percent is not None and percent >= self.budget.soft_threshold_percent:
            return "warning"
        return "ok"


@dataclass
class RateLimitStatus:
    limit: RateLimit
    requests: int
    tokens: int
    resets_at: dt.datetime

    @property
    def requests_left(self) -> int | None:
        rpm = self.limit.requests_per_minute
        return None if rpm is None else max(0, rpm - self.requests)

    @property
    def tokens_left(self) -> int | None:
        tpm = self.limit.tokens_per_minute
        return None if tpm is None else max(0, tpm - self.tokens)


def budget_statuses(budgets, at: dt.datetime | None = None) -> list[BudgetStatus]:
    """Each budget with its current period's consumption, read in one round trip to the counter store."""
    at = at or timezone.now()
    keyed = [(budget, *budget_counter_key(budget, at)) for budget in budgets]
    values = counter_store().values_now([key for _, key, _, _ in keyed]) if keyed else {}
    return [BudgetStatus(budget, values.get(key, 0), start, end) for budget, key, start, end in keyed]


def recorded_in_period(budget: Budget, start: dt.datetime, end: dt.datetime) -> int:
    """What ``budget``'s space recorded for the budget's scope between ``start`` and ``end``, in counter units: the
    executions admission counts against it (made in its space only, README "Spaces").

    A space or connector budget reads the hourly totals (UsageHourlyTotal, by connector, space and hour) for the
    whole UTC hours and the events only for the part-hours at the two ends, so that catching up a month's budget of
    a busy space reads at most two hours of events, not the month's. The totals are written in the events' own
    statement (usage/models/events.py), so the two agree. A user's or an API key's budget sums its events: the
    hourly totals do not know them, and the indexes event_user_time and event_api_key_time read only theirs.
    """
    field = "total_tokens" if budget.unit == Unit.TOKENS else "cost_nanos"
    events = ExecutionEvent.objects.filter(space_id=budget.space_id)
    if budget.scope in (Scope.USER, Scope.API_KEY):
        events = (events.filter(user_id=budget.user_id) if budget.scope == Scope.USER
                  else events.filter(api_key_id=budget.api_key_id))
        return _sum(events.filter(timestamp__gte=start, timestamp__lt=end), field)
    hours = UsageHourlyTotal.objects.filter(space_id=budget.space_id)
    if budget.scope == Scope.CONNECTOR:
        events, hours = events.filter(connector_id=budget.connector_id), hours.filter(connector_id=budget.connector_id)
    first_hour, last_hour = ceil_hour(start), floor_hour(end)
    if first_hour >= last_hour:
        return _sum(events.filter(timestamp__gte=start, timestamp__lt=end), field)
    part_hours = (Q(timestamp__gte=start, timestamp__lt=first_hour) | Q(timestamp__gte=last_hour, timestamp__lt=end))
    return (_sum(hours.filter(bucket__gte=first_hour, bucket__lt=last_hour), field)
            + _sum(events.filter(part_hours), field))


def _sum(rows, field: str) -> int:
    return int(rows.order_by().aggregate(total=Sum(field))["total"] or 0)


def catch_up_with_the_period(budget: Budget, at: dt.datetime | None = None) -> int:
    """Bring the counter of ``budget``'s current period up to what the event log recorded in it so far.

    Counters count from the moment a budget exists; a budget created (or moved to another scope, period or unit)
    halfway through a period would otherwise show, and admit against, nothing used while the period's calls are in
    the log. Only the missing part is added, so a counter already ahead (calls still running) is left as it is.
    Returns the counter's value.
    """
    at = at or timezone.now()
    key, start, end = budget_counter_key(budget, at)
    store = counter_store()
    current = store.values_now([key]).get(key, 0)
    missing = recorded_in_period(budget, start, at) - current
    if missing <= 0:
        return current
    return async_to_sync(store.add)([(key, missing, end)])[key]


def rate_limit_statuses(limits, at: dt.datetime | None = None) -> list[RateLimitStatus]:
    """Each rate limit with the current minute's requests and tokens."""
    at = at or timezone.now()
    keyed = [(limit, *rate_limit_counter_keys(limit, at)) for limit in limits]
    keys = [key for _, rpm, tpm, _ in keyed for key in (rpm, tpm)]
    values = counter_store().values_now(keys) if keys else {}
    return [RateLimitStatus(limit, values.get(rpm, 0), values.get(tpm, 0), end) for limit, rpm, tpm, end in keyed]


def _rules(model, **scope):
    """The rules of the current space (README "Spaces")."""
    return (model.objects.filter(space_id=space_scope.space_id(), **scope)
            .select_related("user", "api_key", "api_key__user"))


def connector_rules(connector_id: str) -> tuple[list[BudgetStatus], list[RateLimitStatus]]:
    """The budgets and rate limits of one connector (its connector scope), with their consumption."""
    return (budget_statuses(_rules(Budget, scope="connector", connector_id=connector_id)),
            rate_limit_statuses(_rules(RateLimit, scope="connector", connector_id=connector_id)))


def user_rules(user) -> tuple[list[BudgetStatus], list[RateLimitStatus]]:
    """The budgets and rate limits that count this user's executions: their own, and their API keys'."""
    mine = Q(scope="user", user=user) | Q(scope="api_key", api_key__user=user)
    return budget_statuses(_rules(Budget).filter(mine)), rate_limit_statuses(_rules(RateLimit).filter(mine))


def all_rules() -> tuple[list[BudgetStatus], list[RateLimitStatus]]:
    return (budget_statuses(_rules(Budget).order_by("scope", "name")),
            rate_limit_statuses(_rules(RateLimit).order_by("scope", "connector_id", "pk")))


def connector_governance(user, connector_id: str) -> dict | None:
    """The connector page's governance panel (governance/_connector_panel.html): the connector's budgets and rate
    limits with their consumption, and links for who may change them; None for a user who may see neither."""
    sees_budgets, sees_limits = may(user, VIEW_BUDGET), may(user, VIEW_RATE_LIMIT)
    if not (sees_budgets or sees_limits):
        return None
    budgets, limits = connector_rules(connector_id)
    return {"connector_id": connector_id, "budgets": budgets if sees_budgets else [],
            "limits": limits if sees_limits else [], "sees_budgets": sees_budgets, "sees_limits": sees_limits}
