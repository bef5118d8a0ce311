"""The viewer's time zone: every page shows times in it, remembered in a cookie.

The browser sets the cookie on the first visit (static/js/page_tools.js reads Intl's zone); a ``?tz=`` that a
person chose on a range form wins and replaces it, so the zone stays the same across tabs, links and visits.
Until either is known, pages are in UTC. The zone is activated for the request (Django's |date and localtime
follow it) and kept as ``request.viewer_tz``.
"""

from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from django.utils import timezone

COOKIE = "tz"
COOKIE_AGE = 365 * 24 * 3600


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """The IANA names the system's tz database offers (scanning it takes tens of milliseconds: cached)."""
    return frozenset(available_timezones() | {"UTC"})


def known_zone(raw: str | None) -> str:
    """``raw`` when it names a time zone, else empty. Checked against the list rather than trying ZoneInfo(raw),
    which opens whatever file the name points at."""
    name = (raw or "").strip()
    return name if name in known_time_zones() else ""


class ViewerTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        remembered = known_zone(request.COOKIES.get(COOKIE))
        chosen = known_zone(request.GET.get("tz"))
        request.viewer_tz = chosen or remembered or "UTC"
        timezone.activate(ZoneInfo(request.viewer_tz))
        try:
            response = self.get_response(request)
        finally:
            timezone.deactivate()
        if chosen and chosen != remembered:
            response.set_cookie(COOKIE, chosen, max_age=COOKIE_AGE, samesite="Lax",
                                secure=request.is_secure())
        return response
