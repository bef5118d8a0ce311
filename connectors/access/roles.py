"""The roles: Groups bundling permission codenames, created (and kept in step) every time migrate runs.

Every app declares its capabilities and its share of the roles in its own ``permissions.py`` and registers that
share here from its ``AppConfig.ready()``. This registry is therefore the one table of every role of the
installation: 403 messages name the roles that grant a permission from it, whichever app declared them. Code checks
codenames (through connectors/access/policy.py), never group names.
"""

from django.db.models.signals import post_migrate

# app label -> role name -> dotted permission codenames, in registration order.
_shares: dict[str, dict[str, list[str]]] = {}


def register_roles(app_config, roles: dict[str, list[str]]) -> None:
    """Add ``app_config``'s share of the roles, and sync the roles each time migrate has run for that app (its
    permissions exist from then on)."""
    _shares[app_config.label] = roles

    def sync(**_kwargs) -> None:
        sync_roles(app_label=app_config.label)

    # post_migrate keeps a weak reference by default: the closure must be held strongly.
    post_migrate.connect(sync, sender=app_config, weak=False, dispatch_uid=f"{app_config.label}.sync_roles")


def all_roles() -> dict[str, list[str]]:
    """Every role with every permission any app gives it."""
    merged: dict[str, list[str]] = {}
    for share in _shares.values():
        for name, codenames in share.items():
            role = merged.setdefault(name, [])
            role.extend(codename for codename in codenames if codename not in role)
    return merged


def roles_granting(permission: str) -> list[str]:
    """The names of the roles that include ``permission`` (a dotted codename), for messages."""
    return [name for name, codenames in all_roles().items() if permission in codenames]


def sync_roles(app_label: str | None = None) -> None:
    """Create each role's Group and give it exactly its permissions. Idempotent.

    With ``app_label``, only the permissions of that app are replaced in each group (the others are kept as they
    are): each app's permissions exist only once that app has migrated, so each app syncs its own part then.
    """
    from django.contrib.auth.models import Group, Permission

    existing = {f"{app}.{codename}": pk for pk, app, codename in
                Permission.objects.values_list("pk", "content_type__app_label", "codename")}
    for group_name, codenames in all_roles().items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = {existing[c] for c in codenames if c in existing and (app_label is None or c.startswith(f"{app_label}."))}
        if app_label is not None:
            wanted |= set(group.permissions.exclude(content_type__app_label=app_label).values_list("pk", flat=True))
        group.permissions.set(wanted)
