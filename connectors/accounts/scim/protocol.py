"""The parts of SCIM 2.0 (RFC 7643, RFC 7644) that Okta and Microsoft Entra ID use, read strictly: the error
message, list responses and paging, ``attr eq "value"`` filters, PATCH operations, and the values they carry
(Entra ID sends booleans as the strings "True" and "False").
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from connectors import untrusted_json
from connectors.validation import text_error

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
CONTENT_TYPE = "application/scim+json"
ACCEPTED_CONTENT_TYPES = ("application/scim+json", "application/json")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_START_INDEX = 2**31 - 1


class ScimError(Exception):
    """An answer in SCIM's error schema (RFC 7644 section 3.12); ``detail`` is safe to show."""

    def __init__(self, status: int, detail: str, scim_type: str = ""):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def body(self) -> dict:
        body = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


def invalid_value(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidValue")


def parse_body(raw: bytes) -> dict:
    try:
        body = untrusted_json.loads(raw)
    except ValueError as exc:
        raise ScimError(400, f"The body is not valid JSON: {exc}", "invalidSyntax") from None
    if not isinstance(body, dict):
        raise ScimError(400, "The body must be a JSON object.", "invalidSyntax")
    return body


# attr eq "value": the only filter Okta and Entra ID send (RFC 7644 section 3.4.2.2). Anything else is refused
# rather than half-understood.
_EQUALITY_FILTER = re.compile(r'^\s*([A-Za-z][\w.]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


def parse_filter(text: str, attributes: dict[str, str]) -> tuple[str, str]:
    """``(field, value)`` for ``attr eq "value"``, where ``attributes`` maps the filterable SCIM attribute names
    (lower case: SCIM attribute names ignore case) to what they filter."""
    match = _EQUALITY_FILTER.match(text)
    if match is None:
        raise ScimError(400, 'Only filters of the form attribute eq "value" are supported.', "invalidFilter")
    attribute = match.group(1).lower()
    if attribute not in attributes:
        names = ", ".join(sorted(attributes))
        raise ScimError(400, f"Filtering on {match.group(1)!r} is not supported; use one of: {names}.",
                        "invalidFilter")
    try:
        value = untrusted_json.loads(f'"{match.group(2)}"')
    except ValueError:
        raise ScimError(400, "The filter's value is not a valid string.", "invalidFilter") from None
    if text_error(value):
        raise ScimError(400, "The filter's value cannot contain control characters.", "invalidFilter")
    return attributes[attribute], value


def page_bounds(query) -> tuple[int, int]:
    """``(startIndex, count)`` from the query string: 1-based, count at most MAX_PAGE_SIZE (RFC 7644 3.4.2.4)."""

    def number(name: str, default: int) -> int:
        raw = query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise invalid_value(f"{name} must be a whole number.") from None

    start_index = max(number("startIndex", 1), 1)
    if start_index > MAX_START_INDEX:  # an offset the database could not even take as a number
        raise invalid_value(f"startIndex must be at most {MAX_START_INDEX}.")
    return start_index, min(max(number("count", DEFAULT_PAGE_SIZE), 0), MAX_PAGE_SIZE)


def list_response(resources: list[dict], total: int, start_index: int) -> dict:
    return {"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start_index,
            "itemsPerPage": len(resources), "Resources": resources}


def boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # Entra ID: "True", "False"
        return value.strip().lower() == "true"
    raise invalid_value(f"{name} must be true or false.")


def text(value: object, name: str, *, max_length: int = 255, required: bool = False) -> str:
    """A string attribute; None and absent read as "" unless it is required."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise invalid_value(f"{name} must be a string.")
    value = value.strip()
    if required and not value:
        raise invalid_value(f"{name} is required.")
    if len(value) > max_length:
        raise invalid_value(f"{name} is longer than {max_length} characters.")
    if text_error(value):
        raise invalid_value(f"{name} cannot contain control characters.")
    return value


@dataclass(frozen=True)
class Operation:
    op: str  # add, replace or remove
    path: str  # "" when the value holds the attributes
    value: object


def patch_operations(body: dict) -> list[Operation]:
    """The operations of a PATCH request (RFC 7644 section 3.5.2). Okta and Entra ID differ in case ("replace",
    "Replace") and in where they put the attribute (the path, or the keys of a value object): both are read."""
    if PATCH_SCHEMA not in (body.get("schemas") or []):
        raise ScimError(400, f"A PATCH body must name the schema {PATCH_SCHEMA}.", "invalidSyntax")
    raw_operations = body.get("Operations")
    if not isinstance(raw_operations, list) or not raw_operations:
        raise ScimError(400, "A PATCH body must hold a non-empty Operations list.", "invalidSyntax")
    operations = []
    for raw in raw_operations:
        if not isinstance(raw, dict):
            raise ScimError(400, "Each operation must be a JSON object.", "invalidSyntax")
        op = raw.get("op")
        if not isinstance(op, str) or op.lower() not in ("add", "replace", "remove"):
            raise ScimError(400, "Each operation's op must be add, replace or remove.", "invalidSyntax")
        path = raw.get("path", "")
        if not isinstance(path, str):
            raise ScimError(400, "An operation's path must be a string.", "invalidPath")
        if not path and op.lower() != "remove" and not isinstance(raw.get("value"), dict):
            raise ScimError(400, "An operation without a path must have an object for its value.", "invalidSyntax")
        if not path and op.lower() == "remove":
            raise ScimError(400, "A remove operation needs a path.", "noTarget")
        operations.append(Operation(op.lower(), path.strip(), raw.get("value")))
    return operations


# members[value eq "id"]: the path with which Okta and Entra ID remove one member from a group.
_MEMBER_PATH = re.compile(r'^members\[\s*value\s+eq\s+"([^"\\]*)"\s*\]$', re.IGNORECASE)


def member_in_path(path: str) -> str | None:
    """The member id a ``members[value eq "id"]`` path names; None for another path."""
    match = _MEMBER_PATH.match(path)
    return match.group(1) if match else None


def member_ids(value: object) -> list[str]:
    """The ids of a members value: ``[{"value": "<id>", "display": ...}, ...]`` (one object alone is accepted)."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise invalid_value("members must be a list of objects with a value.")
    ids = []
    for member in value:
        if not isinstance(member, dict) or not isinstance(member.get("value"), str):
            raise invalid_value("Each member must be an object with a string value (the user's id).")
        ids.append(member["value"])
    return ids


def uuid_or_none(value: str) -> uuid.UUID | None:
    """A resource id as stored (a UUID), or None for a value that cannot be one (so that it matches nothing)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
