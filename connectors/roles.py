"""The roles: Groups bundling permission codenames, created (and kept in step) every time migrate runs.

Code checks codenames (connectors/permissions.py), never group names. Each app declares its own roles and syncs
them when its permissions exist: the connector roles here, usage's "Usage viewers" in usage/roles.py.
"""

from django.db.models.signals import post_migrate

from connectors.permissions import (
    ADD_CONNECTOR,
    CHANGE_CONNECTOR,
    DELETE_CONNECTOR,
    EXECUTE_CONNECTOR,
    VIEW_CONNECTOR,
)
from usage.permissions import VIEW_USAGE_DASHBOARD

ROLES: dict[str, list[str]] = {
    # Connector admins also open the usage dashboards and every user's logs of the connectors they manage (issue
    # 12): usage's permission, so usage/apps.py syncs this role again once that permission exists.
    "Connector admins": [
        VIEW_CONNECTOR, ADD_CONNECTOR, CHANGE_CONNECTOR, DELETE_CONNECTOR, EXECUTE_CONNECTOR, VIEW_USAGE_DASHBOARD,
    ],
    "Connector users": [VIEW_CONNECTOR, EXECUTE_CONNECTOR],
}


def sync_roles(roles: dict[str, list[str]] = ROLES, app_label: str | None = None) -> None:
    """Create each role's Group and give it exactly its permissions. Idempotent.

    With ``app_label``, only that app's share of each group is replaced: a role such as Connector admins is made of
    several apps' shares (connectors', governance's), each synced when its app has migrated.
    """
    from django.contrib.auth.models import Group, Permission

    for group_name, codenames in roles.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        kept = list(group.permissions.exclude(content_type__app_label=app_label)) if app_label else []
        permissions = []
        for dotted in codenames:
            permission_app, codename = dotted.split(".")
            permission = Permission.objects.filter(content_type__app_label=permission_app, codename=codename).first()
            if permission is not None:
                permissions.append(permission)
        group.permissions.set(kept + permissions)


def sync_roles_after_migrate(app_config, roles: dict[str, list[str]]) -> None:
    """Sync ``roles`` each time migrate has run for ``app_config``, whose permissions then exist."""

    def sync(**_kwargs) -> None:
        sync_roles(roles, app_label=app_config.label)

    # post_migrate keeps a weak reference by default: the closure must be held strongly.
    post_migrate.connect(sync, sender=app_config, weak=False, dispatch_uid=f"{app_config.label}.sync_roles")


def roles_granting(permission: str) -> list[str]:
    """The names of the roles (of every app) that include ``permission`` (a dotted codename), for messages."""
    from usage.roles import ROLES as USAGE_ROLES

    return [name for name, codenames in {**ROLES, **USAGE_ROLES}.items() if permission in codenames]


def permission_denied_message(permission: str) -> str:
    """What a 403 says: the missing permission and the roles that grant it, as the API errors do."""
    roles = roles_granting(permission)
    if not roles:
        return f"This page needs the permission {permission}. Ask an administrator for it."
    granted_by = f"the {' or '.join(roles)} role" + ("s" if len(roles) > 1 else "")
    return f"This page needs the permission {permission}, which {granted_by} grant{'' if len(roles) > 1 else 's'}. Ask an administrator for it."
