"""SCIM Users: the people the identity provider provisions, as users of this app.

A SCIM user is a Django user with a ScimUser row beside it. The attributes kept are ``userName`` (the username),
``externalId``, ``displayName``, ``name.givenName`` / ``name.familyName``, the primary e-mail and ``active``;
others the providers send (title, addresses, the enterprise extension) are accepted and not kept. Setting
``active`` to false deactivates the user at once (connectors/accounts/deprovisioning.py); DELETE does that too,
revokes the user's API keys, takes their provisioned roles away and forgets the SCIM id.
"""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model
from django.utils import timezone

from connectors.accounts import deprovisioning
from connectors.accounts.models import ScimUser, SsoIdentity
from connectors.accounts.scim import protocol
from connectors.accounts.scim.protocol import ENTERPRISE_USER_SCHEMA, USER_SCHEMA, ScimError, invalid_value
from connectors.accounts.scim.roles import sync_roles

FILTERS = {"username": "user_name__iexact", "externalid": "external_id", "id": "scim_id"}
USERNAME_MAX_LENGTH = 150  # Django's User.username
_WORK_EMAIL_PATH = 'emails[type eq "work"].value'


def provisioned():
    return ScimUser.objects.filter(deleted_at__isnull=True).select_related("user")


def find(scim_id: str) -> ScimUser:
    try:
        return provisioned().get(scim_id=uuid.UUID(scim_id))
    except (ValueError, ScimUser.DoesNotExist):
        raise ScimError(404, f"No user with id {scim_id[:100]!r}.") from None


def to_resource(scim_user: ScimUser, location: str) -> dict:
    user = scim_user.user
    resource = {
        "schemas": [USER_SCHEMA],
        "id": str(scim_user.scim_id),
        "userName": scim_user.user_name,
        "name": {"givenName": user.first_name, "familyName": user.last_name},
        "active": user.is_active,
        "groups": [{"value": str(group.scim_id), "display": group.display_name}
                   for group in user.scim_groups.order_by("display_name")],
        "meta": {"resourceType": "User", "created": scim_user.created_at.isoformat(),
                 "lastModified": scim_user.updated_at.isoformat(), "location": location},
    }
    if scim_user.external_id:
        resource["externalId"] = scim_user.external_id
    if scim_user.display_name:
        resource["displayName"] = scim_user.display_name
    if user.email:
        resource["emails"] = [{"value": user.email, "type": "work", "primary": True}]
    return resource


class _Draft:
    """The attributes a request sets, checked, before any is stored."""

    def __init__(self, scim_user: ScimUser | None):
        user = scim_user.user if scim_user else None
        self.user_name = scim_user.user_name if scim_user else ""
        self.external_id = scim_user.external_id if scim_user else ""
        self.display_name = scim_user.display_name if scim_user else ""
        self.given_name = user.first_name if user else ""
        self.family_name = user.last_name if user else ""
        self.email = user.email if user else ""
        self.active = user.is_active if user else True

    def set(self, path: str, value: object, *, removing: bool = False) -> None:
        """Apply one attribute, named as in a PATCH path (case-insensitive), or ignore one not kept here."""
        name = path.lower()
        if name.startswith(ENTERPRISE_USER_SCHEMA.lower()) or name.startswith(USER_SCHEMA.lower() + ":"):
            name = name.rpartition(":")[2] if name.startswith(USER_SCHEMA.lower()) else ""
        if name == "username":
            if removing:
                raise invalid_value("userName cannot be removed.")
            self.user_name = protocol.text(value, "userName", max_length=USERNAME_MAX_LENGTH, required=True)
        elif name == "active":
            self.active = False if removing else protocol.boolean(value, "active")
        elif name == "externalid":
            self.external_id = "" if removing else protocol.text(value, "externalId")
        elif name == "displayname":
            self.display_name = "" if removing else protocol.text(value, "displayName")
        elif name == "name.givenname":
            self.given_name = "" if removing else protocol.text(value, "name.givenName", max_length=150)
        elif name == "name.familyname":
            self.family_name = "" if removing else protocol.text(value, "name.familyName", max_length=150)
        elif name == "name":
            value = {} if removing or value is None else value
            if not isinstance(value, dict):
                raise invalid_value("name must be an object.")
            self.given_name = protocol.text(value.get("givenName"), "name.givenName", max_length=150)
            self.family_name = protocol.text(value.get("familyName"), "name.familyName", max_length=150)
        elif name == "emails":
            self.email = "" if removing else _primary_email(value)
        elif name == _WORK_EMAIL_PATH.lower():
            self.email = "" if removing else protocol.text(value, "emails.value", max_length=254)
        # Other attributes (title, phoneNumbers, addresses, locale, the enterprise extension...) are not kept.

    def set_all(self, body: dict) -> None:
        """Apply a whole resource (POST, PUT): absent attributes are cleared, except ``active``."""
        self.set("userName", body.get("userName"))
        for attribute in ("externalId", "displayName", "name", "emails"):
            self.set(attribute, body.get(attribute), removing=attribute not in body)
        if "active" in body:
            self.set("active", body["active"])


def _primary_email(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise invalid_value("emails must be a list of objects.")
    chosen = next((item for item in value if item.get("primary") is True), value[0] if value else {})
    return protocol.text(chosen.get("value"), "emails.value", max_length=254)


def _name_taken(user_name: str, scim_user: ScimUser | None) -> None:
    others = provisioned().filter(user_name__iexact=user_name)
    if scim_user is not None:
        others = others.exclude(pk=scim_user.pk)
    if others.exists():
        raise ScimError(409, f"A user with userName {user_name!r} exists already.", "uniqueness")


def _user_to_adopt(user_name: str):
    """An existing user a new SCIM user is: one SCIM deleted earlier, or one made by an SSO sign-in before SCIM
    was set up. A local account with the name is never taken over: that is a conflict."""
    user = get_user_model().objects.filter(username=user_name).first()
    if user is None:
        return None
    if ScimUser.objects.filter(user=user).exists() or SsoIdentity.objects.filter(user=user).exists():
        return user
    raise ScimError(409, f"The username {user_name!r} belongs to a local account here.", "uniqueness")


def create(body: dict) -> ScimUser:
    draft = _Draft(None)
    draft.set_all(body)
    _name_taken(draft.user_name, None)
    user = _user_to_adopt(draft.user_name)
    if user is None:
        user = get_user_model()(username=draft.user_name, is_active=draft.active)
        user.set_unusable_password()  # signs in through the identity provider only
        user.save()
    scim_user, _ = ScimUser.objects.update_or_create(
        user=user, defaults={"user_name": draft.user_name, "scim_id": uuid.uuid4(), "deleted_at": None})
    _store(scim_user, draft)
    return scim_user


def replace(scim_user: ScimUser, body: dict) -> ScimUser:
    draft = _Draft(scim_user)
    draft.set_all(body)
    _name_taken(draft.user_name, scim_user)
    _store(scim_user, draft)
    return scim_user


def patch(scim_user: ScimUser, operations: list[protocol.Operation]) -> ScimUser:
    draft = _Draft(scim_user)
    for operation in operations:
        if operation.path:
            draft.set(operation.path, operation.value, removing=operation.op == "remove")
        else:  # Okta: {"op": "replace", "value": {"active": false}}; Entra ID: {"value": {"name.givenName": ...}}
            for path, value in operation.value.items():
                draft.set(path, value)
    _name_taken(draft.user_name, scim_user)
    _store(scim_user, draft)
    return scim_user


def _store(scim_user: ScimUser, draft: _Draft) -> None:
    user = scim_user.user
    if draft.user_name != user.username:
        if get_user_model().objects.filter(username=draft.user_name).exclude(pk=user.pk).exists():
            raise ScimError(409, f"The username {draft.user_name!r} is taken here.", "uniqueness")
        user.username = draft.user_name
    user.first_name, user.last_name, user.email = draft.given_name, draft.family_name, draft.email
    was_active = user.is_active
    if draft.active:
        user.is_active = True
    user.save()  # the audit trail records what changed, reactivation included
    if was_active and not draft.active:
        deprovisioning.deactivate(user)
    scim_user.user_name = draft.user_name
    scim_user.external_id = draft.external_id
    scim_user.display_name = draft.display_name
    scim_user.save()


def delete(scim_user: ScimUser) -> None:
    """Deprovision for good: inactive, sessions ended, API keys revoked, provisioned roles removed. The user row
    stays (the audit trail names it); SCIM no longer sees it."""
    user = scim_user.user
    deprovisioning.deactivate(user)
    deprovisioning.revoke_api_keys(user)
    user.scim_groups.clear()
    sync_roles([user])  # no group left: every role OIDC_GROUP_MAP manages goes
    scim_user.deleted_at = timezone.now()
    scim_user.save(update_fields=["deleted_at", "updated_at"])
