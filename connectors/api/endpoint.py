"""What every JSON endpoint shares: authentication, permission checks, Kibana's error body, body parsing."""

import json
from functools import wraps
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connectors.api.auth import NotAuthenticated, authenticate_request


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JsonResponse:
    """Kibana's error body: ``{"statusCode", "error", "message"}``."""
    response = JsonResponse({"statusCode": status, "error": HTTPStatus(status).phrase, "message": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="connectors-admin", charset="UTF-8"'
    return response


def read_json_body(request) -> object:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApiError(413, "The request body is too large.") from None
    if not raw:
        raise ApiError(400, "[request body]: expected a JSON object but got an empty body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"[request body]: invalid JSON: {exc}") from None


def json_object_body(request) -> dict:
    body = read_json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "[request body]: expected a JSON object")
    return body


def api_endpoint(methods: dict[str, str | None]):
    """An async JSON endpoint. ``methods`` maps each allowed HTTP method to the permission it needs (or None)."""

    def decorator(view):
        @csrf_exempt  # CSRF is enforced in authenticate_request for session-authenticated writes only
        @wraps(view)
        async def wrapper(request, *args, **kwargs):
            permission = methods.get(request.method, "")
            if permission == "":
                response = error_response(405, f"Method {request.method} is not allowed here.")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                request.user = await authenticate_request(request)
            except NotAuthenticated as exc:
                return error_response(401, str(exc))
            if permission and not request.user.has_perm(permission):
                return error_response(403, f"Unauthorized: this needs the {permission} permission.")
            try:
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.message)

        return wrapper

    return decorator
