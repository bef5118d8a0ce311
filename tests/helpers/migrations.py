"""Moving the test database to a migration and back, for the tests of a data migration."""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_to(target: tuple[str, str] | None, app: str | None = None):
    """Migrate to ``target`` (None: the latest of ``app``, or of every app when ``app`` is None) and return the
    apps of that state."""
    executor = MigrationExecutor(connection)
    if target:
        targets = [target]
    else:
        targets = [key for key in executor.loader.graph.leaf_nodes() if app is None or key[0] == app]
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps
