"""What an audited model's change looks like in the trail: which fields are compared, how secrets are described.

Models of other features join the trail with one ``register(...)`` call (see ``receivers.connect``).
"""

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True)
class Secret:
    """A secret field: recorded as "<label> changed", never with a value.

    ``compare_as`` names an attribute holding the plaintext, for fields stored encrypted: re-encryption under a new
    key (rotate_connector_keys) changes the stored value but not the secret, and is recorded as such.
    """

    label: str
    compare_as: str | None = None


@dataclass(frozen=True)
class Audited:
    object_type: str
    fields: tuple[str, ...]
    secrets: dict[str, Secret] = field(default_factory=dict)
    # Updates touching only these fields are not changes worth a record (User.last_login on every sign-in).
    ignored: frozenset[str] = frozenset()


REGISTRY: dict[type, Audited] = {}


def register(model: type, spec: Audited) -> None:
    REGISTRY[model] = spec


def _plain(value):
    """A JSON-safe rendering of a field value."""
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "pk"):
        return str(value)
    return str(value)


def _raw(instance, name: str):
    """The field's value as its Python type (an int assigned to a DecimalField compares as the Decimal it is)."""
    model_field = instance._meta.get_field(name)
    if model_field.is_relation:
        return getattr(instance, model_field.attname)
    value = getattr(instance, name)
    try:
        return model_field.to_python(value)
    except Exception:  # noqa: BLE001 - an invalid value about to fail validation: record it as it is
        return value


def _value(instance, name: str):
    model_field = instance._meta.get_field(name)
    if model_field.is_relation:
        related_id = getattr(instance, model_field.attname)
        if related_id is None:
            return None
        return str(getattr(instance, name))
    return _plain(_raw(instance, name))


def _secret_note(spec: Secret, before, after, name: str) -> str | None:
    old, new = getattr(before, name), getattr(after, name)
    if old == new:
        return None
    if not old:
        return f"{spec.label} set"
    if not new:
        return f"{spec.label} removed"
    if spec.compare_as:
        try:
            if getattr(before, spec.compare_as) == getattr(after, spec.compare_as):
                return f"{spec.label} re-encrypted under the newest encryption key (unchanged)"
        except Exception:  # noqa: BLE001 - an undecryptable old value: it changed, which is what we record
            pass
    return f"{spec.label} changed"


def snapshot(instance, spec: Audited) -> dict:
    """The values recorded for a created or deleted object."""
    values = {name: _value(instance, name) for name in spec.fields}
    for name, secret in spec.secrets.items():
        if getattr(instance, name):
            values[name] = f"{secret.label} set"
    return values


def diff(before, after, spec: Audited) -> dict:
    """{"field": [before, after]} for each changed field; secrets as {"field": "API key changed"}."""
    changes = {}
    for name in spec.fields:
        if _raw(before, name) != _raw(after, name):
            changes[name] = [_value(before, name), _value(after, name)]
    for name, secret in spec.secrets.items():
        note = _secret_note(secret, before, after, name)
        if note:
            changes[name] = note
    return changes
