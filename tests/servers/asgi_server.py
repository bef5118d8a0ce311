"""The project served by a real uvicorn over a real socket, in a background thread of the test process.

pytest-django's ``live_server`` is a threaded WSGI server: it cannot serve async streaming views as they stream,
and Django's test clients buffer streamed responses. Tests that must see bytes arrive over time, or close a
connection mid-stream, use this instead (tests/conftest.py loads its fixtures for every test module)::

    def test_something(asgi_live_server):
        httpx.get(f"{asgi_live_server.url}/api/...")

``asgi_live_server`` needs the ``transactional_db`` fixture (it requests it), so that the server's threads see
the test's committed rows. With SQLite the test database is a shared-cache in-memory database, which every
connection of this process shares; with PostgreSQL it is the usual test database. Both work unchanged.

The server's lifespan is off; the fixture starts the event writer for each test instead (see asgi_live_server).
Because the server runs in this process, settings overrides (``settings`` fixture) and monkeypatches apply to it.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import pytest
import uvicorn


@dataclass
class AsgiServer:
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_asgi_server(app: str = "connectors_admin.asgi:application", host: str = "127.0.0.1") -> AsgiServer:
    """Start uvicorn on a free port in a daemon thread; returns once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="asgi-test-server")
    thread.start()
    # uvicorn sets ``started`` once it listens; the thread ending first means it could not start.
    while not server.started:
        if failure or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start: {failure[0] if failure else 'thread ended'}")
        thread.join(0.01)
    return AsgiServer(host=host, port=port, server=server, thread=thread)


@pytest.fixture(scope="session")
def asgi_server_session():
    """One uvicorn for the whole session (started on first use). Use ``asgi_live_server`` in tests."""
    server = start_asgi_server()
    yield server
    server.stop()


@pytest.fixture
def asgi_live_server(transactional_db, asgi_server_session):
    """The project under uvicorn, for one test, with a database the server's threads can see.

    Events go through the process's group-commit event writer, as under a production server (whose lifespan
    starts it); it runs for this test only, so that tests using Django's test client inside a rolled-back
    transaction keep writing their events in their own connection.
    """
    from usage.recording import writer as recording
    recording.start_event_writer()
    yield asgi_server_session
    # A test that made an outage has ended it by now; what it spooled is replayed before the writer stops. The spool
    # folder lasts the whole session, so a file left in it would be replayed by the next test's writer while that
    # test runs (on SQLite, a write from another thread then fails that test with "database table is locked").
    writer = recording._writer
    if writer is not None and writer.events_spooled:
        assert writer.wait_for_replay(60), f"the spool was not replayed after the test: {writer.health()}"
    assert recording.stop_event_writer(), "events were left unwritten"
    # Budget settlements run on after the last answer (connectors/outbound/detached_tasks.py): let them end here, or
    # one would write its counters into the next test's database.
    from connectors.outbound.detached_tasks import settlements_running

    deadline = time.monotonic() + 10
    while settlements_running() and time.monotonic() < deadline:
        time.sleep(0.01)


class RecordedEvents:
    """Counts execution events as they are written, from any thread, so a test can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._condition = threading.Condition()

    def wrap(self, insert_batch):
        def counting(manager, events):
            created = insert_batch(manager, events)
            with self._condition:
                self.count += len(created)
                self._condition.notify_all()
            return created

        return counting

    def wait_for(self, count: int, timeout: float = 10) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self.count >= count, timeout):
                raise AssertionError(f"{self.count} events recorded within {timeout} s, expected {count}")
        # And what executions do after answering (settling budget counters, connectors/outbound/detached_tasks.py).
        from connectors.outbound.detached_tasks import settlements_running

        deadline = time.monotonic() + timeout
        while settlements_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not settlements_running(), f"{settlements_running()} executions still settling after {timeout} s"


@pytest.fixture
def recorded_events(monkeypatch) -> RecordedEvents:
    """Wait for the server to record events: ``recorded_events.wait_for(1)`` (no polling of the database).

    It wraps ExecutionEvent.objects.insert_batch, where every path of usage.recording.writer.record_execution ends.
    """
    from usage.models.events import ExecutionEventManager

    counter = RecordedEvents()
    monkeypatch.setattr(ExecutionEventManager, "insert_batch", counter.wrap(ExecutionEventManager.insert_batch))
    return counter
