"""One way to show a moment: 24-hour time with the zone's abbreviation, in the viewer's time zone
(connectors/viewer_time_zone.py), never microseconds; and the range a page shows, carried by links between tabs."""

from django import template
from django.utils import timezone
from django.utils.http import urlencode

register = template.Library()

# The query parameters that make a page's time range: a link to a sibling page keeps them.
RANGE_PARAMS = ("range", "from", "to", "tz")


@register.filter
def when(moment, precision: str = "minutes") -> str:
    """``2026-12-06 21:04 CET``; with ``"seconds"``, ``2026-12-06 21:04:05 CET``; — when there is none."""
    if not moment:
        return "—"
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    fmt = "%Y-%m-%d %H:%M:%S" if precision == "seconds" else "%Y-%m-%d %H:%M"
    zone = local.strftime("%Z")
    return f"{local.strftime(fmt)} {zone}".strip()


@register.simple_tag(takes_context=True)
def range_query(context) -> str:
    """``?range=…&tz=…`` of the current request (empty when it has none), for links to another tab."""
    request = context.get("request")
    if request is None:
        return ""
    kept = [(name, request.GET[name]) for name in RANGE_PARAMS if request.GET.get(name)]
    return f"?{urlencode(kept)}" if kept else ""
