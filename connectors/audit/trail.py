"""The one write path of the audit trail. Callers are the receivers in ``receivers.py`` (model signals, sign-in
signals) and the few services that know something a signal cannot (first use of an API key, start-up loading of
preconfigured connectors, pruning).

``record`` writes in the caller's transaction: when the change rolls back, so does its record, and a change is
never committed without its record (the models' ``save`` and ``delete`` run in ``transaction.atomic`` so that the
post_save/post_delete receivers share it; /admin/ wraps its views in one).
"""

from django.db import DEFAULT_DB_ALIAS

from connectors.audit import context
from connectors.audit.choices import Via
from connectors.audit.models import AuditRecord
from connectors.client_address import client_address
from connectors.spaces.current import current_space_id

SYSTEM = "system"


def _actor_fields(actor: context.Actor) -> dict:
    fields = {"via": actor.via, "actor": SYSTEM, "actor_user_id": None, "client_ip": None, "user_agent": ""}
    request = actor.request
    user = actor.user
    if user is None and request is not None:
        user = getattr(request, "user", None)  # set by AuthenticationMiddleware or the API's authentication
    if user is not None and getattr(user, "is_authenticated", False):
        fields["actor"] = user.get_username()[:150]
        fields["actor_user_id"] = user.pk
    if actor.name:
        fields["actor"] = actor.name
    if request is not None:
        fields["client_ip"] = client_address(request)
        fields["user_agent"] = context.user_agent(request)
    if actor.api_key_id is not None:
        fields["api_key_id"] = actor.api_key_id
        fields["api_key_name"] = actor.api_key_name or _api_key_name(actor.api_key_id)
    if actor.sign_in_method == "sso" and actor.via == Via.PAGE:
        fields["via"] = Via.SSO
    return fields


def _api_key_name(api_key_id: int) -> str:
    from connectors.models import ApiKey

    key = ApiKey.objects.filter(pk=api_key_id).only("name", "prefix").first()
    return f"{key.name} ({key.prefix}…)"[:130] if key else ""


def append(
    object_type: str,
    action: str,
    *,
    object_id: object = "",
    object_repr: str = "",
    changes: dict | None = None,
    by: context.Actor | None = None,
    using: str | None = None,
    **overrides,
) -> AuditRecord:
    """Write one audit record, attributed to the current actor (``context.current()``) unless ``by`` is given.

    ``overrides`` set record fields directly (``at`` when importing, ``actor`` for a name outside the app).
    """
    fields = _actor_fields(by or context.current())
    fields["space_id"] = current_space_id.get()  # a change is recorded in the space it was made in
    fields.update(overrides)
    return AuditRecord.objects.using(using or DEFAULT_DB_ALIAS).create(
        object_type=object_type,
        action=action,
        object_id=str(object_id)[:150],
        object_repr=str(object_repr)[:300],
        changes=changes or {},
        **fields,
    )
