"""Values read from a query string before they reach the database: times and text, checked before any query runs.

Every query-string time (usage ranges, the usage API, the event-log export, the audit trail) goes through
``parse_time``, and every text filter through ``text_param``, so that a value the database or the calendar cannot
take is a 400 with a message, found before the first byte of a streamed answer, never an error half-way through.

What fails without these checks, and why:

- NUL: PostgreSQL's text types cannot hold the character U+0000, and psycopg refuses to send it ("PostgreSQL text
  fields cannot contain NUL (0x00) bytes"). Lone surrogates (U+D800-U+DFFF) cannot be encoded as UTF-8 at all.
  No stored value holds either, so a filter holding one could match nothing anyway.
- An offset such as ``-23:59``: Python accepts offsets up to a minute under 24 hours, PostgreSQL's timestamptz
  input only up to ±15:59:59 ("time zone displacement out of range"). Times are therefore handed to the database
  in UTC, and offsets are held to PostgreSQL's range, which also covers every offset the time zone database has
  ever had.
- A year near 1 or 9999: converting to UTC, widening to whole hours or adding a day steps off Python's calendar
  (OverflowError), so times are held to the years 1000 to 9998.
- ``T25:61:61``: not a time; Python says which field is out of range, and the message repeats it.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo

from django.utils.dateparse import parse_date, parse_datetime

EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MAX_OFFSET = timedelta(hours=15, minutes=59, seconds=59)  # PostgreSQL's bound on a timestamptz's displacement
MAX_DATABASE_ID = 2**63 - 1  # a bigint; a larger id in a cursor would overflow the query's parameter
EXAMPLES = "such as 2025-01-31 or 2025-01-31T14:00:00Z"


class InvalidQueryParam(ValueError):
    """A query parameter that cannot be used; the message names it and is safe to show."""


def _shown(raw: str) -> str:
    return repr(raw[:64])


def unstorable_character_error(name: str, value: str) -> str | None:
    """Why ``value`` cannot be compared with stored text (a NUL or a lone surrogate), or None."""
    if "\x00" in value:
        return f"[{name}]: contains a NUL character (%00), which no stored value holds."
    if any("\ud800" <= char <= "\udfff" for char in value):
        return f"[{name}]: contains a lone surrogate (an invalid character), which no stored value holds."
    return None


def text_param(params, name: str, *, max_length: int | None = None) -> str:
    """A text filter: trimmed (and cut to ``max_length``, the column's); InvalidQueryParam when the database could
    not compare it."""
    value = (params.get(name) or "").strip()
    problem = unstorable_character_error(name, value)
    if problem:
        raise InvalidQueryParam(problem)
    return value[:max_length]


def database_id(name: str, raw: object) -> int:
    """A row id taken from a cursor or a query string: a whole number the database's bigint can hold."""
    if isinstance(raw, bool):
        raise InvalidQueryParam(f"[{name}]: expected a record id")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidQueryParam(f"[{name}]: expected a record id") from None
    if not 0 <= value <= MAX_DATABASE_ID:
        raise InvalidQueryParam(f"[{name}]: expected a record id")
    return value


def checked_moment(name: str, moment: datetime, raw: str = "") -> datetime:
    """An aware datetime within the bounds above, in UTC (how the database is given every time)."""
    offset = moment.utcoffset()
    shown = _shown(raw) if raw else moment.isoformat()
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise InvalidQueryParam(f"[{name}]: the UTC offset of {shown} is out of range; offsets run from -15:59 to "
                                "+15:59, such as Z, +02:00 or -05:00.")
    try:
        utc = moment.astimezone(UTC)
        within = EARLIEST <= utc <= LATEST
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first day the calendar has
        within = False
    if not within:
        raise InvalidQueryParam(f"[{name}]: {shown} is out of range; use a date between 1000-01-01 and 9998-12-31.")
    return utc


def parse_time(name: str, raw: str, *, tz: tzinfo, end_of_day: bool = False) -> datetime:
    """A query-string date or date-time (ISO 8601, or Django's looser ``2025-1-5 9:00``), in UTC.

    A time without an offset is read in ``tz``; a date alone is its midnight in ``tz``, or the next midnight with
    ``end_of_day`` (a ``to`` that names a day includes it).
    """
    text = raw.strip()
    problem = unstorable_character_error(name, text)
    if problem:
        raise InvalidQueryParam(problem)
    try:
        day = parse_date(text) if len(text) == 10 else None  # parse_datetime takes a date too, as its midnight
        if day is not None:
            if end_of_day:
                day += timedelta(days=1)
            moment = datetime.combine(day, time.min)
        else:
            moment = parse_datetime(text)
    except ValueError as exc:  # the shape of a date or date-time with a field out of range: hour 25, 31 April
        reason = "the UTC offset is 24 hours or more" if "offset" in str(exc) else str(exc)
        raise InvalidQueryParam(f"[{name}]: {_shown(raw)} is not a valid date or date-time: {reason}.") from None
    except OverflowError:  # 9999-12-31 as an end of day
        raise InvalidQueryParam(f"[{name}]: {_shown(raw)} is out of range; use a date between 1000-01-01 and "
                                "9998-12-31.") from None
    if moment is None:
        raise InvalidQueryParam(f"[{name}]: {_shown(raw)} is not an ISO 8601 date or date-time, {EXAMPLES}.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return checked_moment(name, moment, raw)
