"""Read replicas (connectors/replicas.py) against a real streaming replica of the local PostgreSQL, which this module
starts (tests/helpers/replica.py): the usage pages and API read from it, writes and the page right after a write
read the primary, a lagging or stopped replica is skipped, and the pages say when their data is old."""

import contextlib
import copy
import os
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors import replicas
from tests.helpers.events import CONNECTOR, record
from tests.helpers.replica import ReplicaUnavailable, StreamingReplica

ALIAS = "replica_1"
LOGS = f"/connectors/{CONNECTOR}/logs/?range=24h"
READS = (
    LOGS,
    f"/usage/connectors/{CONNECTOR}/?range=24h",
    f"/usage/connectors/{CONNECTOR}/events.csv?range=24h",
    f"/api/usage/connectors/{CONNECTOR}?range=24h",
)


def _touches_events(queries) -> bool:
    return any("usage_executionevent" in query["sql"] or "usage_usage" in query["sql"] for query in queries)


@pytest.fixture(scope="module")
def streaming_replica(django_db_setup, django_db_blocker):
    if connection.vendor != "postgresql":
        pytest.skip("streaming replication is PostgreSQL's; CI runs these tests on PostgreSQL")
    default = connections["default"].settings_dict
    primary = {"host": default["HOST"] or "127.0.0.1", "port": int(default["PORT"] or 5432), "user": default["USER"]}
    replica = StreamingReplica(primary)
    try:
        replica.create()
    except ReplicaUnavailable as exc:
        replica.destroy()
        if os.environ.get("REQUIRE_STREAMING_REPLICA"):  # CI: these tests must run, not skip
            pytest.fail(f"no streaming replica on this machine: {exc}")
        pytest.skip(f"no streaming replica on this machine: {exc}")
    settings_dict = copy.deepcopy(default)
    settings_dict.update(HOST="127.0.0.1", PORT=str(replica.port), CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
    settings_dict["OPTIONS"] = {"connect_timeout": 2}
    settings_dict["TEST"] = {**settings_dict.get("TEST", {}), "MIRROR": "default"}
    connections.settings[ALIAS] = settings_dict
    try:
        with override_settings(DATABASE_REPLICAS=[ALIAS], REPLICA_MAX_LAG_SECONDS=3600):
            yield replica
    finally:
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]
        replica.destroy()


@pytest.fixture
def replica(streaming_replica, analyst, client):
    replicas._down_until.clear()
    client.force_login(analyst)
    streaming_replica.wait_for_replay(connection.settings_dict["NAME"])
    yield streaming_replica
    if not (streaming_replica.data / "postmaster.pid").exists():
        streaming_replica.start()
    streaming_replica.query(connection.settings_dict["NAME"], "SELECT pg_wal_replay_resume()")
    connections[ALIAS].close()


def _get(client, url: str, *, replica_up: bool = True):
    # Capturing a connection's queries opens it: not the replica's while it is stopped.
    on_replica = CaptureQueriesContext(connections[ALIAS]) if replica_up else contextlib.nullcontext([])
    with on_replica as on_replica, CaptureQueriesContext(connection) as on_primary:
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    assert response.status_code == 200, (url, response.status_code)
    return body, on_replica, on_primary


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_the_usage_pages_and_api_read_from_a_healthy_replica(replica, client):
    record(timezone.now(), error_message="seen on the replica")
    replica.wait_for_replay(connection.settings_dict["NAME"])
    for url in READS:
        body, on_replica, on_primary = _get(client, url)
        assert _touches_events(on_replica), f"{url} read the event log from the replica"
        assert not _touches_events(on_primary), f"{url} did not read the event log from the primary"
    body, _on_replica, _on_primary = _get(client, LOGS)
    assert b"seen on the replica" in body
    assert b"data-replica-lag" not in body


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_a_page_right_after_its_own_write_reads_the_primary(replica, client):
    record(timezone.now() - timedelta(minutes=5), error_message="replayed")
    replica.wait_for_replay(connection.settings_dict["NAME"])
    replica.query(connection.settings_dict["NAME"], "SELECT pg_wal_replay_pause()")
    record(timezone.now(), error_message="recorded while the replica is paused")

    body, on_replica, _ = _get(client, LOGS)
    assert _touches_events(on_replica)
    assert b"recorded while the replica is paused" not in body  # the replica has not replayed it

    created = client.post("/account/api-keys/", {"name": "just written"})
    assert created.status_code in (200, 302)
    assert replicas.PIN_COOKIE in created.cookies

    body, on_replica, on_primary = _get(client, LOGS)
    assert not _touches_events(on_replica)
    assert _touches_events(on_primary)
    assert b"recorded while the replica is paused" in body
    assert b"just written" in client.get("/account/api-keys/").content


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_a_replica_lagging_beyond_the_limit_is_skipped(replica, client, settings):
    record(timezone.now() - timedelta(minutes=5), error_message="replayed")
    replica.wait_for_replay(connection.settings_dict["NAME"])
    replica.query(connection.settings_dict["NAME"], "SELECT pg_wal_replay_pause()")
    record(timezone.now(), error_message="not replayed yet")
    settings.REPLICA_MAX_LAG_SECONDS = 0  # any lag at all: the replica has WAL it has not replayed
    body, on_replica, on_primary = _get(client, LOGS)
    assert not _touches_events(on_replica)
    assert _touches_events(on_primary)
    assert b"not replayed yet" in body


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_a_replica_stopped_mid_test_is_skipped_and_the_primary_answers(replica, client):
    record(timezone.now(), error_message="before the stop")
    replica.wait_for_replay(connection.settings_dict["NAME"])
    _response, on_replica, _ = _get(client, LOGS)
    assert _touches_events(on_replica)

    replica.stop()
    record(timezone.now(), error_message="after the stop")
    for url in READS:
        body, _on_replica, on_primary = _get(client, url, replica_up=False)
        assert _touches_events(on_primary), url
    body, _, _ = _get(client, LOGS, replica_up=False)
    assert b"before the stop" in body and b"after the stop" in body

    replica.start()  # back: read from it again once it is reachable and caught up
    replicas._down_until.clear()
    replica.wait_for_replay(connection.settings_dict["NAME"])
    _response, on_replica, _ = _get(client, LOGS)
    assert _touches_events(on_replica)


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_a_page_read_from_a_replica_over_a_minute_behind_says_so(replica, client, settings, monkeypatch):
    record(timezone.now(), error_message="replayed")
    replica.wait_for_replay(connection.settings_dict["NAME"])
    real_lag = replicas.replica_lag
    measured = []

    def lag_of_a_minute_and_a_half(alias):
        measured.append(real_lag(alias))  # the replica is reached and measured for real
        return 90.0

    monkeypatch.setattr(replicas, "replica_lag", lag_of_a_minute_and_a_half)
    body, on_replica, _ = _get(client, LOGS)
    assert measured == [0.0]
    assert _touches_events(on_replica)
    assert b"data-replica-lag" in body
    assert b"may be up to 1 minute old" in body


@pytest.mark.django_db
def test_without_replicas_reads_and_writes_use_the_primary_and_no_cookie_is_set(client, analyst):
    client.force_login(analyst)
    record(timezone.now())
    with CaptureQueriesContext(connection) as on_primary:
        assert client.get(LOGS).status_code == 200
    assert _touches_events(on_primary)
    assert replicas.PIN_COOKIE not in client.post("/account/api-keys/", {"name": "k"}).cookies


def test_the_notice_names_the_age_only_past_a_minute():
    request = RequestFactory().get("/")
    request.replica_state = {"lag": 59.0}
    assert replicas.replica_notice(request) == {"replica_lag_notice": ""}
    request.replica_state = {"lag": 600.0}
    assert "up to 10 minutes old" in replicas.replica_notice(request)["replica_lag_notice"]
