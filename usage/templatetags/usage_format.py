"""Number formats for the usage pages: template filters over usage/formatting.py, the one place they are defined."""

from django import template

from usage import formatting

register = template.Library()

thousands = register.filter("thousands", formatting.format_thousands)
duration_ms = register.filter("duration_ms", formatting.format_duration_ms)
ms1 = register.filter("ms1", formatting.format_precise_ms)


@register.filter
def percent(value) -> str:
    if value is None:
        return formatting.EMPTY
    return f"{value * 100:.2f} %"


@register.filter
def cost(nanos) -> str:
    """A cost in nanos of USAGE_CURRENCY as ``12.3456 USD``; — when none."""
    return formatting.format_cost(nanos) or formatting.EMPTY


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key, "")
