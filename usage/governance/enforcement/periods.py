"""Where budget periods and rate-limit windows begin and end."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from usage.governance.models import Period


def period_bounds(period: str, time_zone: str, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The calendar day, week (Monday to Sunday) or month around ``at`` in ``time_zone``, as aware datetimes."""
    zone = ZoneInfo(time_zone)
    local = at.astimezone(zone)
    day = local.date()
    if period == Period.DAY:
        first, last = day, day + dt.timedelta(days=1)
    elif period == Period.WEEK:
        first = day - dt.timedelta(days=day.weekday())
        last = first + dt.timedelta(days=7)
    else:
        first = day.replace(day=1)
        last = (first + dt.timedelta(days=32)).replace(day=1)
    # Midnight in the zone, which fold/DST rules resolve for us; both ends are the zone's own midnights.
    start = dt.datetime.combine(first, dt.time(), zone)
    end = dt.datetime.combine(last, dt.time(), zone)
    return start, end


def minute_bounds(at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The calendar minute (UTC) around ``at``: rate limits count per minute, from second 0 to second 59."""
    start = at.astimezone(dt.UTC).replace(second=0, microsecond=0)
    return start, start + dt.timedelta(minutes=1)
