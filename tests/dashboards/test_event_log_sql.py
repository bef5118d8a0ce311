"""The SQL the app runs on the event log names its connector and its time: on PostgreSQL the time lets the planner
read only the day partitions concerned (usage/models/partitions.py), and the connector is the distribution column
that keeps a query on one shard of a distributed PostgreSQL such as Citus (docs/SCALING.md). Checked on the SQL
Django actually sends, for every path that reads or writes one connector's events."""

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.helpers.events import CONNECTOR, build_event, record
from usage.recording.spool import store_once

EVENT_TABLE = '"usage_executionevent"'


def event_log_queries(captured) -> list[str]:
    return [query["sql"] for query in captured if EVENT_TABLE in query["sql"]]


def names_connector(sql: str) -> bool:
    if sql.lstrip().upper().startswith("WITH") or " INSERT INTO " in f" {sql} ":
        if re.search(rf'INSERT INTO {EVENT_TABLE} \([^)]*"connector_id"', sql):
            return True
    where = sql.split(" WHERE ", 1)[1] if " WHERE " in sql else ""
    return bool(re.search(rf'{EVENT_TABLE}\."connector_id" (=|IN) ', where))


def names_time(sql: str) -> bool:
    """A time condition, or the newest events first with a LIMIT (partitions are read newest first and the scan
    stops at the limit)."""
    if re.search(rf'INSERT INTO {EVENT_TABLE} \(', sql):
        return True
    if re.search(rf'ORDER BY {EVENT_TABLE}\."timestamp" DESC.* LIMIT \d+', sql):
        return True
    where = sql.split(" WHERE ", 1)[1] if " WHERE " in sql else ""
    return bool(re.search(rf'{EVENT_TABLE}\."timestamp" (=|<|>|<=|>=|IN|BETWEEN) ', where))


@pytest.mark.django_db
def test_every_query_on_one_connectors_events_names_the_connector_and_the_time(client, admin_user):
    client.force_login(admin_user)
    now = timezone.now()
    paths = []
    with CaptureQueriesContext(connection) as captured:
        events = [record(now - timedelta(minutes=n), outcome="failure" if n % 3 else "success") for n in range(60)]
        store_once([build_event(events[0].timestamp, uid=events[0].uid), build_event(now)])
        logs = f"/connectors/{CONNECTOR}/logs/"
        first = client.get(logs + "?range=24h")
        paths += [
            logs + "?range=24h",
            logs + "?range=90d&outcome=failure",
            logs + "?range=24h&q=upstream",
            logs + "?range=24h&user=alice&model=gpt-4o",
            f"/usage/connectors/{CONNECTOR}/?range=90d",
            f"/usage/connectors/{CONNECTOR}/events.csv?range=90d",
            f"/api/usage/connectors/{CONNECTOR}?range=90d",
            "/api/usage/events.ndjson?" + urlencode(
                {"connector": CONNECTOR, "from": (now - timedelta(days=1)).isoformat(), "to": now.isoformat()}),
        ]
        older = re.search(rb'href="([^"]*before=[^"]*)"', first.content).group(1).decode().replace("&amp;", "&")
        detail = re.search(rb'href="(/connectors/[^"]*/logs/\d+/[^"]*)"', first.content).group(1).decode()
        paths += [older, detail.replace("&amp;", "&")]
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, path
            if response.streaming:
                b"".join(response.streaming_content)
    queries = event_log_queries(captured)
    assert len(queries) >= len(paths)
    for sql in queries:
        assert names_connector(sql), f"a query on the event log without its connector: {sql[:400]}"
        assert names_time(sql), f"a query on the event log without its time: {sql[:400]}"


def test_the_check_itself_tells_the_two_apart():
    assert names_connector(f'SELECT 1 FROM {EVENT_TABLE} WHERE ({EVENT_TABLE}."connector_id" = \'c\')')
    assert not names_connector(f'SELECT 1 FROM {EVENT_TABLE} WHERE ({EVENT_TABLE}."user_id" = 1)')
    assert not names_time(f'SELECT 1 FROM {EVENT_TABLE} WHERE ({EVENT_TABLE}."id" = 1)')
