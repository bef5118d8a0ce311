"""The time range of a usage view, read from the query string so that a view can be shared as a URL.

Query parameters (the same for the pages, the CSV exports and the JSON API):

- ``range``: ``24h``, ``7d`` (default), ``30d``, ``90d`` or ``custom``;
- ``from`` / ``to``: ISO 8601 dates or date-times; giving them implies ``custom``. Values without an offset are
  read in the viewer's time zone; a date alone for ``to`` means the end of that day;
- ``tz``: an IANA time zone name (default ``UTC``) used for bucket boundaries and for every time shown.

Rollups are kept per UTC hour, so every range is widened to whole hours (``from`` down, ``to`` up), and the
effective range is what the views show and return. Buckets are hours for ranges up to seven days and days in
the viewer's time zone beyond that. A day bucket is the set of UTC hours that start on that local date, which
is exact for every zone whose offset is a whole number of hours and off by the offset's minutes otherwise
(for example India, +05:30).
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.utils import timezone

from connectors.query_params import InvalidQueryParam, parse_time
from connectors.viewer_time_zone import known_time_zones  # noqa: F401 - also imported from here

PRESETS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
PRESET_LABELS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "90d": "Last 90 days"}
DEFAULT_RANGE = "7d"
CUSTOM = "custom"
HOUR, DAY = "hour", "day"
# Longest range with hourly buckets: 168 points still read well as bars; beyond that, days.
MAX_HOURLY_SPAN = timedelta(days=7)
# A bound on custom ranges so that a typo (year 20225) cannot ask for millions of buckets.
MAX_SPAN = timedelta(days=366 * 5)


class InvalidRange(ValueError):
    """A query parameter that cannot be used; the message is safe to show and names the parameter."""


@dataclass(frozen=True)
class UsageRange:
    """An effective range: ``start`` inclusive, ``end`` exclusive, both whole UTC hours (aware, UTC)."""

    key: str
    start: datetime
    end: datetime
    tz: ZoneInfo
    bucket: str

    @property
    def tz_name(self) -> str:
        return self.tz.key

    @property
    def bucket_label(self) -> str:
        return "hourly" if self.bucket == HOUR else "daily"

    @property
    def is_custom(self) -> bool:
        return self.key == CUSTOM

    @property
    def label(self) -> str:
        if self.is_custom:
            return f"{format_local(self.start, self.tz)} to {format_local(self.end, self.tz)}"
        return PRESET_LABELS[self.key]

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    def bucket_starts(self) -> list[datetime]:
        """Every bucket of the range in order, as aware datetimes in the viewer's time zone."""
        if self.bucket == HOUR:
            hours = int((self.end - self.start) / timedelta(hours=1))
            return [self.local(self.start + timedelta(hours=i)) for i in range(hours)]
        days = []
        day = self.local(self.start).date()
        last = self.local(self.end - timedelta(hours=1)).date()
        while day <= last:
            days.append(local_midnight(day, self.tz))
            day += timedelta(days=1)
        return days

    def bucket_of(self, utc_hour: datetime) -> datetime:
        """The bucket (as returned by ``bucket_starts``) that a rollup's UTC hour belongs to."""
        local = self.local(utc_hour)
        if self.bucket == HOUR:
            return local
        return local_midnight(local.date(), self.tz)

    def query_params(self, **overrides: str) -> dict[str, str]:
        """The query string that reproduces this range (for links, forms and exports)."""
        if self.is_custom:
            params = {"range": CUSTOM, "from": iso(self.start, self.tz), "to": iso(self.end, self.tz)}
        else:
            params = {"range": self.key}
        if self.tz_name != "UTC":
            params["tz"] = self.tz_name
        params.update(overrides)
        return params

    def querystring(self, **overrides: str) -> str:
        return urlencode(self.query_params(**overrides))


def floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + timedelta(hours=1)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # zoneinfo resolves a midnight that does not exist (a DST jump at 00:00) to the later offset, as wanted.
    return datetime.combine(day, time.min, tzinfo=tz)


def iso(moment: datetime, tz: ZoneInfo | None = None) -> str:
    """ISO 8601 with the offset, ``Z`` for UTC."""
    text = moment.astimezone(tz or UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def format_local(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def parse_tz(raw: str | None) -> ZoneInfo:
    name = (raw or "").strip() or "UTC"
    # Checked against the list rather than trying ZoneInfo(name), which opens whatever file the name points at.
    if name not in known_time_zones():
        raise InvalidRange(f"[tz]: unknown time zone {name[:64]!r}; use an IANA name such as Europe/Paris or UTC.")
    return ZoneInfo(name)


def parse_moment(name: str, raw: str, tz: ZoneInfo, *, end_of_day: bool) -> datetime:
    """An ISO date or date-time, in UTC; naive values are in ``tz``; a bare date is its midnight (or the next one).
    The one parser of query-string times (connectors/query_params.py), with this module's error."""
    try:
        return parse_time(name, raw, tz=tz, end_of_day=end_of_day)
    except InvalidQueryParam as exc:
        raise InvalidRange(str(exc)) from None


def parse_range(params, *, now: datetime | None = None) -> UsageRange:
    """Build the effective range from a QueryDict (or dict); raises InvalidRange with a message for a 400."""
    tz = parse_tz(params.get("tz"))
    key = (params.get("range") or "").strip()
    has_bounds = bool((params.get("from") or "").strip() or (params.get("to") or "").strip())
    if not key:
        key = CUSTOM if has_bounds else DEFAULT_RANGE
    if key not in PRESETS and key != CUSTOM:
        raise InvalidRange(f"[range]: unknown range {key!r}; use one of 24h, 7d, 30d, 90d or custom.")
    now = now or timezone.now()

    if key == CUSTOM:
        raw_from, raw_to = (params.get("from") or "").strip(), (params.get("to") or "").strip()
        if not raw_from:
            raise InvalidRange("[from]: a custom range needs a start date.")
        start = parse_moment("from", raw_from, tz, end_of_day=False)
        end = parse_moment("to", raw_to, tz, end_of_day=True) if raw_to else now
        if start >= end:
            raise InvalidRange("[from]: the start must be before the end ([to]).")
        start, end = floor_hour(start), ceil_hour(end)
        if end - start > MAX_SPAN:
            raise InvalidRange("[to]: a range can be at most five years long.")
    else:
        span = PRESETS[key]
        # The current, partial hour (or day) is included so that the newest executions show at once.
        end = floor_hour(now) + timedelta(hours=1)
        if span <= MAX_HOURLY_SPAN:
            start = end - span
        else:
            # Whole local days, today included. ceil_hour: a day bucket holds the UTC hours starting on that date.
            today = now.astimezone(tz).date()
            end = ceil_hour(local_midnight(today + timedelta(days=1), tz))
            start = ceil_hour(local_midnight(today - timedelta(days=span.days - 1), tz))

    bucket = HOUR if end - start <= MAX_HOURLY_SPAN else DAY
    return UsageRange(key=key, start=start, end=end, tz=tz, bucket=bucket)
