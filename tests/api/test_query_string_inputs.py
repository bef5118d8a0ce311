"""Malformed query strings get a 400 with a message before the first byte, never a 500 or a download cut off
half-way: NUL in text filters (which PostgreSQL cannot compare), times whose fields, offset or year are out of
range. Against the app under uvicorn (tests/servers/asgi_server.py), on SQLite and on PostgreSQL
(``DATABASE_URL=postgres://...``), where most of these failed."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from connectors.audit.models import AuditRecord
from connectors.query_params import InvalidQueryParam, parse_time
from tests.conftest import basic_auth
from usage.models import ExecutionEvent

pytest_plugins = ["tests.servers.asgi_server"]

NUL_MESSAGE = "contains a NUL character (%00), which no stored value holds."
OFFSET_MESSAGE = "is out of range; offsets run from -15:59 to +15:59"
HOUR_MESSAGE = "is not a valid date or date-time: hour must be in 0..23."
YEAR_MESSAGE = "is out of range; use a date between 1000-01-01 and 9998-12-31."
BAD_HOUR = "2026-03-01T25:61:61Z"
BAD_OFFSET = "2026-03-01T00:00:00-23:59"
TO = "2026-03-02T00:00:00Z"


@pytest.fixture
def server(asgi_live_server, admin_user, make_connector):
    """The server, a connector, and a signed-in superuser's session and Basic credentials."""
    browser = Client()
    browser.force_login(admin_user)
    cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
    connector = make_connector()

    def get(path: str, params: dict | None = None) -> httpx.Response:
        return httpx.get(f"{asgi_live_server.url}{path.format(connector=connector.pk)}", params=params,
                         cookies=cookies, headers={"Authorization": basic_auth(admin_user)}, timeout=30)

    get.connector = connector
    return get


def message_of(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["message"]
    return html.unescape(response.text)


# The nine of the report, then the export, then the same inputs elsewhere.
CASES = [
    pytest.param("/usage/", {"user": "a\x00b"}, "[user]: " + NUL_MESSAGE, id="usage-user-nul"),
    pytest.param("/usage/", {"model": "a\x00b"}, "[model]: " + NUL_MESSAGE, id="usage-model-nul"),
    pytest.param("/usage/connectors/{connector}/", {"user": "a\x00b"}, "[user]: " + NUL_MESSAGE,
                 id="dashboard-user-nul"),
    pytest.param("/usage/connectors/{connector}/", {"model": "a\x00b"}, "[model]: " + NUL_MESSAGE,
                 id="dashboard-model-nul"),
    pytest.param("/api/usage/events.ndjson", {"from": "2026-03-01T00:00:00Z", "to": TO, "connector": "a\x00b"},
                 "[connector]: " + NUL_MESSAGE, id="ndjson-connector-nul"),
    pytest.param("/api/usage/events.ndjson", {"from": BAD_HOUR, "to": TO}, HOUR_MESSAGE, id="ndjson-from-hour"),
    pytest.param("/api/usage/events.ndjson", {"from": BAD_OFFSET, "to": TO}, OFFSET_MESSAGE, id="ndjson-from-offset"),
    pytest.param("/audit/", {"from": BAD_HOUR}, HOUR_MESSAGE, id="audit-from-hour"),
    pytest.param("/audit/", {"from": BAD_OFFSET}, OFFSET_MESSAGE, id="audit-from-offset"),
    pytest.param("/audit/export.json", {"from": BAD_OFFSET}, OFFSET_MESSAGE, id="audit-json-export-offset"),
    pytest.param("/audit/export.csv", {"from": BAD_OFFSET}, OFFSET_MESSAGE, id="audit-csv-export-offset"),
    pytest.param("/audit/export.json", {"actor": "a\x00b"}, "[actor]: " + NUL_MESSAGE, id="audit-export-actor-nul"),
    pytest.param("/audit/", {"to": "0001-01-01T00:00:00+05:00"}, YEAR_MESSAGE, id="audit-to-year-1"),
    pytest.param("/api/usage/connectors/{connector}", {"user": "a\x00b"}, "[user]: " + NUL_MESSAGE,
                 id="usage-api-user-nul"),
    pytest.param("/api/usage/connectors/{connector}", {"from": BAD_OFFSET}, OFFSET_MESSAGE, id="usage-api-offset"),
    pytest.param("/usage/connectors/{connector}/events.csv", {"q": "a\x00b"}, "[q]: " + NUL_MESSAGE,
                 id="events-csv-q-nul"),
    pytest.param("/connectors/{connector}/logs/", {"user": "a\x00b"}, "[user]: " + NUL_MESSAGE, id="logs-user-nul"),
    pytest.param("/api/usage/events.ndjson", {"from": "0001-01-01T00:00:00+05:00", "to": TO}, YEAR_MESSAGE,
                 id="ndjson-from-year-1"),
]


@pytest.mark.parametrize("path, params, message", CASES)
def test_a_malformed_query_string_is_a_400_with_a_message(server, path, params, message):
    response = server(path, params)
    assert response.status_code == 400, response.text[:300]
    assert message in message_of(response)
    assert "Content-Disposition" not in response.headers  # not a download that starts and then breaks


def cursor(moment: str, event_id: int) -> str:
    raw = json.dumps([moment, event_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("value", [cursor("2026-03-01T00:00:00-23:59", 1), cursor("2026-03-01T00:00:00Z", 2**70)],
                         ids=["offset", "huge-id"])
def test_a_hand_made_export_cursor_is_a_400(server, value):
    response = server("/api/usage/events.ndjson", {"from": "2026-03-01T00:00:00Z", "to": TO, "cursor": value})
    assert response.status_code == 400
    assert response.json()["message"].startswith("[cursor]: not a cursor this export gave")


def test_a_hand_made_logs_link_is_a_400_on_the_page(server):
    raw = base64.urlsafe_b64encode(b"2026-03-01T00:00:00-23:59|1").decode().rstrip("=")
    response = server("/connectors/{connector}/logs/", {"before": raw})
    assert response.status_code == 400 and "this page link is not valid" in response.text


@pytest.mark.parametrize("path", ["/api/actions/connector/a%00b", "/api/usage/connectors/a%00b",
                                  "/usage/connectors/a%00b/", "/connectors/a%00b/logs/"])
def test_a_nul_in_a_connector_id_is_a_404(client, admin_user, path):
    # Through Django's test client: uvicorn answers %00 in a path itself (400), other servers pass it on.
    client.force_login(admin_user)
    assert client.get(path, HTTP_AUTHORIZATION=basic_auth(admin_user)).status_code == 404


def test_a_valid_audit_export_streams_every_record(server):
    start = timezone.now() - timedelta(days=1)
    AuditRecord.objects.bulk_create(
        AuditRecord(at=start + timedelta(seconds=i), actor="exporter", via="system", object_type="connector",
                    object_id=str(i), action="update", changes={"i": i})
        for i in range(4500)  # more than two of the export's chunks of 2,000
    )
    since = (start - timedelta(minutes=1)).astimezone(dt_timezone(timedelta(hours=-5))).isoformat()  # a real offset
    as_json = server("/audit/export.json", {"actor": "exporter", "from": since})
    assert as_json.status_code == 200
    records = json.loads(as_json.text)
    assert len(records) == 4500 and records[0]["object_id"] == "4499" and records[-1]["object_id"] == "0"
    as_csv = server("/audit/export.csv", {"actor": "exporter"})
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert as_csv.status_code == 200 and len(rows) == 4501 and rows[-1][10] == "0"


def test_a_valid_event_export_is_complete(server):
    connector = server.connector
    start = datetime(2026, 3, 1, tzinfo=UTC)
    ExecutionEvent.objects.insert_batch([
        ExecutionEvent(timestamp=start + timedelta(seconds=i), connector_id=connector.pk, connector_name="c",
                       source="api", sub_action="run", outcome="success", duration_ms=1)
        for i in range(2500)
    ])
    response = server("/api/usage/events.ndjson",
                      {"from": "2026-03-01T05:00:00+05:00", "to": TO, "connector": connector.pk})
    assert response.status_code == 200 and response.headers["x-export-complete"] == "true"
    assert len(response.text.splitlines()) == 4 * 2500  # execute-start and execute, each after its action line


# --- the one parser -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("2026-03-01", datetime(2026, 2, 28, 23, tzinfo=UTC)),  # a date alone: its midnight in the zone (Paris)
    ("2026-03-01T14:00:00Z", datetime(2026, 3, 1, 14, tzinfo=UTC)),
    ("2026-03-01T14:00:00+15:59", datetime(2026, 2, 28, 22, 1, tzinfo=UTC)),
    ("2026-03-01 9:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
])
def test_the_parser_gives_utc(raw, expected):
    from zoneinfo import ZoneInfo

    moment = parse_time("from", raw, tz=ZoneInfo("Europe/Paris"))
    assert moment == expected and moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("raw, message", [
    ("2026-03-01T00:00:00+24:00", "the UTC offset is 24 hours or more"),
    ("2026-03-01T00:00:00-16:00", OFFSET_MESSAGE),
    ("2026-02-30", "day is out of range for month"),
    ("9999-12-31", YEAR_MESSAGE),
    ("yesterday", "is not an ISO 8601 date or date-time"),
    ("2026-03-01T00:00:00\ud800", "lone surrogate"),
])
def test_the_parser_names_what_is_wrong(raw, message):
    with pytest.raises(InvalidQueryParam, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse_time("to", raw, tz=UTC, end_of_day=True)
