"""Budgets and rate limits on the execution path: admit an execution before it is sent, settle it afterwards.

``admit`` runs before anything is sent to the provider. With no budget or rate limit of the call's space for the
space, the connector, the user or the API key it returns at once, without I/O (the rules live in memory per process,
read again when one changes). Otherwise it reserves, in one atomic step of the counter store
(usage/governance/enforcement/counters.py):

- one request against each requests-per-minute limit;
- the prompt's estimated tokens (the request's size in bytes / 4, a deliberate over-estimate for English text)
  against each tokens-per-minute limit;
- against each budget, what the execution can spend: the prompt's estimated tokens plus its completion cap (the
  caller's ``max_completion_tokens`` or ``max_tokens``, else the budget's ``completion_allowance``), in tokens or,
  for a money budget, priced at the requested model's input and output prices.

``settle`` replaces the reservations with the provider's usage once the execution has ended.

The exact rule (README, "Budgets and rate limits"): an execution is refused when a requests-per-minute counter
would pass its limit, when a budget's counter plus the execution's reservation would pass the budget, or when a
tokens-per-minute counter has already reached its limit; a refused execution adds nothing. So N requests per
minute admits at most N per calendar minute across every process and host, and what a budget's period counts ends
above its amount by at most what the admitted executions used beyond their reservations (a provider that writes
past the cap, a prompt that counts more tokens than bytes / 4, an answer longer than the allowance of a call that
set no cap), never by more.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from connectors.caching import invalidation
from connectors.caching.process_cache import ProcessCache
from usage.formatting import currency, format_cost, format_tokens
from usage.governance.enforcement.counters import Charge, ChargeTerms, counter_store
from usage.governance.enforcement.periods import minute_bounds, period_bounds
from usage.governance.models import WHOLE_SPACE, AlertKind, Budget, Period, RateLimit, Unit
from usage.observability.metrics import count_refusal

RULES_SECONDS = 300
TOPIC = "governance"
BYTES_PER_ESTIMATED_TOKEN = 4

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """Why an execution was refused, for the caller and the event log."""

    kind: str  # "budget" or "rate_limit"
    message: str
    retry_after: int  # seconds until the period or minute ends
    resets_at: dt.datetime
    alert_key: str = ""  # the alert this refusal raises, once per budget period or rate limit and hour
    alert_kind: str = ""
    space_id: str = "default"  # the refusing rule's: its alert goes to that space's channels


@dataclass
class Reservation:
    """What an admitted execution reserved, to be settled with its actual usage."""

    token_charges: list[Charge] = field(default_factory=list)  # reserved tokens, each charge its own amount
    cost_charges: list[Charge] = field(default_factory=list)  # reserved cost (nanos)
    budgets: dict[str, Budget] = field(default_factory=dict)  # counter key -> its budget (for alerts)
    estimated_tokens: int = 0  # the prompt's estimated tokens
    estimated_cost: int = 0  # the largest cost reserved against a money budget

    @property
    def empty(self) -> bool:
        return not (self.token_charges or self.cost_charges)


NOTHING_RESERVED = Reservation()


class RuleSet:
    """Every enabled budget and rate limit, by the space it belongs to and whose executions it counts there.

    A rule counts the executions made in its own space only (README "Spaces"): a preconfigured connector is in every
    space, and a rule made on it in one space neither counts nor refuses another space's calls of it. Per call,
    ``rules_for`` reads the space's rules (one dictionary read; a space without rules answers there), then one
    entry per subject, keyed by tuples: nothing is formatted on the execution path. The counters themselves are
    the rule's own (``budget_counter_key``, ``rate_limit_counter_keys``: by the rule's id), so two rules never
    share one.
    """

    def __init__(self, budgets: list[Budget], limits: list[RateLimit]):
        self.by_space: dict[str, dict[tuple, tuple[list[Budget], list[RateLimit]]]] = {}
        self.plans: dict[tuple, _Plan] = {}  # (space, connector, user, key) -> its plan for the current window
        for budget in budgets:
            self._rules_of(budget)[0].append(budget)
        for limit in limits:
            self._rules_of(limit)[1].append(limit)

    def _rules_of(self, rule: Budget | RateLimit) -> tuple[list[Budget], list[RateLimit]]:
        return self.by_space.setdefault(rule.space_id, {}).setdefault(rule.subject_key, ([], []))

    @classmethod
    def load(cls) -> RuleSet:
        budgets = list(Budget.objects.filter(enabled=True).select_related("user", "api_key"))
        limits = list(RateLimit.objects.filter(enabled=True).select_related("user", "api_key"))
        return cls(budgets, limits)

    def rules_for(self, connector_id: str, user_id: int | None, api_key_id: int | None, space_id: str = "default"):
        """The budgets and rate limits of ``space_id`` that count an execution of this connector, user and key
        made in that space."""
        subjects = self.by_space.get(space_id)
        if subjects is None:
            return [], []
        budgets: list[Budget] = []
        limits: list[RateLimit] = []
        for subject in (WHOLE_SPACE, ("connector", connector_id), ("user", user_id), ("key", api_key_id)):
            found = subjects.get(subject)
            if found:
                budgets += found[0]
                limits += found[1]
        return budgets, limits


_rules: ProcessCache[RuleSet] = ProcessCache(RuleSet.load, RULES_SECONDS)
# This process's rules, read again when older than RULES_SECONDS or when a budget or rate limit changes.
current_rules = _rules.get
forget_rules = _rules.forget


def _announce_change(sender, instance, using=None, **kwargs) -> None:
    invalidation.announce(TOPIC, using=using)


def connect_signals() -> None:
    invalidation.register(TOPIC, forget_rules, forget_rules)
    for model in (Budget, RateLimit):
        post_save.connect(_announce_change, sender=model, dispatch_uid=f"governance_saved_{model.__name__}")
        post_delete.connect(_announce_change, sender=model, dispatch_uid=f"governance_deleted_{model.__name__}")


class UncheckedAdmissions:
    """Logs calls admitted unchecked: the first of an outage with its error, then one line per LOG_EVERY_SECONDS
    with how many more there were (a line per call would be thousands a second)."""

    LOG_EVERY_SECONDS = 10.0

    def __init__(self):
        self._since_logged = 0
        self._logged_at: float | None = None

    def report(self) -> None:
        now = time.monotonic()
        if self._logged_at is None:
            logger.exception("Budgets and rate limits could not be checked; the execution is admitted unchecked")
            self._logged_at = now
        elif now - self._logged_at >= self.LOG_EVERY_SECONDS:
            logger.error("Budgets and rate limits could not be checked: %d more executions admitted unchecked in "
                         "the last %.0f s", self._since_logged + 1, now - self._logged_at, exc_info=True)
            self._since_logged, self._logged_at = 0, now
        else:
            self._since_logged += 1

    def recovered(self) -> None:
        if self._logged_at is not None:
            if self._since_logged:
                logger.error("Budgets and rate limits could not be checked: %d more executions admitted unchecked",
                             self._since_logged)
            logger.warning("Budgets and rate limits are checked again")
            self._since_logged, self._logged_at = 0, None


_unchecked = UncheckedAdmissions()


class _KeptWindows:
    """Per rule, the counter keys of the window asked for last, kept until a time outside that window is asked for:
    a call in the same day, week, month or minute as the previous one reuses them instead of converting time zones
    and formatting again. Past ``max_entries`` rules it starts afresh."""

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._kept: dict[object, tuple[dt.datetime, dt.datetime, tuple]] = {}

    def get(self, kept_as, at: dt.datetime, window_of, rule) -> tuple:
        """The keys of the window around ``at``: ``window_of(rule, at)`` gives ``(start, end, keys)``. ``kept_as``
        holds whatever of the rule the window depends on, so an edited rule gets its own entry."""
        kept = self._kept.get(kept_as)
        if kept is None or not kept[0] <= at < kept[1]:
            kept = window_of(rule, at)
            if len(self._kept) >= self.max_entries:
                self._kept.clear()
            self._kept[kept_as] = kept
        return kept[2]


_budget_windows = _KeptWindows()
_minute_windows = _KeptWindows()


def budget_counter_key(budget: Budget, at: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    """The counter key of the budget's period around ``at``, with the period's start and end."""
    return _budget_windows.get((budget.pk, budget.period, budget.time_zone), at, _budget_window, budget)


def _budget_window(budget: Budget, at: dt.datetime) -> tuple:
    start, end = period_bounds(budget.period, budget.time_zone, at)
    return start, end, (f"budget:{budget.pk}:{start.date().isoformat()}", start, end)


def rate_limit_counter_keys(limit: RateLimit, at: dt.datetime) -> tuple[str, str, dt.datetime]:
    """The requests-per-minute and tokens-per-minute counter keys of the minute around ``at``, and when it ends."""
    rpm_key, tpm_key, _, minute_end = _minute_windows.get(limit.pk, at, _minute_window, limit)
    return rpm_key, tpm_key, minute_end


def _minute_window(limit: RateLimit, at: dt.datetime) -> tuple:
    minute_start, minute_end = minute_bounds(at)
    stamp = minute_start.strftime("%Y%m%dT%H%M")
    return minute_start, minute_end, (f"rpm:{limit.pk}:{stamp}", f"tpm:{limit.pk}:{stamp}", minute_start, minute_end)


def estimate_tokens(request_bytes: int) -> int:
    return max(1, request_bytes // BYTES_PER_ESTIMATED_TOKEN)


# What each charge of a plan is, for its amount and for the message of its refusal.
_REQUESTS, _TOKENS, _TOKEN_BUDGET, _COST_BUDGET = range(4)
_MAX_PLANS = 10_000  # (space, connector, user, key) plans kept per rule set before starting again


@dataclass(frozen=True)
class _Charged:
    """One charge of a plan: what it is (``_REQUESTS`` ...), its rule, and when its window resets."""

    kind: int
    rule: Budget | RateLimit
    resets_at: dt.datetime
    window_start: dt.datetime


@dataclass(frozen=True)
class _Plan:
    """Everything admitting an execution of one space, connector, user and key needs but the execution's amounts,
    for the windows around one time (``start <= at < end``: the current minute of its rate limits and period of
    its budgets): its charges, their counters' terms in the counter store's form, and its budgets by counter key.
    Made on the first call of a window and kept in the rule set, so that a call neither looks its rules up,
    formats its keys nor frames the counter store's command again (the rule set is replaced when a rule
    changes)."""

    start: dt.datetime
    end: dt.datetime
    store: object
    charged: tuple[_Charged, ...]
    terms: list[ChargeTerms]
    prepared: object
    budgets: dict[str, Budget]


def _plan_for(rules: RuleSet, subject: tuple, at: dt.datetime, store) -> _Plan | None:
    """The kept plan of ``subject`` for ``at``, or a new one; None when no rule counts the subject's executions."""
    plan = rules.plans.get(subject)
    if plan is not None and plan.start <= at < plan.end and plan.store is store:
        return plan
    space_id, connector_id, user_id, api_key_id = subject
    budgets, limits = rules.rules_for(connector_id, user_id, api_key_id, space_id)
    if not budgets and not limits:
        return None
    charged: list[_Charged] = []
    terms: list[ChargeTerms] = []
    start, end = dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC)
    for limit in limits:
        rpm_key, tpm_key, minute_start, minute_end = _minute_windows.get(limit.pk, at, _minute_window, limit)
        start, end = max(start, minute_start), min(end, minute_end)
        if limit.requests_per_minute is not None:
            charged.append(_Charged(_REQUESTS, limit, minute_end, minute_start))
            terms.append(ChargeTerms(rpm_key, limit.requests_per_minute, minute_end, True))
        if limit.tokens_per_minute is not None:
            charged.append(_Charged(_TOKENS, limit, minute_end, minute_start))
            terms.append(ChargeTerms(tpm_key, limit.tokens_per_minute, minute_end, False))
    budget_keys: dict[str, Budget] = {}
    for budget in budgets:
        key, period_start, period_end = budget_counter_key(budget, at)
        start, end = max(start, period_start), min(end, period_end)
        charged.append(_Charged(_TOKEN_BUDGET if budget.unit == Unit.TOKENS else _COST_BUDGET, budget, period_end,
                                period_start))
        # The reservation must fit in what is left. A budget without a hard limit counts but never refuses.
        terms.append(ChargeTerms(key, budget.limit_units if budget.hard_limit else 2**62,
                                 period_end + dt.timedelta(days=1), True))
        budget_keys[key] = budget
    plan = _Plan(start, end, store, tuple(charged), terms, store.prepare(terms), budget_keys)
    if len(rules.plans) >= _MAX_PLANS:
        rules.plans.clear()
    rules.plans[subject] = plan
    return plan


async def admit(connector_id: str, user_id: int | None, api_key_id: int | None, *, request_bytes: int,
                space_id: str = "default", completion_cap: int | None = None, estimate_cost=None,
                at: dt.datetime | None = None) -> Reservation | Refusal:
    """Reserve this execution against every budget and rate limit that counts it, or say why it is refused.

    ``completion_cap``: the most completion tokens the caller allows (None: it set none, and each budget reserves
    its own ``completion_allowance``). ``await estimate_cost(prompt_tokens, completion_tokens)`` gives the cost in
    nanos of that many tokens of the requested model (None: no price applies; then a money budget reserves one
    nano, so that it still refuses once it is used up, and counts the actual cost when it is settled).
    """
    rules = await _rules.aget()
    if space_id not in rules.by_space:  # no rule in the space: nothing to look at
        return NOTHING_RESERVED
    at = at or timezone.now()
    store = counter_store()
    plan = _plan_for(rules, (space_id, connector_id, user_id, api_key_id), at, store)
    if plan is None:
        return NOTHING_RESERVED
    estimated_tokens = estimate_tokens(request_bytes)
    reservation = Reservation(budgets=plan.budgets, estimated_tokens=estimated_tokens)
    amounts: list[int] = []
    for charged, terms in zip(plan.charged, plan.terms, strict=True):
        kind = charged.kind
        if kind == _REQUESTS:
            amounts.append(1)
            continue
        if kind == _TOKENS:
            amount = estimated_tokens
        else:
            completion = completion_cap if completion_cap is not None else charged.rule.completion_allowance
            if kind == _TOKEN_BUDGET:
                amount = estimated_tokens + completion
            else:
                cost = await estimate_cost(estimated_tokens, completion) if estimate_cost is not None else None
                amount = max(1, cost or 0)
                reservation.estimated_cost = max(reservation.estimated_cost, amount)
        amounts.append(amount)
        charge = Charge(terms.key, amount, terms.limit, terms.expires_at, terms.must_fit)
        (reservation.cost_charges if kind == _COST_BUDGET else reservation.token_charges).append(charge)
    try:
        refused = await store.reserve_prepared(plan.prepared, amounts)
    except Exception:
        # The counters cannot be reached (Redis or the database is away): admit, so that an outage of the counter
        # store never stops every call, and say so loudly (README, "Budgets and rate limits").
        _unchecked.report()
        return NOTHING_RESERVED
    _unchecked.recovered()
    if refused is not None:
        index, value = refused
        refusal = _refusal(plan.charged[index], plan.terms[index].key, amounts[index], completion_cap is None,
                           at=at, value=value)
        count_refusal(connector_id, space_id, refusal.kind)  # connectors_refusals_total (README, Prometheus)
        return refusal
    in_flight.hold(reservation)
    return reservation


class InFlight:
    """What this process's running executions have reserved against each budget and not yet settled.

    A budget's counter holds the estimates of the executions still running beside what the finished ones used.
    Its alerts are about use, not estimates: a call whose estimate (its completion allowance at the model's
    price) would pass the budget must not have another call's settlement announce the budget "used up". The
    alerts therefore leave out the estimates this process still holds (``alert_on_thresholds``); those of other
    processes' running calls are not known here (README, "Budgets and rate limits")."""

    def __init__(self):
        self._held: dict[str, int] = {}

    def hold(self, reservation: Reservation) -> None:
        for charge in reservation.token_charges + reservation.cost_charges:
            if charge.key in reservation.budgets:
                self._held[charge.key] = self._held.get(charge.key, 0) + charge.amount

    def release(self, reservation: Reservation) -> None:
        """The reservation is settled (or its settlement failed, and the estimate stands in the counter for good)."""
        for charge in reservation.token_charges + reservation.cost_charges:
            held = self._held.get(charge.key)
            if held is not None:
                held -= charge.amount
                if held > 0:
                    self._held[charge.key] = held
                else:
                    del self._held[charge.key]

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


in_flight = InFlight()


def _refusal(charged: _Charged, counter_key: str, reserved: int, by_allowance: bool, *, at: dt.datetime,
             value: int) -> Refusal:
    """The refusal by ``charged`` (a charge of ``reserved``, the completion part by the budget's allowance when
    ``by_allowance``), whose counter held ``value``: its message, retry delay and alert."""
    resets_at = charged.resets_at
    retry_after = max(1, int((resets_at - at).total_seconds() + 0.999))
    if charged.kind in (_TOKEN_BUDGET, _COST_BUDGET):
        budget = charged.rule
        period = Period(budget.period).label.lower()
        amount = f"{budget.amount.normalize():f} {_unit_name(budget)}"
        if value >= budget.limit_units:
            message = f'Budget "{budget.name}" ({budget.subject}) is used up for this {period}: {amount}. '
        else:
            cap = (f"its prompt and the budget's completion allowance of {budget.completion_allowance:,} tokens, "
                   f"as it sets no max_tokens" if by_allowance else "its prompt and its max_tokens")
            message = (f'Budget "{budget.name}" ({budget.subject}) has {_quantity(budget, budget.limit_units - value)}'
                       f" left of {amount} for this {period}; this call reserves {_quantity(budget, reserved)} "
                       f"({cap}). Ask for fewer completion tokens, or wait. ")
        message += f"It resets at {resets_at.isoformat()}."
        return Refusal("budget", message, retry_after, resets_at, f"{counter_key}:reached", AlertKind.BUDGET_REACHED,
                       budget.space_id)
    limit, minute_start = charged.rule, charged.window_start
    per_minute = limit.requests_per_minute if charged.kind == _REQUESTS else limit.tokens_per_minute
    what = "requests" if charged.kind == _REQUESTS else "tokens"
    message = f"Rate limit reached: {per_minute} {what} per minute for {limit.subject}."
    return Refusal("rate_limit", message, retry_after, resets_at, f"ratelimit:{limit.pk}:{minute_start:%Y%m%dT%H}",
                   AlertKind.RATE_LIMITED, limit.space_id)


def _unit_name(budget: Budget) -> str:
    return "tokens" if budget.unit == Unit.TOKENS else currency()


async def settle(reservation: Reservation, *, total_tokens: int, cost: int | None) -> dict[str, int]:
    """Replace the reservation's estimates with what the execution used; returns the budget counters' new values
    (for threshold alerts). Never raises: a failed settlement is logged and the estimate stands. (Under a server,
    executions are settled in batches instead: usage/governance/enforcement/settlement.py.)"""
    if reservation.empty:
        return {}
    try:
        values = await settle_amounts(reservation_amounts(reservation, total_tokens=total_tokens, cost=cost))
    finally:
        in_flight.release(reservation)
    return {key: value for key, value in values.items() if key in reservation.budgets}


def reservation_amounts(reservation: Reservation, *, total_tokens: int,
                        cost: int | None) -> list[tuple[str, int, dt.datetime]]:
    """What settling ``reservation`` adds to each counter: the actual usage minus the estimate reserved."""
    amounts = [(c.key, total_tokens - c.amount, c.expires_at) for c in reservation.token_charges]
    amounts += [(c.key, (cost or 0) - c.amount, c.expires_at) for c in reservation.cost_charges]
    return amounts


async def settle_amounts(amounts: list[tuple[str, int, dt.datetime]]) -> dict[str, int]:
    """Add ``amounts`` to their counters in one step; the counters' new values, or {} (logged) when the store
    cannot be reached: the estimates stand."""
    if not amounts:
        return {}
    try:
        # In key order, so that two processes settling the same counters lock them in the same order.
        return await counter_store().add(sorted(amounts, key=lambda amount: amount[0]))
    except Exception:
        logger.exception("Could not settle budget and rate-limit counters; the reservation stands")
        return {}


def alert_refusal(refusal: Refusal, *, connector_id: str) -> None:
    """Queue the alert of a refused call (once per process and key: every later refusal would say the same)."""
    from usage.governance import alerts

    alerts.raise_once(refusal.alert_key, refusal.alert_kind, refusal.message, connector_id=connector_id,
                      space_id=refusal.space_id)


def alert_on_thresholds(reservation: Reservation, used: dict[str, int], *, connector_id: str) -> None:
    """Raise each budget's threshold alert (and its "used up" alert) once per period, from the counters' values
    after settlement, less the estimates of this process's executions still running (``InFlight``). Queued for
    the sender thread: the caller never waits for it."""
    from usage.governance import alerts

    for key, counted in used.items():
        value = counted - in_flight.held(key)
        budget = reservation.budgets[key]
        limit = budget.limit_units
        if limit <= 0:
            continue
        percent = 100 * value / limit
        if value < limit and percent < budget.soft_threshold_percent:
            continue  # most settlements: nothing to say, and nothing formatted
        amount = f"{budget.amount.normalize():f} {_unit_name(budget)}"
        if value >= limit:
            alerts.raise_once(f"{key}:reached", AlertKind.BUDGET_REACHED,
                              f'Budget "{budget.name}" ({budget.subject}) is used up: {_format_used(budget, value)} '
                              f"of {amount}.", connector_id=connector_id, space_id=budget.space_id)
        elif percent >= budget.soft_threshold_percent:
            alerts.raise_once(f"{key}:threshold", AlertKind.BUDGET_THRESHOLD,
                              f'Budget "{budget.name}" ({budget.subject}) reached {int(percent)}% '
                              f"({_format_used(budget, value)} of {amount}; threshold "
                              f"{budget.soft_threshold_percent}%).", connector_id=connector_id,
                              space_id=budget.space_id)


def _quantity(budget: Budget, units: int) -> str:
    """An amount in a budget's counter units for a refusal, exact: ``1,204 tokens`` or ``0.012345678 USD``."""
    return format_tokens(units) if budget.unit == Unit.TOKENS else format_cost(units, places=9)


def _format_used(budget: Budget, value: int) -> str:
    return format_tokens(value) if budget.unit == Unit.TOKENS else format_cost(value)


async def warm_up() -> None:
    """At a server process's start: read the rules and the price table, and load the counter script into Redis,
    so that the first burst of calls does not wait for all three at once. Never raises: what fails here is read
    again on first use, as without it."""
    from usage.governance.enforcement.counters import RedisStore
    from usage.governance.pricing import prices as pricing

    try:
        await _rules.aget()
        await pricing.acurrent_table()
        store = counter_store()
        if isinstance(store, RedisStore):
            await store.reserve([])  # EVALSHA of the admission script with no counter: loads it, changes nothing
    except Exception:
        logger.warning("Budgets and rate limits: warming up failed; the first calls will read what is missing",
                       exc_info=True)
