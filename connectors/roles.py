"""The roles: Groups bundling permission codenames, created (and kept in step) every time migrate runs.

Code checks codenames (``user.has_perm("connectors.execute_connector")``), never group names.
"""

from django.db.models.signals import post_migrate

ROLES: dict[str, list[str]] = {
    "Connector admins": [
        "connectors.view_connector",
        "connectors.add_connector",
        "connectors.change_connector",
        "connectors.delete_connector",
        "connectors.execute_connector",
    ],
    "Connector users": [
        "connectors.view_connector",
        "connectors.execute_connector",
    ],
    "Usage viewers": [
        "usage.view_usage_dashboard",
    ],
}


def sync_roles(**_kwargs) -> None:
    """Create each role's Group and give it exactly its permissions. Idempotent."""
    from django.contrib.auth.models import Group, Permission

    for group_name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        permissions = []
        for dotted in codenames:
            app_label, codename = dotted.split(".")
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                permissions.append(permission)
        group.permissions.set(permissions)


def connect_signals() -> None:
    # Sent once per app after its permissions exist; syncing after the last of ours sees all of them.
    from django.apps import apps

    post_migrate.connect(sync_roles, sender=apps.get_app_config("usage"), dispatch_uid="connectors.sync_roles")
