"""Reading the trail: filters from the URL and keyset pagination (README "Audit trail").

Pages are cut with ``WHERE (at, id) < (cursor's at, cursor's id) ORDER BY at DESC, id DESC LIMIT n``: each page
is one index range scan of the index that matches the filter (models.AuditRecord.Meta.indexes), so page 10,000
costs what page 1 does, at ten million records as at a thousand. No OFFSET, no COUNT(*).
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.db import connections
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from connectors.audit.models import AuditRecord

PAGE_SIZE = 50
FILTERS = ("actor", "object_type", "object_id", "action")


class BadFilter(ValueError):
    """A query parameter that cannot be used; the message names it."""


@dataclass
class AuditQuery:
    actor: str = ""
    object_type: str = ""
    object_id: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None  # exclusive

    def as_params(self) -> dict:
        params = {name: getattr(self, name) for name in FILTERS if getattr(self, name)}
        if self.since:
            params["from"] = self.since.isoformat()
        if self.until:
            params["to"] = self.until.isoformat()
        return params


def _moment(name: str, raw: str, *, end_of_day: bool) -> datetime:
    day = parse_date(raw) if len(raw) == 10 else None  # parse_datetime also takes a bare date, as midnight
    if day is not None:
        moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    else:
        moment = parse_datetime(raw)
        if moment is None:
            raise BadFilter(f"[{name}]: expected a date (2025-03-01) or a date-time (2025-03-01T12:00:00Z), got {raw!r}")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment


def parse_query(params) -> AuditQuery:
    query = AuditQuery(**{name: (params.get(name) or "").strip()[:300] for name in FILTERS})
    try:
        if params.get("from"):
            query.since = _moment("from", params["from"].strip(), end_of_day=False)
        if params.get("to"):
            # A date alone for "to" means the whole of that day.
            query.until = _moment("to", params["to"].strip(), end_of_day=True)
    except (ValueError, OverflowError) as exc:
        raise BadFilter(str(exc) if isinstance(exc, BadFilter) else f"invalid date: {exc}") from None
    return query


def filtered(query: AuditQuery):
    records = AuditRecord.objects.all()
    for name in FILTERS:
        value = getattr(query, name)
        if value:
            records = records.filter(**{name: value})
    if query.since:
        records = records.filter(at__gte=query.since)
    if query.until:
        records = records.filter(at__lt=query.until)
    return records.order_by("-at", "-id")


def after_cursor(records, at, record_id: int):
    """The records before (at, id) in the page order. A row-value comparison, so that the database walks the
    (…, at, id) index from the cursor on (an OR of two conditions would not be one index range)."""
    at_field = AuditRecord._meta.get_field("at")
    at_value = at_field.get_db_prep_value(at, connections[records.db])  # SQLite stores naive UTC text
    return records.extra(where=["(at, id) < (%s, %s)"], params=[at_value, record_id])


def page(query: AuditQuery, cursor: str = "", size: int = PAGE_SIZE) -> tuple[list[AuditRecord], str]:
    """One page of records, newest first, and the cursor of the next page ("" on the last one).

    ``cursor`` is the id of the last record of the previous page.
    """
    records = filtered(query)
    if cursor:
        try:
            last = AuditRecord.objects.filter(pk=int(cursor)).values_list("at", flat=True).first()
        except ValueError:
            raise BadFilter(f"[cursor]: expected a record id, got {cursor!r}") from None
        if last is None:
            raise BadFilter(f"[cursor]: no record {cursor}")
        records = after_cursor(records, last, int(cursor))
    rows = list(records[: size + 1])
    next_cursor = str(rows[size - 1].pk) if len(rows) > size else ""
    return rows[:size], next_cursor
