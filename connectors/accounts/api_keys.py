"""Creating and checking API keys."""

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from connectors.models import ApiKey
from connectors.spaces.current import current_space_id

KEY_PREFIX = "cak_"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(user, name: str, *, space_id: str | None = None, connector_ids: list[str] | None = None,
                   expires_at=None) -> tuple[ApiKey, str]:
    """Make a key for ``user`` in ``space_id`` (by default the current space), optionally limited to
    ``connector_ids`` of that space and valid until ``expires_at``; returns the record and the plaintext, which is
    never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey.objects.create(
        user=user, name=name, prefix=plaintext[:12], digest=digest_of(plaintext),
        space_id=space_id or current_space_id.get(), connector_ids=sorted(set(connector_ids or ())),
        expires_at=expires_at,
    )
    return record, plaintext


def note_api_key_use(api_key_id: int) -> None:
    """Update the key's "last used" time; the first time a key is ever used, record that in the audit trail.

    Called by the API's authentication at most once a minute per key and process (connectors/api/auth.py), so
    neither write is on the path of every request. The first use is recorded exactly once across processes: only
    the UPDATE that finds ``last_used_at`` still empty records it, in the same transaction.
    """
    now = timezone.now()
    from connectors.audit import trail
    with transaction.atomic():
        first = ApiKey.objects.filter(pk=api_key_id, last_used_at__isnull=True).update(last_used_at=now)
        if first:
            key = ApiKey.objects.select_related("user").get(pk=api_key_id)
            trail.append("api_key", "first_use", object_id=key.pk, object_repr=str(key),
                             changes={"owner": key.user.get_username()})
        else:
            ApiKey.objects.filter(pk=api_key_id).update(last_used_at=now)
