"""How amounts read, everywhere the app shows or exports them: money, tokens and durations.

Money is stored as integers in billionths of USAGE_CURRENCY (nanos). The cheapest list price, 0.005 per million
tokens, is 5 nanos a token, so every cost is an exact integer and sums of millions of events never drift as floats
would. This module is the one reader of USAGE_CURRENCY outside the models' validation.
"""

from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings

NANOS_PER_UNIT = 10**9
EMPTY = "—"


def currency() -> str:
    """The currency every cost is summed in (USAGE_CURRENCY)."""
    return settings.USAGE_CURRENCY


def nanos_to_amount(nanos: int, places: int = 4) -> Decimal:
    """``nanos`` as an amount of the currency, rounded half-even to ``places`` decimals (exact, never a float): the
    JSON API's and the CSVs' decimal strings."""
    return (Decimal(nanos) / NANOS_PER_UNIT).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def format_cost(nanos: int | None, places: int = 4) -> str:
    """A cost for people: ``12.3456 USD``; an unknown cost is an empty string."""
    if nanos is None:
        return ""
    return f"{nanos_to_amount(nanos, places)} {currency()}"


def format_tokens(count: int | None) -> str:
    """``12,345 tokens``; — when unknown."""
    return EMPTY if count is None else f"{count:,} tokens"


def format_thousands(value) -> str:
    """12345678 -> 12,345,678; — when there is none."""
    return EMPTY if value is None or value == "" else f"{value:,}"


def format_duration_ms(value) -> str:
    """A duration in ms, in ms below ten seconds and in seconds above; — when there is none."""
    if value is None or value == "":
        return EMPTY
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{value:,.0f} ms"


def format_precise_ms(value) -> str:
    """A duration in milliseconds with one decimal (1.4409899999918707 -> 1.4 ms); — when there is none."""
    return EMPTY if value is None or value == "" else f"{value:,.1f} ms"
