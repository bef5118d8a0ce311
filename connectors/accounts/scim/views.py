"""The SCIM 2.0 endpoints under /scim/v2/ (README "SCIM provisioning"): Users, Groups and ServiceProviderConfig.

Every request needs ``Authorization: Bearer <SCIM_BEARER_TOKEN>`` (compared in constant time); with no token set
the endpoints answer 404, as if they did not exist. Each request runs in one transaction, so a change and its
audit records (actor "scim", how "API") commit together or not at all. Errors are answered in SCIM's error schema.
"""

import hmac
import logging
from functools import wraps

from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, transaction
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connectors.accounts.scim import groups, protocol, users
from connectors.accounts.scim.protocol import CONTENT_TYPE, ScimError
from connectors.audit import context as audit_context
from connectors.audit.choices import Via

logger = logging.getLogger(__name__)
ACTOR = "scim"
_WRITES = ("POST", "PUT", "PATCH")


def _answer(body: dict | None, status: int = 200, location: str = "") -> HttpResponse:
    if body is None:
        return HttpResponse(status=status)
    response = JsonResponse(body, status=status, content_type=CONTENT_TYPE)
    if location:
        response["Location"] = location
    return response


def _error(exc: ScimError) -> HttpResponse:
    response = _answer(exc.body(), exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="SCIM"'
    return response


def _check_token(request) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = settings.SCIM_BEARER_TOKEN.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise ScimError(401, "A valid SCIM bearer token is required.")


def _body(request) -> dict:
    content_type = (request.content_type or "").lower()
    if content_type not in protocol.ACCEPTED_CONTENT_TYPES:
        raise ScimError(415, "Send the body as application/scim+json (or application/json).")
    return protocol.parse_body(request.body)


def scim_endpoint(*methods: str):
    def decorator(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not settings.SCIM_BEARER_TOKEN:
                return _error(ScimError(404, "SCIM provisioning is not configured here."))
            try:
                _check_token(request)
                if request.method not in methods:
                    raise ScimError(405, f"{request.method} is not supported here; use {', '.join(methods)}.")
                body = _body(request) if request.method in _WRITES else None
                with audit_context.acting(via=Via.API, request=request, user=None, name=ACTOR):
                    with transaction.atomic():
                        return view(request, body, *args, **kwargs)
            except ScimError as exc:
                return _error(exc)
            except IntegrityError:  # a concurrent request created the same userName or displayName first
                return _error(ScimError(409, "The resource conflicts with one that exists already.", "uniqueness"))
            except (OperationalError, InterfaceError) as exc:
                logger.warning("SCIM %s %s answered 503: the database is unavailable: %s", request.method,
                               request.path, exc)
                response = _error(ScimError(503, "The database is unavailable. Retry later."))
                response["Retry-After"] = "5"
                return response
            except DatabaseError as exc:  # a value the database refuses: the request's fault, not a 500
                logger.warning("SCIM %s %s refused by the database: %s", request.method, request.path, exc)
                return _error(ScimError(400, "A value in the request cannot be stored.", "invalidValue"))

        return wrapper

    return decorator


def _location(request, kind: str, scim_id) -> str:
    return request.build_absolute_uri(f"/scim/v2/{kind}/{scim_id}")


def _listing(request, queryset, filters: dict, render) -> HttpResponse:
    if request.GET.get("filter"):
        field, value = protocol.parse_filter(request.GET["filter"], filters)
        if field == "scim_id":
            value = protocol.uuid_or_none(value)
        queryset = queryset.filter(**{field: value}) if value is not None else queryset.none()
    start_index, count = protocol.page_bounds(request.GET)
    total = queryset.count()
    page = list(queryset[start_index - 1:start_index - 1 + count]) if count else []
    return _answer(protocol.list_response([render(item) for item in page], total, start_index))


def _without_members(request) -> bool:
    """Entra ID asks for groups with ``excludedAttributes=members``."""
    excluded = request.GET.get("excludedAttributes", "")
    return "members" in {name.strip().lower() for name in excluded.split(",")}


@scim_endpoint("GET", "POST")
def user_list(request, body):
    if request.method == "POST":
        scim_user = users.create(body)
        location = _location(request, "Users", scim_user.scim_id)
        return _answer(users.to_resource(scim_user, location), 201, location)
    return _listing(request, users.provisioned().order_by("pk"), users.FILTERS,
                    lambda item: users.to_resource(item, _location(request, "Users", item.scim_id)))


@scim_endpoint("GET", "PUT", "PATCH", "DELETE")
def user_detail(request, body, scim_id: str):
    scim_user = users.find(scim_id)
    if request.method == "DELETE":
        users.delete(scim_user)
        return _answer(None, 204)
    if request.method == "PUT":
        users.replace(scim_user, body)
    elif request.method == "PATCH":
        users.patch(scim_user, protocol.patch_operations(body))
    scim_user.refresh_from_db()
    return _answer(users.to_resource(scim_user, _location(request, "Users", scim_user.scim_id)))


@scim_endpoint("GET", "POST")
def group_list(request, body):
    if request.method == "POST":
        group = groups.create(body)
        location = _location(request, "Groups", group.scim_id)
        return _answer(groups.to_resource(group, location), 201, location)
    with_members = not _without_members(request)
    return _listing(request, groups.ScimGroup.objects.order_by("pk"), groups.FILTERS,
                    lambda item: groups.to_resource(item, _location(request, "Groups", item.scim_id),
                                                    with_members=with_members))


@scim_endpoint("GET", "PUT", "PATCH", "DELETE")
def group_detail(request, body, scim_id: str):
    group = groups.find(scim_id)
    if request.method == "DELETE":
        groups.delete(group)
        return _answer(None, 204)
    if request.method == "PUT":
        groups.replace(group, body)
    elif request.method == "PATCH":
        groups.patch(group, protocol.patch_operations(body))
    location = _location(request, "Groups", group.scim_id)
    return _answer(groups.to_resource(group, location, with_members=not _without_members(request)))


@scim_endpoint("GET")
def service_provider_config(request, body):
    return _answer({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": protocol.MAX_PAGE_SIZE},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "Bearer token",
                                   "description": "The SCIM_BEARER_TOKEN setting, sent as Authorization: Bearer."}],
    })
