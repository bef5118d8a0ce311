"""Number formats for the usage pages (django.contrib.humanize is not installed, and these are all we need)."""

from django import template
from django.conf import settings

from usage.governance.money import format_cost

register = template.Library()


@register.filter
def thousands(value) -> str:
    """12345678 -> 12,345,678."""
    if value is None or value == "":
        return "—"
    return f"{value:,}"


@register.filter
def duration_ms(value) -> str:
    """A duration in ms, in ms below ten seconds and in seconds above; — when there is none."""
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{value:,.0f} ms"


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.2f} %"


@register.filter
def cost(nanos) -> str:
    """A cost in nanos of USAGE_CURRENCY as ``12.3456 USD`` (usage/governance/money.format_cost); — when none."""
    return format_cost(nanos, settings.USAGE_CURRENCY) or "—"


@register.filter
def ms1(value) -> str:
    """A duration in milliseconds with one decimal (1.4409899999918707 -> 1.4 ms); — when there is none."""
    if value is None or value == "":
        return "—"
    return f"{value:,.1f} ms"


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key, "")
