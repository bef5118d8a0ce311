"""Which spaces exist, kept in memory per process: every request under ``/s/<id>/`` asks, and spaces seldom change.

Saving or deleting a space announces it (connectors/caching/invalidation.py), which drops the list here and in
every other server process; CONNECTOR_CACHE_SECONDS bounds how long the list is trusted in any case.
"""

from __future__ import annotations

from django.conf import settings

from connectors.caching import invalidation
from connectors.caching.expiring_cache import ExpiringCache
from connectors.caching.single_flight import SingleFlight

TOPIC = "space"
_ALL = "all"
_entries = ExpiringCache(max_entries=4, name="space")
_loads = SingleFlight()  # a burst of calls to a new worker loads the list once
_default_stand_in = None  # default_space's unsaved stand-in, made once


def _load() -> dict:
    from connectors.spaces.models import Space

    return {space.id: space for space in Space.objects.order_by("name")}


def all_spaces() -> dict:
    """Every space by id, in name order."""
    spaces = _entries.get(_ALL)
    if spaces is None:
        spaces = _load()
        _entries.put(_ALL, spaces, settings.CONNECTOR_CACHE_SECONDS)
    return spaces


async def aall_spaces() -> dict:
    spaces = _entries.get(_ALL)
    if spaces is None:
        from asgiref.sync import sync_to_async

        spaces = await _loads.run(_ALL, sync_to_async(all_spaces))
    return spaces


def get(space_id: str):
    return all_spaces().get(space_id)


def default_space():
    """The default space without a query: the cached one, else an unsaved stand-in with its id (a request without
    the prefix needs only the id; pages read the name through ``all_spaces``). So a database outage or a
    first request never depends on the list of spaces. Like the cached spaces, it is shared: read-only."""
    global _default_stand_in
    from connectors.spaces.current import DEFAULT_SPACE_ID

    spaces = _entries.get(_ALL)
    space = spaces.get(DEFAULT_SPACE_ID) if spaces else None
    if space is None:
        if _default_stand_in is None:
            from connectors.spaces.models import Space

            _default_stand_in = Space(id=DEFAULT_SPACE_ID, name="Default")
        space = _default_stand_in
    return space


def forget(_key: str = "") -> None:
    _entries.clear()


def announce_change(sender, instance, **kwargs) -> None:
    invalidation.announce(TOPIC, str(instance.pk), using=kwargs.get("using"))


invalidation.register(TOPIC, forget, forget)
