"""Amounts of money as the app stores them: integers in billionths of USAGE_CURRENCY (nanos).

The cheapest list price, 0.005 per million tokens, is 5 nanos a token, so every cost is an exact integer and sums
of millions of events never drift as floats would.
"""

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_UNIT = 10**9


def nanos_to_amount(nanos: int, places: int = 4) -> Decimal:
    """``nanos`` as an amount of the currency, rounded half-even to ``places`` decimals (exact, never a float): the
    JSON API's and the CSVs' decimal strings."""
    return (Decimal(nanos) / NANOS_PER_UNIT).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def format_cost(nanos: int | None, currency: str, places: int = 4) -> str:
    """A cost for people: ``12.3456 USD``; an unknown cost is an empty string."""
    if nanos is None:
        return ""
    return f"{nanos_to_amount(nanos, places)} {currency}"
