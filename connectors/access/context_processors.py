"""What every page knows of spaces: the current one, the ones the user may switch to (the header's switcher), and
``perms`` answered in the current space (Django's own ``perms`` knows only roles held in every space)."""

from __future__ import annotations

from connectors.access.policy import holds_a_role_in, holds_app_permission, may
from connectors.spaces import directory


class SpacePerms:
    """``{% if perms.connectors.view_connector %}`` and ``{% if "app.codename" in perms %}``, in the current space,
    decided by connectors/access/policy.py."""

    def __init__(self, user):
        self.user = user

    def __getitem__(self, app_label: str) -> AppPerms:
        return AppPerms(self.user, app_label)

    def __contains__(self, permission: str) -> bool:
        if "." not in permission:
            return bool(self[permission])
        return may(self.user, permission)

    def __iter__(self):
        raise TypeError("SpacePerms is not iterable.")


class AppPerms:
    def __init__(self, user, app_label: str):
        self.user, self.app_label = user, app_label

    def __getitem__(self, codename: str) -> bool:
        return may(self.user, f"{self.app_label}.{codename}")

    def __bool__(self) -> bool:
        return holds_app_permission(self.user, self.app_label)


def spaces(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    known = directory.all_spaces()
    current = getattr(request, "space", None)
    if current is not None:
        current = known.get(current.pk, current)  # the stored space (its name), not the request's stand-in
    if current is not None and not holds_a_role_in(user, current):
        current = None  # a space where the user holds no role is not even named (README "Spaces")
    return {
        "perms": SpacePerms(user),
        "current_space": current,
        "switchable_spaces": [space for space in known.values() if holds_a_role_in(user, space)],
    }
