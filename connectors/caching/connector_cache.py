"""Stored connectors kept in memory per process for the execution path (``connectors.lookup.afind``).

Looking a connector up costs a hop to a thread, a pooled connection and a query for every execution: most of
what the gateway adds to a call. A connector found once is kept here until it changes: saving or deleting one
announces it (connectors/caching/invalidation.py), which drops it here at once and, on PostgreSQL, in every other server
process as soon as the change is committed. ``CONNECTOR_CACHE_SECONDS`` bounds how long an entry is trusted in any
case (the backstop when a notice cannot arrive: SQLite with several processes, a listener reconnecting); 0 turns
the cache off. Ids that match no connector are not cached, so a connector created elsewhere is found at once.

The pages that show and edit connectors read the database directly (``connectors.lookup.find``).
"""

from __future__ import annotations

from django.conf import settings

from connectors.caching import invalidation
from connectors.caching.expiring_cache import ExpiringCache

TOPIC = "connector"

_entries = ExpiringCache(max_entries=10_000, name="connector")  # connector id -> Connector


def get(connector_id: str):
    return _entries.get(connector_id)


def put(connector) -> None:
    _entries.put(str(connector.pk), connector, settings.CONNECTOR_CACHE_SECONDS)


def forget(connector_id: str) -> None:
    _entries.drop(connector_id)


def forget_everything() -> None:
    _entries.clear()


def announce_change(sender, instance, **kwargs) -> None:
    """post_save / post_delete of a Connector: drop it here and in every other process."""
    invalidation.announce(TOPIC, str(instance.pk), using=kwargs.get("using"))


invalidation.register(TOPIC, forget, forget_everything)
