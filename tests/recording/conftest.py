"""Fixtures of the event-log recording tests."""

import contextlib

import pytest

from connectors_admin.database_availability import availability
from tests.servers.tcp_proxy import TcpProxy


@pytest.fixture
def database_behind_proxy(transactional_db):
    """The app's PostgreSQL connections, in every thread, go through a proxy the test can stop and start."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the outage is made on PostgreSQL; SQLite has no server to lose")
    settings_dict = connection.settings_dict  # the one dict every thread's connection is made from
    original = settings_dict["HOST"], settings_dict["PORT"]
    proxy = TcpProxy(original[0] or "127.0.0.1", int(original[1] or 5432)).start()
    connection.close()
    connection.close_pool()  # the next connection makes a pool that connects through the proxy
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", str(proxy.port)
    try:
        yield proxy
    finally:  # the next tests find PostgreSQL where it was, whatever happened to the proxy
        if not proxy.running:
            with contextlib.suppress(OSError):
                proxy.start()  # what still holds a connection through it closes it cleanly
        connection.close()
        connection.close_pool()
        settings_dict["HOST"], settings_dict["PORT"] = original
        proxy.stop()
        availability.reset()
