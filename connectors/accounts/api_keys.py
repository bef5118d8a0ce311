"""Creating and checking API keys."""

import hashlib
import secrets

from connectors.models import ApiKey

KEY_PREFIX = "cak_"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(user, name: str) -> tuple[ApiKey, str]:
    """Make a key for ``user``; returns the record and the plaintext, which is never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey.objects.create(user=user, name=name, prefix=plaintext[:12], digest=digest_of(plaintext))
    return record, plaintext
