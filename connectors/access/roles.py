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
    Three queries when every role is as it should be (every migrate, and every test database flush); a change goes
    through ``group.permissions`` so that it is audited and drops cached permissions (m2m_changed).
    """
    from django.contrib.auth.models import Group, Permission

    roles = all_roles()
    existing = {f"{app}.{codename}": pk for pk, app, codename in
                Permission.objects.values_list("pk", "content_type__app_label", "codename")}
    managed = {pk for codename, pk in existing.items() if app_label is None or codename.startswith(f"{app_label}.")}
    groups = {group.name: group for group in Group.objects.filter(name__in=roles)}
    for name in roles.keys() - groups.keys():
        groups[name], _ = Group.objects.get_or_create(name=name)
    held: dict[int, set[int]] = {group.pk: set() for group in groups.values()}
    for group_id, permission_id in Group.permissions.through.objects.filter(
            group_id__in=held, permission_id__in=managed).values_list("group_id", "permission_id"):
        held[group_id].add(permission_id)
    for name, codenames in roles.items():
        group = groups[name]
        wanted = {existing[c] for c in codenames if c in existing and existing[c] in managed}
        if missing := wanted - held[group.pk]:
            group.permissions.add(*missing)
        if extra := held[group.pk] - wanted:
            group.permissions.remove(*extra)
