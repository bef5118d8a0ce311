"""Running blocking database work from async code without queueing behind Django's one shared sync thread."""

from asgiref.sync import sync_to_async
from django.db import connection


def in_a_worker_thread(function):
    """``function`` made awaitable. PostgreSQL: in any worker thread, so counters never queue behind the shared
    ``sync_to_async`` thread, giving the thread's connection back to the pool when done (a worker thread would
    otherwise keep one connection each). SQLite: on that shared thread, since SQLite has a single writer and its
    in-memory test database one connection per thread."""
    if connection.vendor == "sqlite":
        return sync_to_async(function, thread_sensitive=True)

    def run_and_release(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return sync_to_async(run_and_release, thread_sensitive=False)
