"""Deleting a space and copying connectors between spaces: what the spaces API and the Spaces page share.

A space is deleted only when it holds no connector (its events and audit records stay; README "Spaces"); its API
keys, role grants, budgets, rate limits and alert rules go with it. A copied connector arrives without its secrets
(Kibana's copy to space: ``is_missing_secrets`` until someone enters the key) under a new id, since a connector id
is unique across spaces.
"""

from __future__ import annotations

from django.db import transaction

from connectors.models import ApiKey, Connector
from connectors.spaces.current import DEFAULT_SPACE_ID
from connectors.spaces.models import Space

SECRET_FIELDS = ("encrypted_api_key", "encrypted_certificate_data", "encrypted_private_key_data", "encrypted_ca_data")


class SpaceNotDeletable(Exception):
    """Why a space cannot be deleted; ``connectors`` lists what it still holds."""

    def __init__(self, message: str, connectors: list[Connector] | None = None):
        super().__init__(message)
        self.message = message
        self.connectors = connectors or []


def delete_space(space: Space) -> None:
    if space.id == DEFAULT_SPACE_ID:
        raise SpaceNotDeletable(f"The {space.id} space cannot be deleted because it is reserved.")
    with transaction.atomic():
        held = list(Connector.objects.select_for_update().filter(space=space).order_by("name"))
        if held:
            names = ", ".join(f"{c.name} ({c.pk})" for c in held)
            raise SpaceNotDeletable(
                f"The {space.id} space holds {len(held)} connector{'s' if len(held) > 1 else ''}: {names}. Delete "
                "them, or copy them to another space and delete them here, before deleting the space.", held)
        ApiKey.objects.filter(space=space).delete()
        space.delete()


def copy_connector(connector: Connector, destination: Space, *, by) -> Connector:
    """A copy of stored ``connector`` in ``destination``, under a new id, without its secrets."""
    copy = Connector.objects.get(pk=connector.pk)
    copy.pk = None
    copy.id = Connector._meta.get_field("id").get_default()
    copy._state.adding = True
    copy.space = destination
    copy.created_by = by if getattr(by, "pk", None) else None
    for name in SECRET_FIELDS:
        setattr(copy, name, "")
    copy.save(force_insert=True)  # not full_clean(): a missing key is exactly what is_missing_secrets reports
    return copy
