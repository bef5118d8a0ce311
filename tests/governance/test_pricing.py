"""Prices: which price applies to an execution, and what its tokens cost (usage/governance/pricing/prices.py)."""

import datetime as dt
import importlib
from decimal import Decimal

import pytest

from usage.formatting import format_cost
from usage.governance.models import ConnectorPricing, Price
from usage.governance.pricing.prices import (
    PriceTable,
    PriceVersion,
    TokenCounts,
    cost_in_nanos,
    current_table,
)
from usage.governance.pricing.shipped_prices import read_price_file

NOV = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def version(pattern="gpt-4o", input="2.50", cached=None, output="10.00", reasoning=None, day=dt.date(2026, 1, 1),
            negotiated=False):
    return PriceVersion(pattern, day, Decimal(input), Decimal(cached) if cached else None, Decimal(output),
                        Decimal(reasoning) if reasoning else None, negotiated)


def test_a_million_tokens_cost_the_price_per_million_exactly():
    price = version(input="2.50", output="10.00")
    assert cost_in_nanos(TokenCounts(prompt=1_000_000), price) == 2_500_000_000
    assert cost_in_nanos(TokenCounts(completion=1_000_000), price) == 10_000_000_000


def test_cached_tokens_are_charged_at_the_cached_price_and_not_again_as_input():
    price = version(input="2.00", cached="0.50", output="8.00")
    # 1,000 prompt tokens of which 600 cached: 400 * 2.00 + 600 * 0.50 = 1,100 per million -> 1,100,000 nanos
    assert cost_in_nanos(TokenCounts(prompt=1000, cached=600), price) == 1_100_000
    # Without a cached price, cached tokens cost the input price.
    assert cost_in_nanos(TokenCounts(prompt=1000, cached=600), version(input="2.00")) == 2_000_000


def test_reasoning_tokens_are_output_tokens_unless_a_reasoning_price_says_otherwise():
    tokens = TokenCounts(completion=1000, reasoning=700)
    assert cost_in_nanos(tokens, version(output="8.00")) == 8_000_000
    assert cost_in_nanos(tokens, version(output="8.00", reasoning="4.00")) == 300 * 8000 + 700 * 4000


def test_the_smallest_list_price_is_exact_in_nanos():
    assert cost_in_nanos(TokenCounts(prompt=1, cached=1), version(input="0.05", cached="0.005")) == 5


def test_a_discount_applies_to_list_prices_only():
    tokens = TokenCounts(prompt=1_000_000)
    assert cost_in_nanos(tokens, version(input="2.00"), Decimal("25")) == 1_500_000_000
    assert cost_in_nanos(tokens, version(input="2.00", negotiated=True), Decimal("25")) == 2_000_000_000


def test_counts_that_do_not_add_up_never_give_a_negative_cost():
    assert cost_in_nanos(TokenCounts(prompt=10, cached=50, completion=5, reasoning=9), version()) >= 0


def test_the_most_specific_pattern_wins():
    table = PriceTable(
        [(version("gpt-4o-*", input="2.50"), ""), (version("gpt-4o-mini-*", input="0.15"), ""),
         (version("gpt-4o-mini", input="0.16"), "")],
        {},
    )
    assert table.price_for("c", ("gpt-4o-mini-2024-07-18",), NOV.date()).input == Decimal("0.15")
    assert table.price_for("c", ("gpt-4o-2024-08-06",), NOV.date()).input == Decimal("2.50")
    assert table.price_for("c", ("gpt-4o-mini",), NOV.date()).input == Decimal("0.16")
    assert table.price_for("c", ("llama-3",), NOV.date()) is None


def test_a_past_event_keeps_the_price_of_its_day():
    old = version(input="5.00", day=dt.date(2024, 5, 13))
    new = version(input="2.50", day=dt.date(2024, 10, 1))
    table = PriceTable([(old, ""), (new, "")], {})
    assert table.price_for("c", ("gpt-4o",), dt.date(2024, 9, 30)).input == Decimal("5.00")
    assert table.price_for("c", ("gpt-4o",), dt.date(2024, 10, 1)).input == Decimal("2.50")
    # Older than every version: the oldest one, since the table knows nothing earlier.
    assert table.price_for("c", ("gpt-4o",), dt.date(2020, 1, 1)).input == Decimal("5.00")


def test_a_connectors_negotiated_price_beats_the_list_price():
    table = PriceTable([(version(input="2.50"), ""), (version(input="1.00", negotiated=True), "deal")], {})
    assert table.price_for("deal", ("gpt-4o",), NOV.date()).input == Decimal("1.00")
    assert table.price_for("other", ("gpt-4o",), NOV.date()).input == Decimal("2.50")


def test_an_azure_deployment_is_priced_as_the_model_it_is_mapped_to():
    from usage.governance.pricing.prices import ConnectorTerms

    table = PriceTable(
        [(version("gpt-4o", input="2.50"), ""), (version("gpt-4o-mini", input="0.15"), "")],
        {"azure": ConnectorTerms(Decimal(0), {"chat-prod": "gpt-4o-mini"})},
    )
    # requested model = the deployment; the provider reported gpt-4o (a mapping wins over the reported model).
    assert table.price_for("azure", ("chat-prod", "gpt-4o"), NOV.date()).input == Decimal("0.15")
    # Without a mapping, the reported model is priced; a deployment name alone has no price.
    assert table.price_for("other", ("chat-prod", "gpt-4o"), NOV.date()).input == Decimal("2.50")
    assert table.price_for("other", ("chat-prod",), NOV.date()) is None


def test_no_tokens_cost_nothing_even_without_a_price():
    table = PriceTable([], {})
    assert table.cost_of("c", ("unknown",), NOV, TokenCounts()) == 0
    assert table.cost_of("c", ("unknown",), NOV, TokenCounts(prompt=3)) is None


def test_format_cost_rounds_for_people():
    assert format_cost(1_234_567_890) == "1.2346 USD"
    assert format_cost(None) == ""


@pytest.mark.django_db
def test_the_shipped_prices_are_loaded_by_migrate():
    # The migration's own function, on a table emptied first: a transactional test's flush earlier in the same
    # process may have emptied it already, so the rows migrate loaded at the start cannot be relied on.
    from django.apps import apps

    Price.objects.all().delete()
    importlib.import_module("usage.governance.migrations.0002_shipped_prices").load(apps, None)
    rows = read_price_file("prices-2026-11-29.yaml")
    assert Price.objects.filter(connector_id="").count() == len(rows)
    gpt41 = Price.objects.get(model_pattern="gpt-4.1")
    assert (gpt41.input_per_million, gpt41.cached_input_per_million, gpt41.output_per_million) == (
        Decimal("2.00"), Decimal("0.50"), Decimal("8.00"))
    assert "pricing" in gpt41.source


@pytest.mark.usefixtures("shipped_prices")
def test_the_process_table_follows_changes_to_prices_and_connector_pricing():
    table = current_table()
    tokens = TokenCounts(prompt=1_000_000)
    assert table.cost_of("c1", ("gpt-4.1",), NOV, tokens) == 2_000_000_000
    ConnectorPricing.objects.create(connector_id="c1", discount_percent=Decimal("10"))
    assert current_table().cost_of("c1", ("gpt-4.1",), NOV, tokens) == 1_800_000_000
    Price.objects.create(model_pattern="gpt-4.1", valid_from=dt.date(2026, 11, 30), input_per_million=Decimal("1"),
                         output_per_million=Decimal("4"))
    assert current_table().cost_of("c1", ("gpt-4.1",), NOV, tokens) == 900_000_000
    assert current_table().cost_of("c1", ("gpt-4.1",), NOV - dt.timedelta(days=1), tokens) == 1_800_000_000
