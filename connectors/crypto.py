"""Encryption at rest for connector API keys: MultiFernet over CONNECTORS_ENCRYPTION_KEYS, newest key first.

Keys are separate from SECRET_KEY so that either can be rotated alone. Rotation: put a new key first, run
`manage.py rotate_connector_keys`, then drop the old key.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnavailable(Exception):
    """A stored secret cannot be decrypted with the configured keys. The message never holds the secret."""


@lru_cache(maxsize=4)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


@lru_cache(maxsize=4)
def _primary_fernet(key: str) -> Fernet:
    return Fernet(key)


def _keys() -> tuple[str, ...]:
    return tuple(settings.CONNECTORS_ENCRYPTION_KEYS)


def encrypt_secret(plaintext: str) -> str:
    return _multi_fernet(_keys()).encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str) -> str:
    try:
        return _multi_fernet(_keys()).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise SecretUnavailable(
            "the stored API key cannot be decrypted with the configured CONNECTORS_ENCRYPTION_KEYS"
        ) from None


def is_encrypted_with_newest_key(token: str) -> bool:
    try:
        _primary_fernet(_keys()[0]).decrypt(token.encode("ascii"))
    except InvalidToken:
        return False
    return True


def reencrypt_with_newest_key(token: str) -> str:
    try:
        return _multi_fernet(_keys()).rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise SecretUnavailable(
            "a stored API key cannot be decrypted with any of the configured CONNECTORS_ENCRYPTION_KEYS"
        ) from None
