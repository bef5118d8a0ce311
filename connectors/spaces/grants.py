"""The roles a user holds per space, read once per user object.

``space_permissions(user)`` maps a space id (None: every space) to the permission codenames the user's grants give
there. It is kept on the user object, like Django's own permission cache: an API caller's user object lives in
the credential cache (connectors/api/auth.py), so checking a permission in a space costs no query on the
execution path; a page request reads it once.
"""

from __future__ import annotations

from django.db.models import Q

from connectors.spaces.models import SpaceRoleGrant

_CACHE_ATTRIBUTE = "_space_perm_cache"


def _load(user) -> dict[str | None, frozenset[str]]:
    if not getattr(user, "pk", None) or not user.is_active:
        return {}
    rows = (
        SpaceRoleGrant.objects.filter(Q(user_id=user.pk) | Q(group__user=user.pk))
        .values_list("space_id", "role__permissions__content_type__app_label", "role__permissions__codename")
    )
    permissions: dict[str | None, set[str]] = {}
    for space_id, app_label, codename in rows:
        held = permissions.setdefault(space_id, set())
        if codename:
            held.add(f"{app_label}.{codename}")
    return {space_id: frozenset(held) for space_id, held in permissions.items()}


def space_permissions(user) -> dict[str | None, frozenset[str]]:
    cached = getattr(user, _CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = _load(user)
        if getattr(user, "pk", None):
            setattr(user, _CACHE_ATTRIBUTE, cached)
    return cached


def is_loaded(user) -> bool:
    return hasattr(user, _CACHE_ATTRIBUTE)


def forget(user) -> None:
    if hasattr(user, _CACHE_ATTRIBUTE):
        delattr(user, _CACHE_ATTRIBUTE)
