"""Kibana's spaces API: ``/api/spaces/space`` (list, create), ``/api/spaces/space/<id>`` (get, update, delete) and
``/api/spaces/_copy_saved_objects`` for connectors, with Kibana's bodies and messages (docs/KIBANA.md, 'Spaces').

Anyone signed in lists and reads the spaces where they hold a role (a space where they hold none is answered as
missing); superusers create, change and delete spaces (connectors/access/policy.py, ``manages_spaces``).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse

from connectors import lookup
from connectors.access.policy import holds_a_role_in, manages_spaces, may
from connectors.api.endpoint import ApiError, json_endpoint, json_object_body
from connectors.permissions import ADD_CONNECTOR, VIEW_CONNECTOR
from connectors.space_management import SpaceNotDeletable, copy_connector, delete_space
from connectors.spaces import directory
from connectors.spaces.models import (
    COLOR_MESSAGE,
    COLOR_PATTERN,
    MAX_INITIALS,
    SPACE_ID_MESSAGE,
    SPACE_ID_PATTERN,
    Space,
)

SPACE_KEYS = {"id", "name", "description", "color", "initials", "disabledFeatures", "_reserved"}
COPY_KEYS = {"objects", "spaces", "includeReferences", "overwrite", "createNewCopies", "compatibilityMode"}
NOT_FOUND = "Not Found"  # Kibana's response.notFound() without a body


def space_json(space: Space) -> dict:
    """Kibana's space: keys without a value are left out; ``_reserved`` only on the default space."""
    data = {"id": space.id, "name": space.name}
    if space.description:
        data["description"] = space.description
    if space.color:
        data["color"] = space.color
    if space.initials:
        data["initials"] = space.initials
    data["disabledFeatures"] = []
    if space.is_reserved:
        data["_reserved"] = True
    return data


def _field_error(key: str, message: str) -> ApiError:
    return ApiError(400, f"[request body.{key}]: {message}")


def _string(body: dict, key: str, *, required: bool = False) -> str | None:
    if key not in body:
        if required:
            raise _field_error(key, "expected value of type [string] but got [undefined]")
        return None
    value = body[key]
    if not isinstance(value, str):
        raise _field_error(key, f"expected value of type [string] but got [{type(value).__name__}]")
    return value


def read_space_body(body: dict, action: str) -> dict:
    """The validated fields of a space body, with @kbn/config-schema's sentences (Kibana's space_schema.ts)."""
    unknown = sorted(set(body) - SPACE_KEYS)
    if unknown:
        raise _field_error(unknown[0], "definition for this key is missing")
    space_id = _string(body, "id", required=True)
    if not SPACE_ID_PATTERN.match(space_id):
        raise _field_error("id", SPACE_ID_MESSAGE)
    name = _string(body, "name", required=True)
    if len(name) < 1:
        raise _field_error("name", "value has length [0] but it must have a minimum length of [1].")
    initials = _string(body, "initials") or ""
    if len(initials) > MAX_INITIALS:
        raise _field_error("initials", f"value has length [{len(initials)}] but it must have a maximum length of "
                                       f"[{MAX_INITIALS}].")
    color = _string(body, "color") or ""
    if color and not COLOR_PATTERN.match(color):
        raise _field_error("color", COLOR_MESSAGE)
    disabled = body.get("disabledFeatures", [])
    if not isinstance(disabled, list):
        raise _field_error("disabledFeatures", "expected value of type [array] but got [" + type(disabled).__name__ + "]")
    if disabled:
        # Kibana's answer when feature visibility is off; this app has no features to hide.
        raise ApiError(400, f"Unable to {action} Space, the disabledFeatures array must be empty when "
                            "xpack.spaces.allowFeatureVisibility setting is disabled")
    return {"id": space_id, "name": name.strip(), "description": _string(body, "description") or "",
            "color": color, "initials": initials}


def _require_manager(user, action: str) -> None:
    if not manages_spaces(user):
        raise ApiError(403, f"Unauthorized to {action} spaces")


def _visible_space(user, space_id: str) -> Space:
    space = Space.objects.filter(pk=space_id).first()
    if space is None or not holds_a_role_in(user, space):
        raise ApiError(404, NOT_FOUND)
    return space


def _create(user, fields: dict) -> Space:
    _require_manager(user, "create")
    space = Space(**fields)
    try:
        space.full_clean(validate_unique=False)
        with transaction.atomic():
            space.save(force_insert=True)
    except ValidationError as exc:
        raise ApiError(400, "; ".join(exc.messages)) from None
    except IntegrityError:
        raise ApiError(409, f"A space with the identifier {fields['id']} already exists.") from None
    return space


def _update(user, space_id: str, fields: dict) -> Space:
    _require_manager(user, "update")
    space = Space.objects.filter(pk=space_id).first()
    if space is None:
        raise ApiError(404, NOT_FOUND)
    for name in ("name", "description", "color", "initials"):
        setattr(space, name, fields[name])
    space.save()
    return space


def _delete(user, space_id: str) -> None:
    _require_manager(user, "delete")
    space = Space.objects.filter(pk=space_id).first()
    if space is None:
        raise ApiError(404, NOT_FOUND)
    try:
        delete_space(space)
    except SpaceNotDeletable as exc:
        raise ApiError(400 if space.is_reserved else 409, exc.message) from None


def _spaces_of(user) -> list[dict]:
    return [space_json(space) for space in directory.all_spaces().values() if holds_a_role_in(user, space)]


@json_endpoint({"GET": None, "POST": None})
async def spaces(request):
    if request.method == "POST":
        fields = read_space_body(json_object_body(request), "create")
        space = await sync_to_async(_create)(request.user, fields)
        return JsonResponse(space_json(space))
    return JsonResponse(await sync_to_async(_spaces_of)(request.user), safe=False)


@json_endpoint({"GET": None, "PUT": None, "DELETE": None})
async def space_detail(request, space_id: str):
    if request.method == "PUT":
        fields = read_space_body(json_object_body(request), "update")
        space = await sync_to_async(_update)(request.user, space_id, fields)
        return JsonResponse(space_json(space))
    if request.method == "DELETE":
        await sync_to_async(_delete)(request.user, space_id)
        return HttpResponse(status=204)
    space = await sync_to_async(_visible_space)(request.user, space_id)
    return JsonResponse(space_json(space))


def _read_copy_body(body: dict) -> tuple[list[str], list[str], bool]:
    unknown = sorted(set(body) - COPY_KEYS)
    if unknown:
        raise _field_error(unknown[0], "definition for this key is missing")
    objects, destinations = body.get("objects"), body.get("spaces")
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise _field_error("objects", "expected value of type [array] but got [" + type(objects).__name__ + "]")
    if not isinstance(destinations, list) or not all(isinstance(s, str) for s in destinations):
        raise _field_error("spaces", "expected value of type [array] but got [" + type(destinations).__name__ + "]")
    for index, space_id in enumerate(destinations):
        if not SPACE_ID_PATTERN.match(space_id):
            raise _field_error(f"spaces.{index}", SPACE_ID_MESSAGE)
    if len(set(destinations)) != len(destinations):
        raise _field_error("spaces", "duplicate space ids are not allowed")
    ids = []
    for index, item in enumerate(objects):
        if item.get("type") != "action":
            raise ApiError(400, f"[request body.objects.{index}.type]: only connectors (type action) can be copied "
                                "here")
        if not isinstance(item.get("id"), str):
            raise _field_error(f"objects.{index}.id", "expected value of type [string]")
        ids.append(item["id"])
    if len(set(ids)) != len(ids):
        raise _field_error("objects", "duplicate objects are not allowed")
    return ids, destinations, body.get("createNewCopies", True) is not False


def _copy(user, ids: list[str], destinations: list[str], new_copies: bool) -> dict:
    if not may(user, VIEW_CONNECTOR):
        raise ApiError(403, f"Unauthorized: this needs the {VIEW_CONNECTOR} permission.")
    sources = []
    for connector_id in ids:
        connector = lookup.find(connector_id)
        if connector is None:
            raise ApiError(404, f"Saved object [action/{connector_id}] not found")
        if connector.is_preconfigured:
            raise ApiError(400, f"Preconfigured action {connector_id} is in every space and cannot be copied.")
        sources.append(connector)
    results = {}
    for space_id in destinations:
        destination = directory.get(space_id)
        if destination is None or not holds_a_role_in(user, destination):
            results[space_id] = _failed(404, f"Saved object [space/{space_id}] not found")
        elif not may(user, ADD_CONNECTOR, destination):
            results[space_id] = _failed(403, "Unable to bulk_create action")
        elif not new_copies:
            errors = [{"id": c.pk, "type": "action", "meta": {"title": c.name},
                       "error": {"type": "conflict", "destinationId": c.pk}} for c in sources]
            results[space_id] = {"success": False, "successCount": 0, "errors": errors}
        else:
            copied = []
            for connector in sources:
                copy = copy_connector(connector, destination, by=user)
                copied.append({"type": "action", "id": connector.pk, "destinationId": copy.pk,
                               "meta": {"title": connector.name, "icon": "logoOpenAI"}})
            results[space_id] = {"success": True, "successCount": len(copied), "successResults": copied}
    return results


def _failed(status: int, message: str) -> dict:
    error = {"statusCode": status, "error": "Not Found" if status == 404 else "Forbidden", "message": message}
    return {"success": False, "successCount": 0, "errors": [error]}


@json_endpoint({"POST": None})
async def copy_saved_objects(request):
    ids, destinations, new_copies = _read_copy_body(json_object_body(request))
    return JsonResponse(await sync_to_async(_copy)(request.user, ids, destinations, new_copies))


@json_endpoint({"GET": None})
async def active_space(request):
    """The space of the URL, as Kibana's ``/internal/spaces/_active_space`` answers it (the header's switcher)."""
    space = request.space
    if not await sync_to_async(holds_a_role_in)(request.user, space):
        raise ApiError(404, NOT_FOUND)
    return JsonResponse(space_json(space))
