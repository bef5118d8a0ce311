"""Reading the trail: filters from the URL and keyset pagination (README "Audit trail").

Pages are cut with ``WHERE (at, id) < (cursor's at, cursor's id) ORDER BY at DESC, id DESC LIMIT n``: each page
is one index range scan of the index that matches the filter (models.AuditRecord.Meta.indexes), so page 10,000
costs what page 1 does, at ten million records as at a thousand. No OFFSET, no COUNT(*).
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import connections
from django.utils import timezone

from connectors.audit.models import AuditRecord
from connectors.query_params import InvalidQueryParam, database_id, parse_time, text_param

PAGE_SIZE = 50
FILTERS = ("actor", "object_type", "object_id", "action")


class BadFilter(InvalidQueryParam):
    """A query parameter that cannot be used; the message names it."""


@dataclass
class AuditQuery:
    actor: str = ""
    object_type: str = ""
    object_id: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    # Set by the view, never from the URL: an Auditor of one space reads that space's records (README "Spaces").
    space_id: str = ""

    def as_params(self) -> dict:
        params = {name: getattr(self, name) for name in FILTERS if getattr(self, name)}
        if self.since:
            params["from"] = self.since.isoformat()
        if self.until:
            params["to"] = self.until.isoformat()
        return params


def parse_query(params) -> AuditQuery:
    """The filters of a query string, every one checked here, before any query runs or an export sends a byte."""
    try:
        query = AuditQuery(**{name: text_param(params, name, max_length=300) for name in FILTERS})
        # Times without an offset are the server's (TIME_ZONE); a date alone for "to" means the whole of that day.
        tz = timezone.get_current_timezone()
        if (params.get("from") or "").strip():
            query.since = parse_time("from", params["from"], tz=tz)
        if (params.get("to") or "").strip():
            query.until = parse_time("to", params["to"], tz=tz, end_of_day=True)
    except InvalidQueryParam as exc:
        raise BadFilter(str(exc)) from None
    return query


def filtered(query: AuditQuery):
    records = AuditRecord.objects.all()
    if query.space_id:
        records = records.filter(space_id=query.space_id)
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
            record_id = database_id("cursor", cursor)
        except InvalidQueryParam as exc:
            raise BadFilter(str(exc)) from None
        last = AuditRecord.objects.filter(pk=record_id).values_list("at", flat=True).first()
        if last is None:
            raise BadFilter(f"[cursor]: no record {record_id}")
        records = after_cursor(records, last, record_id)
    rows = list(records[: size + 1])
    next_cursor = str(rows[size - 1].pk) if len(rows) > size else ""
    return rows[:size], next_cursor
