"""What every JSON endpoint shares: the method check, authentication, the permission check, the connector lookup's
403 and 404, body parsing, and the error body, in one of two shapes.

Kibana's API (and the usage API, which follows it) answers errors as ``{"statusCode", "error", "message"}``
(docs/KIBANA.md, 'HTTP routes'); the OpenAI-compatible API as ``{"error": {"message", "type", "param", "code"}}``,
which the SDKs parse (docs/OPENAI.md, 'Errors'). ``json_endpoint(methods, errors=...)`` takes the shape as a
parameter, so both APIs run the same guard in the same order: 405, 401 (or 429 when failed logins are throttled),
400 for a write that could come from another site (docs/KIBANA.md, 'HTTP routes', kbn-xsrf), 403, then the view
(whose lookup may answer 404).

When the database cannot be reached, credentials that are not cached (and sessions) cannot be checked, and a view
may fail to read what it needs: both are answered 503 with ``Retry-After`` in the endpoint's shape, never 500
(README "Guarantees").
"""

from functools import wraps
from http import HTTPStatus

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connectors import json_codec, untrusted_json
from connectors.access.policy import may
from connectors.api.auth import (
    MISSING_CREDENTIALS,
    XSRF_MESSAGE,
    NotAuthenticated,
    Throttled,
    authenticate_request,
    lacks_xsrf_header,
    writes_as_basic_without_json,
)
from connectors.lookup import ConnectorNotFound

# What a connection to a database that is stopped, restarting or cut off raises (not a refused value: DataError).
DATABASE_UNREACHABLE = (OperationalError, InterfaceError)
DATABASE_UNAVAILABLE_MESSAGE = "The database is unavailable. Retry later."
RETRY_AFTER_OUTAGE_SECONDS = 5


class ApiError(Exception):
    """An error answer, raised anywhere below a JSON endpoint. ``error_type``, ``code`` and ``param`` are the
    OpenAI shape's fields (Kibana's shape has no place for them)."""

    def __init__(self, status: int, message: str, *, error_type: str | None = None, code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param


class KibanaErrors:
    """Kibana's error body and messages. Sessions are accepted (the pages call this API too)."""

    allow_session = True

    def response(self, status: int, message: str, **_openai_fields) -> JsonResponse:
        body = {"statusCode": status, "error": HTTPStatus(status).phrase, "message": message}
        response = JsonResponse(body, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Basic realm="connectors-admin", charset="UTF-8"'
        return response

    def unauthenticated(self, problem: str) -> JsonResponse:
        # Kibana answers a request without credentials with hapi's bare "Unauthorized", which scripts match on;
        # credentials that are wrong keep the reason (Kibana's security plugin words those itself).
        return self.response(401, "Unauthorized" if problem == MISSING_CREDENTIALS else problem)

    def throttled(self, exc: Throttled) -> JsonResponse:
        response = self.response(429, exc.message)
        response["Retry-After"] = str(exc.retry_after)
        return response

    def cross_site_refusal(self, request) -> JsonResponse | None:
        """Kibana's rule: a write with Basic or session credentials needs kbn-xsrf."""
        return self.response(400, XSRF_MESSAGE) if lacks_xsrf_header(request) else None

    def forbidden(self, permission: str) -> JsonResponse:
        return self.response(403, f"Unauthorized: this needs the {permission} permission.")

    def unavailable(self) -> JsonResponse:
        response = self.response(503, DATABASE_UNAVAILABLE_MESSAGE)
        response["Retry-After"] = str(RETRY_AFTER_OUTAGE_SECONDS)
        return response

    def not_found(self, connector_id: str) -> JsonResponse:
        return self.response(404, f"Saved object [action/{connector_id}] not found")


class OpenAIErrors:
    """OpenAI's error body. Token-authenticated only: without a session there is no CSRF exposure."""

    allow_session = False

    def response(self, status: int, message: str, *, error_type: str | None = None, code: str | None = None,
                 param: str | None = None) -> JsonResponse:
        error_type = error_type or ("api_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
        response = JsonResponse(body, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="connectors-admin"'
        return response

    def unauthenticated(self, problem: str) -> JsonResponse:
        return self.response(401, f"{problem} Send Authorization: Bearer <API key>.", code="invalid_api_key")

    def throttled(self, exc: Throttled) -> JsonResponse:
        response = self.response(429, exc.message, error_type="requests", code="rate_limit_exceeded")
        response["Retry-After"] = str(exc.retry_after)
        return response

    def cross_site_refusal(self, request) -> JsonResponse | None:
        """The SDKs never send kbn-xsrf, so Basic writes need a JSON content type instead (README "OpenAI-compatible
        endpoint"); Bearer and ApiKey callers, whose keys a browser never holds, need neither."""
        if not writes_as_basic_without_json(request):
            return None
        return self.response(400, "A request with HTTP Basic credentials must send Content-Type: application/json "
                             "(or a kbn-xsrf header); SDKs use Authorization: Bearer <API key>.", code="xsrf_protection")

    def forbidden(self, permission: str) -> JsonResponse:
        return self.response(403, f"You need the {permission} permission to use connectors.",
                             error_type="permission_error", code="insufficient_permissions")

    def unavailable(self) -> JsonResponse:
        # The code connectors/api/openai_compat.py answers for a connector it cannot read during an outage.
        response = self.response(503, DATABASE_UNAVAILABLE_MESSAGE, error_type="api_error",
                                 code="database_unavailable")
        response["Retry-After"] = str(RETRY_AFTER_OUTAGE_SECONDS)
        return response

    def not_found(self, connector_id: str) -> JsonResponse:
        return self.response(404, f"The connector {connector_id!r} does not exist.", code="connector_not_found")


KIBANA_ERRORS = KibanaErrors()
OPENAI_ERRORS = OpenAIErrors()


def json_response(data, status: int = 200) -> HttpResponse:
    """``JsonResponse(data, safe=False)``, encoded by orjson when it can (connectors/json_codec.py): the answer of
    every execution. Compact and in UTF-8 rather than ASCII escapes: the same JSON to any parser."""
    body = json_codec.dumps_or_none(data)
    if body is None:
        return JsonResponse(data, status=status, safe=False)
    return HttpResponse(body, status=status, content_type="application/json")


def read_json_body(request, *, replace_lone_surrogates: bool = False) -> object:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApiError(413, "The request body is too large.") from None
    if not raw:
        raise ApiError(400, "[request body]: expected a JSON object but got an empty body")
    try:
        return untrusted_json.loads(raw, replace_lone_surrogates=replace_lone_surrogates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"[request body]: invalid JSON: {exc}") from None


def json_object_body(request) -> dict:
    body = read_json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "[request body]: expected a JSON object")
    return body


def json_endpoint(methods: dict[str, str | None], errors: KibanaErrors | OpenAIErrors = KIBANA_ERRORS):
    """An async JSON endpoint. ``methods`` maps each allowed HTTP method to the permission it needs (or None);
    ``errors`` is the error shape. The view sees the authenticated caller as ``request.user`` and
    ``await request.auser()``, so ``aget_connector_or_404(request, ...)`` checks the API caller."""

    def decorator(view):
        @csrf_exempt  # CSRF is enforced in authenticate_request for session-authenticated writes only
        @wraps(view)
        async def wrapper(request, *args, **kwargs):
            permission = methods.get(request.method, "")
            if permission == "":
                response = errors.response(405, f"Method {request.method} is not allowed here.")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                user = await authenticate_request(request, allow_session=errors.allow_session)
            except NotAuthenticated as exc:
                return errors.unauthenticated(str(exc)) if exc.status == 401 else errors.response(exc.status, str(exc))
            except Throttled as exc:
                return errors.throttled(exc)
            except DATABASE_UNREACHABLE:
                return errors.unavailable()
            refusal = errors.cross_site_refusal(request)
            if refusal is not None:
                return refusal
            request.user = user
            request.auser = _returns(user)
            if permission and not may(user, permission):
                return errors.forbidden(permission)
            try:
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return errors.response(exc.status, exc.message, error_type=exc.error_type, code=exc.code,
                                       param=exc.param)
            except ConnectorNotFound as exc:
                return errors.not_found(exc.connector_id)
            except PermissionDenied:
                return errors.forbidden(permission)
            except DATABASE_UNREACHABLE:
                return errors.unavailable()

        return wrapper

    return decorator


@csrf_exempt  # nothing is changed, and a browser's POST to a wrong path should see the 404 too
async def unknown_api_path(request, *args, **kwargs):
    """Every other path under /api/: Kibana's (hapi's) JSON 404, whatever the method or the credentials."""
    return KIBANA_ERRORS.response(404, "Not Found")


def no_content() -> HttpResponse:
    """A 204 without a Content-Type, as Kibana sends it (there is no content to type)."""
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


def _returns(user):
    async def auser():
        return user

    return auser


def declared_length(request) -> int:
    """The request's Content-Length as the client declared it (0 when absent or not a number): an event's
    request size when the body is refused before it is read."""
    value = request.META.get("CONTENT_LENGTH", "")
    return int(value) if value.isdigit() and value.isascii() else 0
