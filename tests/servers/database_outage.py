"""A database outage for a test: every connection refused (and those open ended) until ``end()``.

On PostgreSQL it is real: the test database is switched to ``ALLOW_CONNECTIONS false`` and its backends are
terminated, so the app sees what a stopped server gives it (the server itself and the other databases on it keep
running: other test runs share them). SQLite has no server to stop; there every cursor the app asks for raises
the OperationalError SQLite raises for a database file it cannot open, which is where a real outage surfaces.
"""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper

from connectors_admin.database_availability import availability


class DatabaseOutage:
    def __init__(self, monkeypatch) -> None:
        from django.db import connection

        self._connection = connection
        self._monkeypatch = monkeypatch
        self._params = {}
        if connection.vendor == "postgresql":
            self._params = {key: value for key, value in connection.get_connection_params().items()
                            if key in ("host", "port", "user", "password")}
        self.down = False

    def start(self) -> None:
        self.down = True
        if self._connection.vendor == "postgresql":
            self._switch(False)
        else:
            def unreachable(wrapper, *args, **kwargs):
                raise OperationalError("unable to open database file")

            self._monkeypatch.setattr(BaseDatabaseWrapper, "_cursor", unreachable)

    def end(self) -> None:
        if not self.down:
            return
        self.down = False
        if self._connection.vendor == "postgresql":
            self._switch(True)
            # Every pooled connection was ended by the outage; what runs next gets a fresh pool, and connects
            # at once rather than after the second the app waits before trying a database it found down.
            self._connection.close()
            self._connection.close_pool()
            availability.reset()
        else:
            self._monkeypatch.undo()

    def _switch(self, reachable: bool) -> None:
        import psycopg

        name = self._connection.settings_dict["NAME"]
        with psycopg.connect(dbname="postgres", autocommit=True, **self._params) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if reachable else "false"}')
            if not reachable:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                              "AND pid <> pg_backend_pid()", (name,))


def outage_for_a_test():
    """The body of a test module's fixture (``yield from outage_for_a_test()``): the outage ends with the test."""
    patcher = pytest.MonkeyPatch()
    outage = DatabaseOutage(patcher)
    yield outage
    outage.end()
    patcher.undo()
