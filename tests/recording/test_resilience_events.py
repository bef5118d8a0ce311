"""no execution loses its event, under poisoned strings, hang-ups and database outages.

Against the app under uvicorn (tests/servers/asgi_server.py) with the production event writer and its spool, and the
OpenAI-shaped upstream (tests/servers/fake_openai.py), on SQLite and on PostgreSQL (CI runs both).
"""

import asyncio
import json
import socket
import threading

import httpx
import pytest
from django.db import OperationalError

from connectors.api import kibana, openai_compat
from connectors_admin.database_availability import availability
from tests.conftest import basic_auth
from tests.helpers.execute import execute_path, post_at_once, run_bytes
from usage.models import ExecutionEvent, UsageRollup
from usage.models.events import ExecutionEventManager
from usage.recording import writer as recording
from usage.recording.spool import EventSpool

HELLO = json.dumps({"messages": [{"role": "user", "content": "Hello"}]})
RUN = run_bytes("Hello")
POISONED_SUB_ACTION = b'{"params": {"subAction": "\\ud800", "subActionParams": {}}}'


@pytest.fixture
def headers(operator):
    return {"Content-Type": "application/json", "kbn-xsrf": "true", "Authorization": basic_auth(operator)}


def writer() -> recording.EventWriter:
    assert recording._writer is not None, "the server's event writer is not started"
    return recording._writer


# --- 1. poisoned strings --------------------------------------------------------------------------------------


def test_a_lone_surrogate_sub_action_is_recorded_and_the_writer_keeps_every_other_event(
    asgi_live_server, make_connector, fake_openai, headers
):
    connector = make_connector(api_url=fake_openai.url("ok"))
    bodies = [run_bytes(f"call {i}") for i in range(60)]
    bodies[30] = POISONED_SUB_ACTION

    responses = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), bodies, headers))

    assert [r.status for r in responses] == [200] * 60
    poisoned = json.loads(responses[30].body)
    # Kibana's envelope puts the unknown sub-action in service_message (docs/KIBANA.md 4.2).
    assert poisoned["status"] == "error" and "is not registered" in poisoned["service_message"]
    # Group commit: every caller was answered after its event was stored.
    events = ExecutionEvent.objects.filter(connector_id=str(connector.pk))
    assert events.count() == 60
    assert events.filter(outcome="success").count() == 59
    bad = events.get(outcome="failure")
    assert bad.sub_action == "\ufffd" and "\ufffd" in bad.error_message
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 60
    assert writer().running and writer().events_lost == 0


@pytest.mark.parametrize("scenario, stored_model", [("model-surrogate", "gpt-\ufffd"), ("model-nul", "gpt-\ufffd")])
def test_a_model_name_the_database_cannot_store_is_made_storable(asgi_live_server, make_connector, fake_openai,
                                                                 headers, scenario, stored_model):
    connector = make_connector(api_url=fake_openai.url(scenario))

    responses = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN] * 3, headers))

    assert {json.loads(r.body)["status"] for r in responses} == {"ok"}
    events = ExecutionEvent.objects.filter(connector_id=str(connector.pk))
    assert [e.response_model for e in events] == [stored_model] * 3
    assert {e.total_tokens > 0 for e in events} == {True}
    assert writer().events_lost == 0


@pytest.mark.django_db(transaction=True)
def test_an_event_the_database_refuses_is_split_off_logged_and_its_caller_not_told_it_was_committed(caplog):
    refused = ExecutionEvent(connector_id="refused", connector_name="x", source="api", sub_action="run",
                             outcome="success")
    original = ExecutionEventManager.insert_batch

    def refusing(manager, events):
        if any(event.connector_id == "refused" for event in events):
            raise ValueError("the database refuses this one")
        return original(manager, events)

    good = [ExecutionEvent(connector_id="good", connector_name="x", source="api", sub_action="run",
                           outcome="success") for _ in range(4)]
    writer = recording.EventWriter()
    futures = [writer.submit(event) for event in (good[0], good[1], refused, good[2], good[3])]
    try:
        ExecutionEventManager.insert_batch = refusing
        writer.start()
        assert writer.flush(timeout=30)
    finally:
        ExecutionEventManager.insert_batch = original
        writer.stop(timeout=10)

    assert [f.result() for i, f in enumerate(futures) if i != 2] == [recording.COMMITTED] * 4
    with pytest.raises(recording.EventNotRecorded):
        futures[2].result()
    assert writer.events_lost == 1 and '"connector_id": "refused"' in caplog.text
    assert ExecutionEvent.objects.filter(connector_id="good").count() == 4


class WriterKilled(BaseException):
    """Not an Exception: what would end a thread (the writer's catch-all lets it through)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread it kills
def test_a_dead_writer_shows_in_healthz_and_is_restarted_without_losing_its_batch(
    asgi_live_server, make_connector, fake_openai, headers, monkeypatch
):
    connector = make_connector(api_url=fake_openai.url("ok"))
    original = recording.EventWriter._write
    killed = threading.Event()

    def dying_write(self, batch):
        if not killed.is_set():
            killed.set()
            raise WriterKilled()
        return original(self, batch)

    monkeypatch.setattr(recording.EventWriter, "_write", dying_write)
    first = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN], headers))[0]
    assert json.loads(first.body)["status"] == "ok"
    # The batch the dying thread held went to the spool rather than nowhere.
    assert writer().events_spooled == 1 and writer().events_lost == 0
    writer()._thread.join(10)
    health = httpx.get(f"{asgi_live_server.url}/healthz")
    assert health.status_code == 503 and health.json()["status"] == "failing"

    second = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN], headers))[0]

    assert json.loads(second.body)["status"] == "ok"
    assert writer().restarts == 1 and writer().running
    assert writer().flush(timeout=30)
    wait_for_replay(timeout=30)
    assert ExecutionEvent.objects.filter(connector_id=str(connector.pk)).count() == 2
    health = httpx.get(f"{asgi_live_server.url}/healthz").json()
    assert health["status"] == "ok" and health["event_writer"]["restarts"] == 1


def wait_for_replay(timeout: float) -> None:
    """Until the spool is empty and the writer back on the database."""
    current = writer()
    assert current.wait_for_replay(timeout), f"the spool was not replayed within {timeout} s: {current.health()}"


# --- 2. callers that hang up ------------------------------------------------------------------------------------


def hang_up_after_sending(port: int, path: str, body: bytes, headers: dict) -> None:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(head.encode() + body)
    return client


@pytest.mark.parametrize("endpoint", ["_execute", "openai"])
def test_a_caller_that_hangs_up_on_a_non_streamed_call_still_gets_its_event(
    asgi_live_server, recorded_events, make_connector, fake_openai, headers, monkeypatch, endpoint
):
    """The provider receives the call, the caller hangs up and the server cancels its request; only then does the
    provider answer. The call completes and is recorded with the provider's usage."""
    connector = make_connector(api_url=fake_openai.url("gated"))
    caller_cancelled = threading.Event()
    module, name = (kibana, "execute") if endpoint == "_execute" else (openai_compat, "execute_passthrough")
    original = getattr(module, name)

    async def observed(*args, **kwargs):
        try:
            return await original(*args, **kwargs)
        except asyncio.CancelledError:
            caller_cancelled.set()
            raise

    monkeypatch.setattr(module, name, observed)
    if endpoint == "_execute":
        path, body = execute_path(connector), RUN
    else:
        path, body = f"/api/openai/{connector.pk}/v1/chat/completions", json.dumps(json.loads(HELLO)).encode()

    client = hang_up_after_sending(asgi_live_server.port, path, body, headers)
    fake_openai.wait_for_requests(1)
    client.close()
    assert caller_cancelled.wait(30), "the server did not cancel the request of the caller that left"
    fake_openai.gate.set()

    recorded_events.wait_for(1, timeout=30)
    event = ExecutionEvent.objects.get()
    assert event.outcome == "success" and event.total_tokens > 0 and event.upstream_status == 200
    assert len(fake_openai.requests) == 1


# --- 3. database outages: the spool -----------------------------------------------------------------------------


def outage(monkeypatch, state: dict):
    """The database refuses every write while ``state["down"]``: what a connection to a stopped server raises."""
    original = ExecutionEventManager.insert_batch

    def insert_batch(manager, events):
        if state["down"]:
            raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")
        return original(manager, events)

    monkeypatch.setattr(ExecutionEventManager, "insert_batch", insert_batch)


@pytest.mark.django_db(transaction=True)
def test_events_spooled_during_an_outage_survive_a_restart_and_are_stored_exactly_once(tmp_path, monkeypatch):
    state = {"down": True}
    outage(monkeypatch, state)
    first = recording.EventWriter(spool=EventSpool(tmp_path)).start()
    events = [ExecutionEvent(connector_id="spooled", connector_name="x", source="api", sub_action="run",
                             outcome="success", prompt_tokens=2, completion_tokens=3) for _ in range(25)]
    futures = [first.submit(event) for event in events]
    assert first.flush(timeout=30)
    assert {f.result() for f in futures} == {recording.SPOOLED}  # durable before the callers are answered
    assert first.stop(timeout=10)  # a TERM during the outage: nothing is lost, all is on disk
    spooled = b"".join(path.read_bytes() for path in tmp_path.glob("events-*.jsonl"))
    assert spooled.count(b"\n") == 25
    assert not ExecutionEvent.objects.filter(connector_id="spooled").exists()

    # A copy of the spool, as if a replay had committed and then crashed before removing its file.
    (tmp_path / "events-copy-0.jsonl").write_bytes(spooled)
    state["down"] = False
    second = recording.EventWriter(spool=EventSpool(tmp_path)).start()
    try:
        assert second.wait_for_replay(30)
    finally:
        second.stop(timeout=10)

    stored = ExecutionEvent.objects.filter(connector_id="spooled")
    assert stored.count() == 25
    assert {e.uid for e in stored} == {e.uid for e in events}
    rollup = UsageRollup.objects.get(connector_id="spooled")
    assert (rollup.requests, rollup.total_tokens) == (25, 125)


@pytest.mark.django_db(transaction=True)
def test_another_process_never_claims_a_spool_file_before_its_writer_holds_it(tmp_path, monkeypatch):
    """Several workers share EVENT_SPOOL_DIR. Seen under load (bench.writer_rate, 4 processes): a replayer claimed
    a spool file between its creation and its writer's lock, replayed it empty and removed it; the writer then
    filled a file with no name. The file now gets its name only once locked."""
    from usage.recording import spool as spool_module

    writing, other = EventSpool(tmp_path), EventSpool(tmp_path)
    claimed_meanwhile = []
    real_flock = spool_module.fcntl.flock

    def flock_after_another_replayer_looked(handle, operation):
        if operation == spool_module.fcntl.LOCK_EX:  # the writer, about to lock its new file
            taken = other.claim()
            claimed_meanwhile.extend(path for path, _handle in taken)
            spool_module.release(taken)
        return real_flock(handle, operation)

    monkeypatch.setattr(spool_module.fcntl, "flock", flock_after_another_replayer_looked)
    events = [ExecutionEvent(connector_id="raced", connector_name="x", source="api", sub_action="run",
                             outcome="success", prompt_tokens=1, completion_tokens=1) for _ in range(3)]
    writing.append(events)
    monkeypatch.setattr(spool_module.fcntl, "flock", real_flock)

    assert claimed_meanwhile == []
    assert other.claim() == []  # locked by its writer
    (path, handle), = writing.claim()
    assert path.exists() and path.name.startswith("events-")
    assert spool_module.replay_file(path, handle) == 3
    assert ExecutionEvent.objects.filter(connector_id="raced").count() == 3
    assert list(tmp_path.iterdir()) == []


def test_calls_answered_during_an_outage_are_all_recorded_when_the_database_is_back(
    asgi_live_server, make_connector, fake_openai, headers, monkeypatch
):
    connector = make_connector(api_url=fake_openai.url("ok"))
    asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN], headers))  # cached now
    state = {"down": True}
    outage(monkeypatch, state)

    responses = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN] * 40, headers))

    assert {json.loads(r.body)["status"] for r in responses} == {"ok"}
    assert writer().events_spooled == 40
    assert httpx.get(f"{asgi_live_server.url}/healthz").json()["status"] == "degraded"
    state["down"] = False
    wait_for_replay(timeout=30)
    assert ExecutionEvent.objects.filter(connector_id=str(connector.pk)).count() == 41
    assert httpx.get(f"{asgi_live_server.url}/healthz").json()["status"] == "ok"


# --- 4. a connector cache miss during an outage -----------------------------------------------------------------


@pytest.fixture
def connector_reads_fail(monkeypatch):
    """Reading a connector fails as it does when the database is unreachable (the rest of the database works)."""
    from connectors.models import Connector

    class Unreachable:
        def filter(self, *args, **kwargs):
            return self

        async def afirst(self):
            raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(Connector, "objects", Unreachable())


def test_a_cache_miss_during_an_outage_is_a_503_envelope_with_retry_and_is_recorded(
    asgi_live_server, recorded_events, make_connector, fake_openai, headers, connector_reads_fail
):
    connector = make_connector(api_url=fake_openai.url("ok"))

    response = httpx.post(f"{asgi_live_server.url}{execute_path(connector)}", content=RUN, headers=headers)

    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    envelope = response.json()
    assert envelope["status"] == "error" and envelope["retry"] is True
    assert envelope["connector_id"] == connector.pk and "database is unavailable" in envelope["service_message"]
    recorded_events.wait_for(1)
    event = ExecutionEvent.objects.get()
    assert event.connector_id == connector.pk and event.outcome == "failure"
    assert event.error_message == envelope["service_message"]
    assert not fake_openai.requests


def test_a_cache_miss_during_an_outage_is_an_openai_503_on_the_openai_endpoint(
    asgi_live_server, recorded_events, make_connector, fake_openai, api_key_header, connector_reads_fail
):
    connector = make_connector(api_url=fake_openai.url("ok"))

    response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions",
                          content=HELLO, headers=api_key_header)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    recorded_events.wait_for(1)
    assert ExecutionEvent.objects.get().source == "openai_api"


@pytest.fixture
def api_key_header(operator):
    """Basic credentials work for the OpenAI endpoint too; they are verified (and cached) without the connector."""
    return {"Authorization": basic_auth(operator), "Content-Type": "application/json"}


def test_healthz_reports_the_event_writer(asgi_live_server):
    health = httpx.get(f"{asgi_live_server.url}/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["event_writer"]["running"] is True
    assert set(body["event_writer"]) >= {"restarts", "queued", "database_reachable", "spool_files", "events_lost"}


# --- 3 (cont.): a real PostgreSQL outage, and a process killed with SIGKILL --------------------------------------


@pytest.fixture
def postgresql_outage():
    """Make the test database refuse every connection (and end those it has) until the fixture's ``end()``.

    Only this test database is affected: the server and the other databases on it keep running.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a real database outage is made on PostgreSQL; the SQLite run covers the same code above")
    import psycopg

    name = connection.settings_dict["NAME"]
    params = {key: value for key, value in connection.get_connection_params().items()
              if key in ("host", "port", "user", "password")}

    def switch(reachable: bool) -> None:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if reachable else "false"}')
            if not reachable:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                              "AND pid <> pg_backend_pid()", (name,))

    class Outage:
        def start(self):
            switch(False)

        def end(self):
            switch(True)

    outage = Outage()
    yield outage
    switch(True)
    availability.reset()  # what runs next connects at once, not after the second the app waits after an outage
    # Every connection of the pool was ended by the outage; the tests after this one get a fresh pool.
    connection.close()
    connection.close_pool()


def test_calls_answered_during_a_real_postgresql_outage_are_recorded_once_it_is_over(
    asgi_live_server, make_connector, fake_openai, headers, postgresql_outage
):
    from django.db import connection

    connector = make_connector(api_url=fake_openai.url("ok"))
    asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN], headers))  # cached now
    postgresql_outage.start()

    responses = asyncio.run(post_at_once(asgi_live_server.port, execute_path(connector), [RUN] * 30, headers))

    assert {json.loads(r.body)["status"] for r in responses} == {"ok"}
    assert writer().events_spooled == 30 and writer().outage
    postgresql_outage.end()
    wait_for_replay(timeout=120)
    # The test's own connection was ended with the others, and so were the pool's idle ones, which psycopg finds
    # out only when one is next used: read through a new pool (README "Guarantees" says what the app does).
    connection.close()
    connection.close_pool()
    assert ExecutionEvent.objects.filter(connector_id=str(connector.pk)).count() == 31
    assert sum(UsageRollup.objects.filter(connector_id=str(connector.pk)).values_list("requests", flat=True)) == 31


SPOOLING_PROCESS = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")
import django
django.setup()
from django.db import OperationalError
from usage.recording import writer as recording
from usage.models import ExecutionEvent
from usage.models.events import ExecutionEventManager
from usage.recording.spool import EventSpool

def unreachable(manager, events):
    raise OperationalError("the database is away")

ExecutionEventManager.insert_batch = unreachable
writer = recording.EventWriter(spool=EventSpool(sys.argv[1])).start()
futures = [writer.submit(ExecutionEvent(connector_id="killed", connector_name="x", source="api", sub_action="run",
                                        outcome="success", prompt_tokens=1, completion_tokens=1)) for _ in range(12)]
print(sorted({future.result(timeout=30) for future in futures}), flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.django_db(transaction=True)
def test_events_spooled_by_a_process_killed_with_sigkill_are_replayed_by_the_next(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from django.conf import settings

    root = settings.BASE_DIR
    process = subprocess.Popen([sys.executable, "-c", SPOOLING_PROCESS, str(tmp_path)], cwd=root,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert process.stdout.readline().strip() == "['spooled']"  # its callers would have been answered now
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    replayer = recording.EventWriter(spool=EventSpool(tmp_path)).start()
    try:
        assert replayer.wait_for_replay(60)
    finally:
        replayer.stop(timeout=10)
    assert ExecutionEvent.objects.filter(connector_id="killed").count() == 12


# --- a failed write, handled the same way on every path ---------------------------------------------------------


@pytest.mark.parametrize("path, body", [("_execute", RUN), ("openai", HELLO.encode())])
def test_when_the_event_cannot_be_written_the_caller_still_gets_its_answer_and_the_event_is_logged(
    client, operator, make_connector, fake_openai, monkeypatch, caplog, path, body
):
    """Without a writer (Django's test client), an event is written in the caller's request; the database
    refusing it must cost the caller nothing, and the event must be in the log. (Streams end their record the same
    way, through ExecutionRecord; Django's test client cannot consume a live async stream, see test_streaming.py.)"""
    connector = make_connector(api_url=fake_openai.url("ok"))

    def refused(manager, events):
        raise OperationalError("the database refused the write")

    monkeypatch.setattr(ExecutionEventManager, "insert_batch", refused)
    url = (f"/api/openai/{connector.pk}/v1/chat/completions" if path == "openai"
           else f"/api/actions/connector/{connector.pk}/_execute")

    response = client.post(url, body, content_type="application/json", HTTP_AUTHORIZATION=basic_auth(operator),
                           HTTP_KBN_XSRF="true")

    assert response.status_code == 200 and b"You said" in response.content
    assert f'"connector_id": "{connector.pk}"' in caplog.text and "the database refused the write" in caplog.text
