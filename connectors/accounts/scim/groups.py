"""SCIM Groups: the identity provider's groups and who is in them. Each change of a group's members, name or
existence gives the users concerned the roles their groups now map to (``roles.sync_roles``) at once."""

from __future__ import annotations

import uuid

from connectors.accounts.models import ScimGroup
from connectors.accounts.scim import protocol
from connectors.accounts.scim.protocol import GROUP_SCHEMA, ScimError, invalid_value
from connectors.accounts.scim.roles import sync_roles
from connectors.accounts.scim.users import provisioned

FILTERS = {"displayname": "display_name__iexact", "externalid": "external_id", "id": "scim_id"}


def find(scim_id: str) -> ScimGroup:
    try:
        return ScimGroup.objects.get(scim_id=uuid.UUID(scim_id))
    except (ValueError, ScimGroup.DoesNotExist):
        raise ScimError(404, f"No group with id {scim_id[:100]!r}.") from None


def to_resource(group: ScimGroup, location: str, *, with_members: bool = True) -> dict:
    resource = {
        "schemas": [GROUP_SCHEMA],
        "id": str(group.scim_id),
        "displayName": group.display_name,
        "meta": {"resourceType": "Group", "created": group.created_at.isoformat(),
                 "lastModified": group.updated_at.isoformat(), "location": location},
    }
    if group.external_id:
        resource["externalId"] = group.external_id
    if with_members:
        resource["members"] = [{"value": str(member.scim_id), "display": member.user_name}
                               for member in provisioned().filter(user__scim_groups=group).order_by("user_name")]
    return resource


def _users_with_ids(ids: list[str]) -> list:
    """The users these SCIM user ids name; invalidValue when one names nobody provisioned."""
    wanted = set()
    for member_id in ids:
        try:
            wanted.add(uuid.UUID(member_id))
        except ValueError:
            raise invalid_value(f"No user with id {member_id[:100]!r}.") from None
    found = {scim_user.scim_id: scim_user.user for scim_user in provisioned().filter(scim_id__in=wanted)}
    missing = wanted - set(found)
    if missing:
        raise invalid_value(f"No user with id {str(sorted(missing)[0])!r}.")
    return list(found.values())


def _check_name_free(display_name: str, group: ScimGroup | None) -> None:
    others = ScimGroup.objects.filter(display_name__iexact=display_name)
    if group is not None:
        others = others.exclude(pk=group.pk)
    if others.exists():
        raise ScimError(409, f"A group named {display_name!r} exists already.", "uniqueness")


class _Change:
    """What a request does to one group: its attributes, and the users whose roles must be worked out again."""

    def __init__(self, group: ScimGroup):
        self.group = group
        self.affected: dict[int, object] = {}

    def rename(self, value: object) -> None:
        name = protocol.text(value, "displayName", required=True)
        _check_name_free(name, self.group)
        if name != self.group.display_name:
            self.group.display_name = name
            self._everyone_affected()

    def set_external_id(self, value: object) -> None:
        external_id = protocol.text(value, "externalId")
        if external_id != self.group.external_id:
            self.group.external_id = external_id
            self._everyone_affected()

    def add(self, users: list) -> None:
        self.group.members.add(*users)
        self._affect(users)

    def remove(self, users: list) -> None:
        self.group.members.remove(*users)
        self._affect(users)

    def set_members(self, users: list) -> None:
        self._everyone_affected()
        self.group.members.set(users)
        self._affect(users)

    def apply(self, operation: protocol.Operation) -> None:
        path = operation.path.lower()
        if not path:  # Okta: {"op": "replace", "value": {"id": ..., "displayName": ...}}
            for name, value in operation.value.items():
                if name.lower() == "id":
                    continue  # the id cannot change; Okta repeats it
                self.apply(protocol.Operation(operation.op, name, value))
            return
        if path == "displayname" and operation.op != "remove":
            self.rename(operation.value)
        elif path == "externalid":
            self.set_external_id(None if operation.op == "remove" else operation.value)
        elif path == "members":
            if operation.op == "remove" and operation.value is None:
                self.set_members([])
            elif operation.op == "remove":
                self.remove(_users_with_ids(protocol.member_ids(operation.value)))
            elif operation.op == "add":
                self.add(_users_with_ids(protocol.member_ids(operation.value)))
            else:
                self.set_members(_users_with_ids(protocol.member_ids(operation.value or [])))
        elif operation.op == "remove" and protocol.member_in_path(operation.path) is not None:
            # Removing someone who is not (or no longer) a member is not an error: providers retry.
            member_id = protocol.member_in_path(operation.path)
            self.remove([scim_user.user for scim_user in provisioned().filter(scim_id=protocol.uuid_or_none(member_id))])
        else:
            raise ScimError(400, f"The path {operation.path[:100]!r} cannot be changed with {operation.op}.",
                            "invalidPath")

    def finish(self) -> None:
        self.group.save()
        sync_roles(self.affected.values())

    def _affect(self, users) -> None:
        for user in users:
            self.affected[user.pk] = user

    def _everyone_affected(self) -> None:
        if self.group.pk is not None:
            self._affect(self.group.members.all())


def create(body: dict) -> ScimGroup:
    name = protocol.text(body.get("displayName"), "displayName", required=True)
    _check_name_free(name, None)
    group = ScimGroup.objects.create(display_name=name,
                                     external_id=protocol.text(body.get("externalId"), "externalId"))
    change = _Change(group)
    if body.get("members"):
        change.add(_users_with_ids(protocol.member_ids(body["members"])))
    change.finish()
    return group


def replace(group: ScimGroup, body: dict) -> ScimGroup:
    change = _Change(group)
    change.rename(body.get("displayName"))
    change.set_external_id(body.get("externalId"))
    change.set_members(_users_with_ids(protocol.member_ids(body.get("members") or [])))
    change.finish()
    return group


def patch(group: ScimGroup, operations: list[protocol.Operation]) -> ScimGroup:
    change = _Change(group)
    for operation in operations:
        change.apply(operation)
    change.finish()
    return group


def delete(group: ScimGroup) -> None:
    members = list(group.members.all())
    group.delete()
    sync_roles(members)
