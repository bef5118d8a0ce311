"""Signal receivers that turn model changes and sign-ins into audit records (through ``trail.append``).

Django sends these signals inside the transaction of the change when there is one: Connector and ApiKey save and
delete inside ``transaction.atomic`` (connectors/models.py), /admin/ runs each change view in one, and m2m changes
(roles, permissions) run in one of their own.
"""

from django.contrib.auth import get_user_model, user_logged_in, user_login_failed
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from connectors.audit import context, diffs, sign_ins, trail
from connectors.audit.diffs import Audited, Secret

_BEFORE = "_audit_before"


def _spec(sender):
    return diffs.REGISTRY.get(sender)


def _before_save(sender, instance, raw=False, update_fields=None, using=None, **kwargs):
    spec = _spec(sender)
    if spec is None or raw or instance._state.adding:
        return
    if update_fields is not None and set(update_fields) <= spec.ignored:
        return
    instance.__dict__[_BEFORE] = sender._base_manager.using(using).filter(pk=instance.pk).first()


def _space_of(instance) -> dict:
    """The space a record of ``instance`` belongs to: a space's own, an object's space, else the request's."""
    from connectors.spaces.models import Space

    if isinstance(instance, Space):
        return {"space_id": instance.pk}
    space_id = getattr(instance, "space_id", None)
    return {"space_id": space_id} if space_id else {}


def _after_save(sender, instance, created, raw=False, using=None, update_fields=None, **kwargs):
    spec = _spec(sender)
    if spec is None or raw:
        return
    before = instance.__dict__.pop(_BEFORE, None)
    if created or before is None:
        if not created:
            return  # only ignored fields were saved
        trail.append(spec.object_type, "create", object_id=instance.pk, object_repr=str(instance),
                     changes=diffs.snapshot(instance, spec), using=using, **_space_of(instance))
        return
    changes = diffs.diff(before, instance, spec)
    if not changes:
        return
    action = "update"
    if spec.object_type == "api_key" and "revoked_at" in changes and changes["revoked_at"][0] is None:
        action = "revoke"
    trail.append(spec.object_type, action, object_id=instance.pk, object_repr=str(instance), changes=changes,
                 using=using, **_space_of(instance))


def _after_delete(sender, instance, using=None, **kwargs):
    spec = _spec(sender)
    if spec is None:
        return
    trail.append(spec.object_type, "delete", object_id=instance.pk, object_repr=str(instance),
                 changes=diffs.snapshot(instance, spec), using=using, **_space_of(instance))


def _m2m_names(model, pks) -> list[str]:
    from django.contrib.auth.models import Permission

    if model is Permission:
        rows = Permission.objects.filter(pk__in=pks).select_related("content_type").order_by("codename")
        return [f"{p.content_type.app_label}.{p.codename}" for p in rows]
    return sorted(str(obj) for obj in model._base_manager.filter(pk__in=pks))


def _relation_changed(owner_type: str, key: str):
    """A receiver for one m2m relation: records one "grant"/"remove" per owner, naming what was granted."""

    def receiver(sender, instance, action, reverse, model, pk_set, using=None, **kwargs):
        if action == "pre_clear":
            # What a clear removes is only known before it happens.
            instance.__dict__["_audit_cleared"] = (
                list(getattr(instance, _forward_name(sender, reverse)).values_list("pk", flat=True))
            )
            return
        if action == "post_clear":
            pk_set = set(instance.__dict__.pop("_audit_cleared", []))
            action = "post_remove"
        if action not in ("post_add", "post_remove") or not pk_set:
            return
        verb = "grant" if action == "post_add" else "remove"
        if not reverse:
            owners, granted = [instance], _m2m_names(model, pk_set)
        else:  # group.user_set.add(user): the owners are the users, the granted thing the instance
            owners, granted = list(model._base_manager.filter(pk__in=pk_set)), [_name_of(instance)]
        for owner in owners:
            trail.append(owner_type, verb, object_id=owner.pk, object_repr=str(owner),
                             changes={key: granted}, using=using)

    return receiver


def _forward_name(through, reverse: bool) -> str:
    """The accessor on the instance for a pre_clear (forward: user.groups, reverse: group.user_set...)."""
    User = get_user_model()
    if through is User.groups.through:
        return "user_set" if reverse else "groups"
    if through is User.user_permissions.through:
        return "user_set" if reverse else "user_permissions"
    return "group_set" if reverse else "permissions"


def _name_of(obj) -> str:
    if obj.__class__.__name__ == "Permission":
        return f"{obj.content_type.app_label}.{obj.codename}"
    return str(obj)


def _signed_in(sender, request, user, **kwargs):
    method = "sso" if context.current().sign_in_method == "sso" else "password"
    sign_ins.signed_in(user, method, request=request)


def _sign_in_failed(sender, credentials, request=None, **kwargs):
    if request is None:
        return  # the JSON API's Basic verification: recorded by connectors/api/auth.py through sign_ins
    sign_ins.failed(credentials.get("username") or "", "password", request=request)


# The governance records (usage/governance: prices, budgets, limits, alert channels and rules), by
# app label and model name so that the audit app does not import usage. Secrets: an alert channel's signing secret,
# and its target, since a webhook URL (Slack's, for one) carries a token; both are stored encrypted, and compared
# decrypted so that a re-encryption under a new key is recorded as such.
GOVERNANCE = {
    "Price": ("price", {}),
    "ConnectorPricing": ("connector_pricing", {}),
    "Budget": ("budget", {}),
    "RateLimit": ("rate_limit", {}),
    "AlertChannel": ("alert_channel", {"target_encrypted": Secret("Target", compare_as="target"),
                                       "secret_encrypted": Secret("Signing secret", compare_as="secret")}),
    "ErrorRateRule": ("error_rate_rule", {}),
}
_NOT_RECORDED = {"created_at", "updated_at"}


def _register_governance() -> None:
    from django.apps import apps

    for model_name, (object_type, secrets) in GOVERNANCE.items():
        try:
            model = apps.get_model("governance", model_name)
        except LookupError:
            continue
        fields = tuple(
            f.name for f in model._meta.concrete_fields
            if not f.primary_key and f.name not in _NOT_RECORDED and f.name not in secrets
        )
        if model._meta.pk.name not in ("id",) and model._meta.pk.name not in fields:
            fields = (model._meta.pk.name, *fields)  # a natural key (ConnectorPricing.connector_id) is worth showing
        diffs.register(model, Audited(object_type, fields, secrets=secrets, ignored=frozenset({"updated_at"})))
        _connect(model)


def _connect(model) -> None:
    pre_save.connect(_before_save, sender=model, dispatch_uid=f"audit_pre_save_{model._meta.label}")
    post_save.connect(_after_save, sender=model, dispatch_uid=f"audit_post_save_{model._meta.label}")
    post_delete.connect(_after_delete, sender=model, dispatch_uid=f"audit_post_delete_{model._meta.label}")


def connect() -> None:
    from connectors.models import ApiKey, Connector
    from connectors.spaces.models import Space, SpaceRoleGrant

    User = get_user_model()
    diffs.register(Space, Audited("space", ("name", "description", "color", "initials")))
    diffs.register(SpaceRoleGrant, Audited("space_role_grant", ("space", "role", "user", "group")))
    diffs.register(Connector, Audited(
        "connector",
        ("name", "space", "provider", "api_url", "default_model", "headers", "organization_id", "project_id"),
        secrets={"encrypted_api_key": Secret("API key", compare_as="api_key")},
        ignored=frozenset({"updated_at"}),
    ))
    diffs.register(ApiKey, Audited(
        "api_key", ("name", "user", "prefix", "space", "connector_ids", "expires_at", "revoked_at"),
        ignored=frozenset({"last_used_at"}),
    ))
    diffs.register(User, Audited(
        "user",
        ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser"),
        secrets={"password": Secret("Password")},
        ignored=frozenset({"last_login"}),
    ))
    diffs.register(Group, Audited("group", ("name",)))
    for model in (Space, SpaceRoleGrant, Connector, ApiKey, User, Group):
        _connect(model)
    _register_governance()
    m2m_changed.connect(_relation_changed("user", "role"), sender=User.groups.through,
                        dispatch_uid="audit_user_groups", weak=False)
    m2m_changed.connect(_relation_changed("user", "permission"), sender=User.user_permissions.through,
                        dispatch_uid="audit_user_permissions", weak=False)
    m2m_changed.connect(_relation_changed("group", "permission"), sender=Group.permissions.through,
                        dispatch_uid="audit_group_permissions", weak=False)
    user_logged_in.connect(_signed_in, dispatch_uid="audit_signed_in")
    user_login_failed.connect(_sign_in_failed, dispatch_uid="audit_sign_in_failed")
