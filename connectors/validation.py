"""Rules for a connector's configuration, shared by the model (and so the forms) and the JSON API."""

import re
from urllib.parse import parse_qs, urlsplit

from django.conf import settings

OPENAI_DEFAULT_URL = "https://api.openai.com/v1/chat/completions"
AZURE_DEPLOYMENTS_URL_PATTERN = (
    "https://{resource}.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version={version}"
)
AZURE_V1_URL_PATTERN = "https://{resource}.openai.azure.com/openai/v1/chat/completions"
OPENAI_DEFAULT_MODEL = "gpt-4o"

# RFC 9110 token characters; a header name outside them would be rejected (or worse, split) on the wire.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_AZURE_DEPLOYMENTS_PATH = re.compile(r"^/openai/deployments/[^/]+/chat/completions/?$")
_AZURE_V1_PATH = re.compile(r"^/openai/v1/.+")
MAX_HEADERS = 50


def url_error(url: str) -> str | None:
    """Why ``url`` cannot be an upstream URL, or None."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "Enter a valid URL."
    if parts.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    if not parts.hostname:
        return "The URL must include a hostname."
    return None


def is_azure_deployments_url(url: str) -> bool:
    return bool(_AZURE_DEPLOYMENTS_PATH.match(urlsplit(url).path))


def azure_url_error(url: str) -> str | None:
    parts = urlsplit(url)
    if _AZURE_DEPLOYMENTS_PATH.match(parts.path):
        if not parse_qs(parts.query).get("api-version"):
            return f"An Azure deployments URL needs an api-version query: {AZURE_DEPLOYMENTS_URL_PATTERN}"
        return None
    if _AZURE_V1_PATH.match(parts.path):
        return None
    return (
        "The Azure OpenAI URL must look like "
        f"{AZURE_DEPLOYMENTS_URL_PATTERN} or {AZURE_V1_URL_PATTERN} (any host name)."
    )


def host_not_allowed_error(url: str) -> str | None:
    hostname = urlsplit(url).hostname or ""
    if settings.ACTIONS_CONFIG.is_host_allowed(hostname):
        return None
    return f'The host "{hostname}" is not in the allowedHosts networking setting (ACTIONS_CONFIG).'


def headers_error(headers: object) -> str | None:
    if not isinstance(headers, dict):
        return "Headers must map header names to string values."
    if len(headers) > MAX_HEADERS:
        return f"At most {MAX_HEADERS} headers."
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            return f"{name!r} is not a valid header name."
        if not isinstance(value, str):
            return f"The value of header {name} must be a string."
        if "\r" in value or "\n" in value or "\0" in value:
            return f"The value of header {name} cannot contain line breaks."
    return None


def api_key_error(api_key: str) -> str | None:
    """An API key is sent in a header: it cannot hold spaces, line breaks or other control characters."""
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in api_key):
        return "The API key cannot contain spaces, line breaks or control characters."
    return None
