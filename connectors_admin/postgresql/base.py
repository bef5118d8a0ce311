"""Django's PostgreSQL backend, with connections that give up within a bound while the database is away.

Every connection the app opens goes through ``get_new_connection``: it is refused at once while the database is
known to be down, and its outcome tells connectors_admin/database_availability.py whether the database is up. The
pool's own wait is bounded by ``DATABASE_WAIT_SECONDS`` (settings). Selected as the ENGINE for postgres:// URLs.
"""

from django.db.backends.postgresql import base

from connectors_admin.database_availability import DatabaseUnavailable, availability


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        try:
            availability.before_connecting()
        except DatabaseUnavailable as exc:
            raise self.Database.OperationalError(str(exc)) from None
        try:
            connection = super().get_new_connection(conn_params)
        except self.Database.Error as exc:  # a refused or timed-out connection, or the pool's PoolTimeout
            availability.failed(exc)
            raise
        except BaseException:
            availability.abandoned()  # not the database's doing: say nothing about it
            raise
        availability.connected()
        return connection
