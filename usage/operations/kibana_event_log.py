"""The event log as Kibana's own event-log documents, ready for Elasticsearch's ``_bulk`` API (README, Kibana event
log export; docs/KIBANA-EVENT-LOG.md lists every field and where Kibana sets it).

Each execution becomes the ``execute`` document Kibana's action executor writes to ``.kibana-event-log-*``
(``event.provider: actions``, ``event.action: execute``, ``event.duration`` in nanoseconds, the connector as
``kibana.saved_objects`` of type ``action``, ``kibana.action.execution.gen_ai.usage.*``, ``user.name``,
``message``), so Kibana's OpenAI Token Usage dashboard and saved searches read events recorded here. Every field
is one Kibana's event-log mapping declares (``dynamic: false``), with the type it declares
(tests/fixtures/kibana-event-log-mapping.json).

An export covers ``[from, to)`` in the order (timestamp, id) and stops after ``limit`` events; its cursor, an
opaque base64 of the last exported (timestamp, id), resumes after it. Document ids are derived from the event,
so shipping an event twice (overlapping runs) is refused by Elasticsearch as a conflict instead of duplicated.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Q

from connectors.query_params import InvalidQueryParam, checked_moment, database_id, parse_time, text_param
from usage.models import ExecutionEvent

CONNECTOR_TYPE_ID = ".gen-ai"
ECS_VERSION = "1.8.0"  # Kibana's event log (event_log/generated/schemas.ts)
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
CHUNK = 2_000
# The namespace of the document ids (uuid5 of the event's connector, id and start): any fixed UUID would do.
ID_NAMESPACE = uuid.UUID("6f1f3c1e-8d4b-5b7a-9c2e-0c6a2f1d4e11")
FIELDS = ("id", "timestamp", "connector_id", "connector_name", "connector_is_preconfigured", "user_name",
          "outcome", "duration_ms", "error_message", "request_bytes", "prompt_tokens", "completion_tokens",
          "total_tokens", "usage_source", "space_id")


class ExportError(ValueError):
    """A parameter the export cannot use; the message names it and is safe to show."""


def kibana_date(moment: datetime) -> str:
    """Kibana's event-log date: UTC, milliseconds, ``Z`` (its schema refuses anything else)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def document_id(row: dict) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{row['connector_id']}/{row['id']}/{row['timestamp'].isoformat()}"))


def document(row: dict) -> dict:
    """The ``execute`` document of one event (a dict of FIELDS)."""
    start = row["timestamp"]
    end = start + timedelta(milliseconds=row["duration_ms"])
    connector_id, name = row["connector_id"], row["connector_name"]
    label = f"{CONNECTOR_TYPE_ID}:{connector_id}: {name}"
    succeeded = row["outcome"] == "success"
    saved_object = {"rel": "primary", "type": "action", "id": connector_id, "type_id": CONNECTOR_TYPE_ID}
    if row["connector_is_preconfigured"]:
        saved_object["space_agnostic"] = True
    elif row["space_id"] != "default":
        saved_object["namespace"] = row["space_id"]  # Kibana names the space of a connector outside the default  # Kibana marks in-memory (preconfigured) connectors so
    execution = {
        "uuid": document_id(row),
        "source": "http_request",  # every execution here came through an HTTP API, as Kibana's _execute does
        "usage": {"request_body_bytes": row["request_bytes"]},
    }
    if succeeded and row["usage_source"] != "none":
        # Kibana records token usage only for successful executions whose usage it could determine.
        execution["gen_ai"] = {"usage": {"prompt_tokens": row["prompt_tokens"],
                                         "completion_tokens": row["completion_tokens"],
                                         "total_tokens": row["total_tokens"]}}
    doc = {
        "@timestamp": kibana_date(end),  # Kibana logs the execute document when the execution ends
        "ecs": {"version": ECS_VERSION},
        "event": {"provider": "actions", "action": "execute", "kind": "action",
                  "outcome": "success" if succeeded else "failure",
                  "start": kibana_date(start), "end": kibana_date(end),
                  "duration": round(row["duration_ms"] * 1_000_000)},
        "message": f"action executed: {label}" if succeeded else f"action execution failure: {label}",
        "kibana": {"saved_objects": [saved_object], "space_ids": [row["space_id"]],
                   "action": {"name": name, "id": connector_id, "type_id": CONNECTOR_TYPE_ID,
                              "execution": execution}},
    }
    if not succeeded:
        doc["error"] = {"message": row["error_message"] or "an error occurred while running the action"}
    if row["user_name"]:
        doc["user"] = {"name": row["user_name"]}
    return doc


def bulk_lines(row: dict) -> str:
    """The ``create`` action line and the document, as _bulk wants them (``create``: data streams accept only
    that, and an id already indexed is refused rather than overwritten)."""
    action = {"create": {"_index": settings.KIBANA_EVENT_LOG_INDEX, "_id": document_id(row)}}
    return json.dumps(action, separators=(",", ":")) + "\n" + json.dumps(document(row), separators=(",", ":")) + "\n"


# --- cursor and pages -------------------------------------------------------------------------------------------------

def encode_cursor(timestamp: datetime, event_id: int) -> str:
    raw = json.dumps([timestamp.astimezone(UTC).isoformat(), event_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text, event_id = json.loads(raw)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None or isinstance(event_id, bool) or not isinstance(event_id, int):
            raise ValueError
        # A hand-made cursor is held to what the database can compare, as query-string times and ids are.
        return checked_moment("cursor", moment), database_id("cursor", event_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ExportError("[cursor]: not a cursor this export gave (take it from X-Next-Cursor)") from None


def _moment(params, name: str) -> datetime:
    """A required time; without an offset it is UTC, and a date alone is its midnight (the range is ``[from, to)``)."""
    raw = (params.get(name) or "").strip()
    if not raw:
        raise ExportError(f"[{name}]: required, an ISO 8601 date-time such as 2026-01-31T00:00:00Z")
    try:
        return parse_time(name, raw, tz=UTC)
    except InvalidQueryParam as exc:
        raise ExportError(str(exc)) from None


def _limit(raw) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise ExportError(f"[limit]: expected a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ExportError(f"[limit]: expected a whole number from 1 to {MAX_LIMIT}")
    return limit


@dataclass
class ExportPage:
    """What one export sends: the events up to ``last`` (inclusive), and where the next export starts."""

    queryset: object  # of ExecutionEvent, ordered
    next_cursor: str  # the last exported event's; the given cursor (or "") when nothing is exported
    complete: bool  # no event of the range is left after this page


def plan_page(params, space_id: str | None = None) -> ExportPage:
    """The page an export of ``params`` (from, to, connector, cursor, limit) sends, of one space's events (every
    space's with None). Runs two small queries."""
    start, end = _moment(params, "from"), _moment(params, "to")
    if end <= start:
        raise ExportError("[to]: must be later than [from]")
    limit = _limit(params.get("limit"))
    events = ExecutionEvent.objects.filter(timestamp__gte=start, timestamp__lt=end)
    if space_id is not None:
        events = events.filter(space_id=space_id)
    try:
        connector = text_param(params, "connector")
    except InvalidQueryParam as exc:
        raise ExportError(str(exc)) from None
    if connector:
        events = events.filter(connector_id=connector)
    cursor = (params.get("cursor") or "").strip()
    if cursor:
        after_time, after_id = decode_cursor(cursor)
        events = events.filter(Q(timestamp__gt=after_time) | Q(timestamp=after_time, id__gt=after_id))
    events = events.order_by("timestamp", "id")
    # The last event of this page, known before anything is streamed so that it can go into a header.
    edge = list(events.values_list("timestamp", "id")[limit - 1 : limit + 1])
    if edge:
        last, complete = edge[0], len(edge) == 1
    else:
        last, complete = events.reverse().values_list("timestamp", "id").first(), True
    if last is None:
        return ExportPage(events.none(), cursor, True)
    page = events.filter(Q(timestamp__lt=last[0]) | Q(timestamp=last[0], id__lte=last[1]))
    return ExportPage(page, encode_cursor(*last), complete)


def ndjson(page: ExportPage) -> Iterator[str]:
    """The page's _bulk lines, read from the database in chunks as they are sent."""
    for row in page.queryset.values(*FIELDS).iterator(chunk_size=CHUNK):
        yield bulk_lines(row)


async def andjson(page: ExportPage) -> AsyncIterator[str]:
    """``ndjson`` for ASGI servers (Django reads a synchronous iterator whole before sending it there)."""
    rows = page.queryset.values(*FIELDS).iterator(chunk_size=CHUNK)
    while True:
        chunk = await sync_to_async(lambda: list(islice(rows, CHUNK)))()
        if chunk:
            yield "".join(bulk_lines(row) for row in chunk)
        if len(chunk) < CHUNK:
            return
