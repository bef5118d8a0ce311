"""The event log as Kibana's own event-log documents, ready for Elasticsearch's ``_bulk`` API (README, Kibana event
log export; docs/KIBANA-EVENT-LOG.md lists every field and where Kibana sets it).

Each execution becomes the ``execute-start`` and ``execute`` documents Kibana's action executor writes to
``.kibana-event-log-*``
(``event.provider: actions``, ``event.action: execute``, ``event.duration`` in nanoseconds, the connector as
``kibana.saved_objects`` of type ``action``, ``kibana.action.execution.gen_ai.usage.*``, ``user.name``,
``message``), so Kibana's OpenAI Token Usage dashboard and saved searches read events recorded here. Every field
is one Kibana's event-log mapping declares (``dynamic: false``), with the type it declares
(tests/fixtures/kibana-event-log-mapping.json).

An export covers ``[from, to)`` in the order (timestamp, id) and stops after ``limit`` events; its cursor, an
opaque base64 of the last exported (timestamp, id), resumes after it. Document ids are derived from the event,
so shipping an event twice (overlapping runs) is refused by Elasticsearch as a conflict instead of duplicated; for
the same reason ``kibana.action.execution.uuid`` and ``kibana.server_uuid`` are derived, not random
(docs/KIBANA-EVENT-LOG.md says why).
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

from connectors.models import KIBANA_VERSION
from connectors.query_params import InvalidQueryParam, checked_moment, database_id, parse_time, text_param
from usage.models import ExecutionEvent

CONNECTOR_TYPE_ID = ".gen-ai"
ECS_VERSION = "1.8.0"  # Kibana's event log (event_log/generated/schemas.ts)
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
CHUNK = 2_000
# The namespace of the document ids (uuid5 of the event's connector, id and start): any fixed UUID would do.
ID_NAMESPACE = uuid.UUID("6f1f3c1e-8d4b-5b7a-9c2e-0c6a2f1d4e11")
# Kibana's event logger stamps every document with its instance's UUID; this app's is fixed, so an export run
# twice writes the same bytes.
SERVER_UUID = str(uuid.uuid5(ID_NAMESPACE, "connectors-admin"))
ACTION_ERROR = "an error occurred while running the action"
VALIDATION_ERROR_PREFIX = "error validating action"
FIELDS = ("id", "timestamp", "connector_id", "connector_name", "connector_is_preconfigured", "user_name",
          "sub_action", "outcome", "duration_ms", "error_message", "request_bytes", "prompt_tokens",
          "completion_tokens", "total_tokens", "usage_source", "space_id")


class ExportError(ValueError):
    """A parameter the export cannot use; the message names it and is safe to show."""


def kibana_date(moment: datetime) -> str:
    """Kibana's event-log date: UTC, milliseconds, ``Z`` (its schema refuses anything else)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def document_id(row: dict) -> str:
    """The ``execute`` document's id, which is also the execution's ``kibana.action.execution.uuid``."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{row['connector_id']}/{row['id']}/{row['timestamp'].isoformat()}"))


def start_document_id(row: dict) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{document_id(row)}/execute-start"))


def error_message(row: dict) -> str:
    """Kibana's ``actionErrorToMessage`` of the answer the caller got: ``<message>[: <service_message>][; retry:
    true]``. A params or config validation error is its own message (retry false adds nothing); anything thrown
    while running was answered ``an error occurred while running the action`` with the recorded reason as its
    service message and ``retry: true``; a refusal before the run (a malformed body, a disabled type: HTTP 4xx, no
    envelope) keeps its reason alone."""
    reason = row["error_message"]
    if not reason:
        return f"{ACTION_ERROR}; retry: true"
    if reason.startswith(VALIDATION_ERROR_PREFIX) or not row["sub_action"]:
        return reason
    return f"{ACTION_ERROR}: {reason}; retry: true"


def started(row: dict) -> bool:
    """Whether Kibana would have logged ``execute-start``: its executor does once params and config validate, so
    not for a validation error nor for a request refused before the executor (no sub-action recorded)."""
    return bool(row["sub_action"]) and not row["error_message"].startswith(VALIDATION_ERROR_PREFIX)


def document(row: dict) -> dict:
    """The ``execute`` document of one event (a dict of FIELDS), logged when the execution ends."""
    end = row["timestamp"] + timedelta(milliseconds=row["duration_ms"])
    label = f"{CONNECTOR_TYPE_ID}:{row['connector_id']}: {row['connector_name']}"
    succeeded = row["outcome"] == "success"
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
    doc = _base(row, end)
    doc["event"].update(outcome="success" if succeeded else "failure", end=kibana_date(end),
                        duration=round(row["duration_ms"] * 1_000_000))
    doc["message"] = f"action executed: {label}" if succeeded else f"action execution failure: {label}"
    doc["kibana"]["action"]["execution"] = execution
    if not succeeded:
        doc["error"] = {"message": error_message(row)}
    return doc


def start_document(row: dict) -> dict:
    """The ``execute-start`` document: logged when timing starts, so no outcome, end, duration or usage."""
    doc = _base(row, row["timestamp"])
    doc["event"]["action"] = "execute-start"
    doc["message"] = f"action started: {CONNECTOR_TYPE_ID}:{row['connector_id']}: {row['connector_name']}"
    doc["kibana"]["action"]["execution"] = {"uuid": document_id(row), "source": "http_request"}
    return doc


def _base(row: dict, logged_at: datetime) -> dict:
    """What both documents share (createActionEventLogRecordObject, and the event logger's own fields)."""
    connector_id = row["connector_id"]
    saved_object = {"rel": "primary", "type": "action", "id": connector_id, "type_id": CONNECTOR_TYPE_ID}
    if row["connector_is_preconfigured"]:
        saved_object["space_agnostic"] = True  # Kibana marks in-memory (preconfigured) connectors so
    elif row["space_id"] != "default":
        saved_object["namespace"] = row["space_id"]  # Kibana names the space of a connector outside the default
    doc = {
        "@timestamp": kibana_date(logged_at),
        "ecs": {"version": ECS_VERSION},
        "event": {"provider": "actions", "action": "execute", "kind": "action",
                  "start": kibana_date(row["timestamp"])},
        "kibana": {"saved_objects": [saved_object], "space_ids": [row["space_id"]],
                   "action": {"name": row["connector_name"], "id": connector_id, "type_id": CONNECTOR_TYPE_ID},
                   "server_uuid": SERVER_UUID, "version": KIBANA_VERSION},
    }
    if row["user_name"]:
        doc["user"] = {"name": row["user_name"]}
    return doc


def bulk_lines(row: dict) -> str:
    """The ``create`` action line and the document, as _bulk wants them (``create``: data streams accept only
    that, and an id already indexed is refused rather than overwritten), for ``execute-start`` then ``execute``."""
    pairs = [(start_document_id(row), start_document(row))] if started(row) else []
    pairs.append((document_id(row), document(row)))
    return "".join(
        json.dumps({"create": {"_index": settings.KIBANA_EVENT_LOG_INDEX, "_id": doc_id}}, separators=(",", ":"))
        + "\n" + json.dumps(doc, separators=(",", ":")) + "\n"
        for doc_id, doc in pairs
    )


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
