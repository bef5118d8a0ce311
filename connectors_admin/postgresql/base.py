"""Django's PostgreSQL backend, with connections that give up within a bound while the database is away, and a
cursor for statements PostgreSQL keeps prepared.

Every connection the app opens goes through ``get_new_connection``: it is refused at once while the database is
known to be down, and its outcome tells connectors_admin/database_availability.py whether the database is up. The
pool's own wait is bounded by ``DATABASE_WAIT_SECONDS`` (settings). Selected as the ENGINE for postgres:// URLs.
"""

import sys
from contextlib import contextmanager

from django.db.backends.postgresql import base, operations
from django.utils.asyncio import async_unsafe

from connectors_admin.database_availability import DatabaseUnavailable, availability


class PreparedStatementCursor(base.ServerBindingCursor):
    """Parameters bound by the server, and every statement run as a prepared statement of its connection: the first
    run on a connection parses and plans it (one more round trip), later runs send only the parameters. psycopg
    keeps the 100 most recent per connection and prepares again whatever the connection lost (a DROP, a rollback)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor, sql, params):
        # A prepared cursor's statement is bound by the server, so it cannot be composed here: its text is logged
        # (and captured by tests) instead of None.
        return super().last_executed_query(cursor, sql, params) or sql


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def get_connection_params(self):
        params = super().get_connection_params()
        if params.get("prepare_threshold") is None:
            # Django's None makes psycopg refuse even an explicit prepare (prepared_cursor's). Django's own cursors
            # bind client-side and never prepare whatever this is, and a server-binding cursor would need this many
            # runs of one statement: nothing else is prepared.
            params["prepare_threshold"] = sys.maxsize
        return params

    def get_new_connection(self, conn_params):
        with self._availability_gate():
            return super().get_new_connection(conn_params)

    @contextmanager
    def _availability_gate(self):
        """Around a connection attempt: refused at once while the database is known to be down, and its outcome
        told to connectors_admin/database_availability.py."""
        try:
            availability.before_connecting()
        except DatabaseUnavailable as exc:
            raise self.Database.OperationalError(str(exc)) from None
        try:
            yield
        except self.Database.Error as exc:  # a refused or timed-out connection, or the pool's PoolTimeout
            availability.failed(exc)
            raise
        except BaseException:
            availability.abandoned()  # not the database's doing: say nothing about it
            raise
        availability.connected()

    async def new_async_connection(self):
        """A psycopg ``AsyncConnection`` in autocommit, made as this backend makes its own connections (refused at
        once while the database is known down, connect_timeout, the outcome told to the availability gate), with
        the session's time zone of Django's; for the event loop's event writer (usage/recording/loop_writer.py).
        Only statements that ask for it are prepared (see ``get_connection_params``)."""
        parameters = self.get_connection_params()
        for django_only in ("cursor_factory", "context"):
            parameters.pop(django_only, None)
        with self._availability_gate():
            connection = await self.Database.AsyncConnection.connect(**parameters, autocommit=True)
            await connection.execute("SELECT set_config('TimeZone', %s, false)", [self.timezone_name])
        return connection

    @async_unsafe
    def prepared_cursor(self):
        """A cursor (Django's wrapper: logged, counted, errors as Django's) whose statements PostgreSQL keeps
        prepared on this connection: for a statement whose text never changes and runs on every call (the event
        writer's, usage/models/events.py), so that it is parsed and planned once per connection, not per run.
        Its parameters must not change the statement's types: send them as text the statement casts."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            return self._prepare_cursor(PreparedStatementCursor(self.connection))
