"""The access policy: the one place that decides whether a user may do something.

Pages use ``require`` (function views) or ``PermissionRequired`` (class views); the JSON API's endpoint decorator
and the connector lookup ask ``may``; templates read ``perms`` as Django gives them. Every refusal names the
missing permission and the roles that grant it (``denial_message``), on every page and in every API error.
Anonymous visitors of a page are sent to log in; signed-in users without the permission get a 403.

Every decision is made in a space (README "Spaces"): the current request's (connectors/spaces/current.py) unless
one is given. A user holds a permission in a space when a role's Group they belong to gives it (that is every
space, as before spaces existed), when a role is granted to them or to one of their groups in that space or in all
spaces (connectors/spaces/grants.py), or when they are a superuser. A request made with an API key acts only in
the key's space, and only on the key's connectors when it names some (connectors/lookup.py).

Superusers hold every permission (Django's rule). Some decisions are for superusers only, whatever roles a user
holds: the budgets and rate limits of people and API keys, and the note on who may see a dashboard
(``manages_people``).
"""

from __future__ import annotations

from functools import wraps

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import PermissionDenied

from connectors.access.roles import roles_granting
from connectors.caller import current_key_scope
from connectors.spaces import grants
from connectors.spaces.current import current_space_id


def _space_id(space) -> str:
    if space is None:
        return current_space_id.get()
    return space if isinstance(space, str) else space.pk


def may(user, permission: str, space=None) -> bool:
    """Whether ``user`` holds ``permission`` (a dotted codename) in ``space`` (a Space or an id; by default the
    current request's)."""
    space_id = _space_id(space)
    key_scope = current_key_scope.get()
    if key_scope is not None and key_scope.space_id != space_id:
        return False
    if user.has_perm(permission):  # superusers, the roles' Groups (every space), permissions given to the user
        return True
    held = grants.space_permissions(user)
    return permission in held.get(space_id, ()) or permission in held.get(None, ())


async def amay(user, permission: str, space=None) -> bool:
    """``may`` from async code. An API caller comes with its permissions loaded (connectors/api/auth.py), so
    asking costs no query and no hop to a thread; a session user's are read once, off the event loop."""
    if hasattr(user, "_perm_cache") and grants.is_loaded(user):
        return may(user, permission, space)
    return await sync_to_async(may)(user, permission, space)


def may_everywhere(user, permission: str) -> bool:
    """Whether ``user`` holds ``permission`` in every space (an Auditor of all spaces reads every record)."""
    if current_key_scope.get() is not None:
        return False
    return user.has_perm(permission) or permission in grants.space_permissions(user).get(None, ())


def holds_a_role_in(user, space) -> bool:
    """Whether ``user`` holds any permission in ``space``: the space switcher lists those spaces."""
    key_scope = current_key_scope.get()
    space_id = _space_id(space)
    if key_scope is not None and key_scope.space_id != space_id:
        return False
    if not user.is_active:
        return False
    if user.is_superuser or user.get_all_permissions():
        return True
    held = grants.space_permissions(user)
    return bool(held.get(space_id) or held.get(None))


def holds_app_permission(user, app_label: str, space=None) -> bool:
    """Whether ``user`` holds any permission of ``app_label`` in ``space`` (templates' ``{% if perms.app %}``)."""
    key_scope = current_key_scope.get()
    space_id = _space_id(space)
    if key_scope is not None and key_scope.space_id != space_id:
        return False
    if user.has_module_perms(app_label):
        return True
    held = grants.space_permissions(user)
    prefix = f"{app_label}."
    return any(p.startswith(prefix) for p in (*held.get(space_id, ()), *held.get(None, ())))


def manages_spaces(user) -> bool:
    """Superusers only: create, change and delete spaces, and grant roles in them."""
    return user.is_active and user.is_superuser


def manages_people(user) -> bool:
    """Superusers only: rules that govern people (a user's or an API key's budget), and who may read usage."""
    return user.is_active and user.is_superuser


def administers_accounts(user) -> bool:
    """Who can hand out roles: superusers, staff, and holders of ``auth.change_user``."""
    return user.is_superuser or user.is_staff or may(user, "auth.change_user")


def password_sign_in_allowed(user, superusers_only: bool) -> bool:
    """Whether ``user`` may sign in with a password, when ``superusers_only`` (LOCAL_LOGIN_SUPERUSERS_ONLY) may
    limit that to superusers because everyone else signs in with single sign-on."""
    return user.is_superuser or not superusers_only


def denial_message(*permissions: str) -> str:
    """What a 403 says: the permission (or, given several, any one of them) and the roles that grant it."""
    roles = sorted({role for permission in permissions for role in roles_granting(permission)})
    needed = permissions[0] if len(permissions) == 1 else " or ".join(permissions)
    if not roles:
        return f"This page needs the permission {needed}. Ask an administrator for it."
    granted_by = f"the {' or '.join(roles)} role" + ("s" if len(roles) > 1 else "")
    return f"This page needs the permission {needed}, which {granted_by} grant{'' if len(roles) > 1 else 's'}. Ask an administrator for it."


def check(user, *permissions: str, space=None) -> str:
    """The first of ``permissions`` that ``user`` holds (in ``space``, by default the current one);
    PermissionDenied naming them all when none."""
    for permission in permissions:
        if may(user, permission, space):
            return permission
    raise PermissionDenied(denial_message(*permissions))


def require(*permissions: str):
    """Decorator for a function view: sign-in, then any one of ``permissions`` or a 403 that names them."""

    def decorator(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            check(request.user, *permissions)
            return view(request, *args, **kwargs)

        return login_required(checked)

    return decorator


class PermissionRequired(AccessMixin):
    """Mixin for a class view (leftmost): sign-in, then ``permission_required`` or a 403 that names it."""

    permission_required = ""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        check(request.user, self.permission_required)
        return super().dispatch(request, *args, **kwargs)
