"""What an execution cost: which price applies to it, and its tokens at that price in exact integer nano-units.

Costs are integers in billionths of ``USAGE_CURRENCY`` (nanos, usage/formatting.py).

Which price applies (README, "Prices and cost"):
1. The model priced is, in this order, the first that has a price: the model the connector's deployment map names
   for the requested model (Azure: a deployment is not a model), the model the provider reported, the model asked for.
2. A negotiated price of the connector beats a list price; among matching patterns an exact name beats a pattern,
   and a longer pattern beats a shorter one (``gpt-4o-mini-*`` over ``gpt-4o-*``).
3. The version is the newest one whose ``valid_from`` is on or before the event's day (UTC); an event older than
   every version of its price takes the oldest, since the table knows nothing earlier.
4. The connector's discount is taken off list prices, never off its negotiated ones.

The table lives in memory per process (a few hundred rows) and is read again when a price or a connector's pricing
changes (cross-process through connectors.caching.invalidation) or after PRICE_CACHE_SECONDS.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fnmatch import fnmatchcase

from django.db.models.signals import post_delete, post_save

from connectors.caching import invalidation
from connectors.caching.bounded_answers import BoundedAnswers
from connectors.caching.process_cache import ProcessCache
from usage.formatting import NANOS_PER_UNIT

# A price is per million tokens; a token's cost in nanos is price * 10**9 / 10**6.
_NANOS_PER_TOKEN_AT_UNIT_PRICE = Decimal(NANOS_PER_UNIT) / Decimal(10**6)
TABLE_SECONDS = 300
TOPIC = "prices"


@dataclass(frozen=True)
class PriceVersion:
    pattern: str
    valid_from: dt.date
    input: Decimal
    cached_input: Decimal | None
    output: Decimal
    reasoning: Decimal | None
    negotiated: bool
    price_id: int | None = None


@dataclass(frozen=True)
class TokenCounts:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0


def cost_in_nanos(tokens: TokenCounts, price: PriceVersion, discount_percent: Decimal = Decimal(0)) -> int:
    """The cost of these tokens at this price. Cached tokens are part of the prompt tokens and reasoning tokens part
    of the completion tokens (as the provider reports them); each part is charged at its own price."""
    cached = min(max(tokens.cached, 0), max(tokens.prompt, 0))
    reasoning = min(max(tokens.reasoning, 0), max(tokens.completion, 0))
    uncached_input = max(tokens.prompt, 0) - cached
    cached_price = price.input if price.cached_input is None else price.cached_input
    if price.reasoning is None:
        plain_output, reasoning_cost = max(tokens.completion, 0), Decimal(0)
    else:
        plain_output, reasoning_cost = max(tokens.completion, 0) - reasoning, reasoning * price.reasoning
    total = uncached_input * price.input + cached * cached_price + plain_output * price.output + reasoning_cost
    nanos = total * _NANOS_PER_TOKEN_AT_UNIT_PRICE
    if discount_percent and not price.negotiated:
        nanos = nanos * (Decimal(100) - discount_percent) / Decimal(100)
    return int(nanos.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass
class _Patterns:
    """Price versions by pattern, for one scope (the list prices, or one connector's negotiated prices)."""

    exact: dict[str, list[PriceVersion]] = field(default_factory=dict)
    wildcard: list[tuple[str, list[PriceVersion]]] = field(default_factory=list)

    def add(self, version: PriceVersion) -> None:
        if "*" in version.pattern or "?" in version.pattern:
            for pattern, versions in self.wildcard:
                if pattern == version.pattern:
                    versions.append(version)
                    return
            self.wildcard.append((version.pattern, [version]))
        else:
            self.exact.setdefault(version.pattern, []).append(version)

    def finish(self) -> None:
        for versions in self.exact.values():
            versions.sort(key=lambda v: v.valid_from, reverse=True)
        for _, versions in self.wildcard:
            versions.sort(key=lambda v: v.valid_from, reverse=True)
        # Most specific first: the longest pattern once its wildcards are removed.
        self.wildcard.sort(key=lambda item: len(item[0].replace("*", "").replace("?", "")), reverse=True)

    def versions_for(self, model: str) -> list[PriceVersion] | None:
        versions = self.exact.get(model)
        if versions is not None:
            return versions
        for pattern, versions in self.wildcard:
            if fnmatchcase(model, pattern):
                return versions
        return None


@dataclass(frozen=True)
class ConnectorTerms:
    discount_percent: Decimal = Decimal(0)
    deployment_models: dict = field(default_factory=dict)


_NO_TERMS = ConnectorTerms()
_MAX_KEPT_ANSWERS = 10_000  # distinct (connector, models, day) questions kept per table before starting again


class PriceTable:
    """Every price and connector pricing, read once; answers "which price applies" without a query."""

    def __init__(self, prices, terms: dict[str, ConnectorTerms]):
        self.list_prices = _Patterns()
        self.negotiated: dict[str, _Patterns] = {}
        for version, connector_id in prices:
            (self.negotiated.setdefault(connector_id, _Patterns()) if connector_id else self.list_prices).add(version)
        self.list_prices.finish()
        for patterns in self.negotiated.values():
            patterns.finish()
        self.terms = terms
        self._found = BoundedAnswers(_MAX_KEPT_ANSWERS)  # (connector, models, day) -> PriceVersion | None

    @classmethod
    def load(cls) -> PriceTable:
        from usage.governance.models import ConnectorPricing, Price

        prices = [
            (
                PriceVersion(
                    pattern=row.model_pattern,
                    valid_from=row.valid_from,
                    input=row.input_per_million,
                    cached_input=row.cached_input_per_million,
                    output=row.output_per_million,
                    reasoning=row.reasoning_per_million,
                    negotiated=bool(row.connector_id),
                    price_id=row.pk,
                ),
                row.connector_id,
            )
            for row in Price.objects.all()
        ]
        terms = {
            row.connector_id: ConnectorTerms(row.discount_percent, dict(row.deployment_models or {}))
            for row in ConnectorPricing.objects.all()
        }
        return cls(prices, terms)

    def terms_of(self, connector_id: str) -> ConnectorTerms:
        return self.terms.get(connector_id) or _NO_TERMS

    def price_for(self, connector_id: str, models: tuple[str, ...], day: dt.date) -> PriceVersion | None:
        """The price of the first of ``models`` that has one, as of ``day``; None when none has a price. Kept per
        connector, models and day for the table's life (the table never changes; a changed price loads a new one):
        every execution of a connector asks the same question twice, for its estimate and its cost."""
        return self._found.get((connector_id, models, day), self._find_price, connector_id, models, day)

    def _find_price(self, connector_id: str, models: tuple[str, ...], day: dt.date) -> PriceVersion | None:
        terms = self.terms_of(connector_id)
        candidates = [terms.deployment_models[m] for m in models if m and m in terms.deployment_models]
        candidates += [m for m in models if m]
        negotiated = self.negotiated.get(connector_id)
        for model in candidates:
            versions = (negotiated.versions_for(model) if negotiated else None) or self.list_prices.versions_for(model)
            if versions:
                for version in versions:
                    if version.valid_from <= day:
                        return version
                return versions[-1]
        return None

    def cost_of(self, connector_id: str, models: tuple[str, ...], at: dt.datetime, tokens: TokenCounts) -> int | None:
        """The cost in nanos, or None when no price applies (the dashboards count such requests as unpriced)."""
        if not (tokens.prompt or tokens.completion):
            return 0
        day = at.astimezone(dt.UTC).date() if at.tzinfo else at.date()
        price = self.price_for(connector_id, models, day)
        if price is None:
            return None
        return cost_in_nanos(tokens, price, self.terms_of(connector_id).discount_percent)


_table: ProcessCache[PriceTable] = ProcessCache(PriceTable.load, TABLE_SECONDS)
# This process's price table, read again when older than TABLE_SECONDS or when a price changes.
current_table = _table.get
acurrent_table = _table.aget
forget_table = _table.forget


async def acost_of_event(event) -> int | None:
    """The cost of an ``ExecutionEvent`` (its connector, models, day and tokens), in nanos; None without a price."""
    tokens = TokenCounts(event.prompt_tokens, event.completion_tokens, event.cached_tokens or 0,
                         event.reasoning_tokens or 0)
    if not (tokens.prompt or tokens.completion):
        return 0
    table = await acurrent_table()
    return table.cost_of(event.connector_id, (event.requested_model, event.response_model), event.timestamp, tokens)


def cost_of_event(event, table: PriceTable) -> int | None:
    """``acost_of_event`` with a given table, for repricing."""
    tokens = TokenCounts(event.prompt_tokens, event.completion_tokens, event.cached_tokens or 0,
                         event.reasoning_tokens or 0)
    return table.cost_of(event.connector_id, (event.requested_model, event.response_model), event.timestamp, tokens)


def _announce_change(sender, instance, using=None, **kwargs) -> None:
    invalidation.announce(TOPIC, using=using)


def connect_signals() -> None:
    from usage.governance.models import ConnectorPricing, Price

    invalidation.register(TOPIC, forget_table, forget_table)
    for model in (Price, ConnectorPricing):
        post_save.connect(_announce_change, sender=model, dispatch_uid=f"prices_saved_{model.__name__}")
        post_delete.connect(_announce_change, sender=model, dispatch_uid=f"prices_deleted_{model.__name__}")
