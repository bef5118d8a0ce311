"""Rules for a connector's configuration, shared by the model (and so the forms) and the JSON API."""

import base64
import binascii
import re
from urllib.parse import parse_qs, urlsplit

from django.conf import settings

from connectors.actions_config import default_port

OPENAI_DEFAULT_URL = "https://api.openai.com/v1/chat/completions"
AZURE_DEPLOYMENTS_URL_PATTERN = (
    "https://{resource}.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version={version}"
)
AZURE_V1_URL_PATTERN = "https://{resource}.openai.azure.com/openai/v1/chat/completions"
OPENAI_DEFAULT_MODEL = "gpt-4.1"  # Kibana's DEFAULT_MODEL, stored at create/update (docs/KIBANA.md 1.1)
# Offered by the create form for Other: Ollama's OpenAI-compatible endpoint on this machine.
OTHER_DEFAULT_URL = "http://localhost:11434/v1/chat/completions"

# RFC 9110 token characters; a header name outside them would be rejected (or worse, split) on the wire.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Anywhere in the path, so that API Management and proxy prefixes pass, as in Kibana (docs/KIBANA.md 4.8).
_AZURE_DEPLOYMENTS_PATH = re.compile(
    r"/openai/deployments/[^/]+/(?:chat/completions|completions|extensions/chat/completions)/?$"
)
_AZURE_V1_PATH = re.compile(r"/openai/v1/.+")
# Hosts of Azure itself, which answer 404 to a deployments URL without api-version (an API Management gateway may
# add the query itself, so other hosts are not held to it).
_AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
# Where a deployments URL names its deployment, wherever the path puts it (a gateway may prefix the path).
_AZURE_DEPLOYMENT_SEGMENT = re.compile(r"/openai/deployments/(?P<deployment>[^/]+)/")
MAX_HEADERS = 50
# Headers that belong to the connection, its framing or its routing, which the HTTP client sets itself: a
# Content-Length or Transfer-Encoding of our own would desynchronise a pooled connection, Host would route around
# allowedHosts at a virtual-host gateway, Expect would stall every call. See README "Connectors".
FORBIDDEN_HEADERS = frozenset(
    name.lower()
    for name in (
        "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Expect", "Upgrade", "TE",
        "Trailer", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "HTTP2-Settings",
        "Content-Encoding", "Forwarded", "X-Forwarded-Host",
    )
)
FORBIDDEN_HEADER_PREFIXES = ("proxy-", ":")
# A header value is visible ASCII, spaces and tabs (RFC 9110 field-value without obsolete text).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


# What to put in place of each part of the documented URL shapes that a user copied without filling it in.
PLACEHOLDER_HINTS = {
    "resource": "your Azure OpenAI resource name",
    "deployment": "your deployment name",
    "version": "an API version such as 2024-10-21",
}
# A template part left in a URL: {resource}, or its URL-encoded form %7Bresource%7D.
_PLACEHOLDER = re.compile(r"\{([^{}/]*)\}|%7B([^/%]*)%7D", re.IGNORECASE)


def placeholder_error(url: str) -> str | None:
    """A URL still holding a ``{part}`` of a documented shape: say which part to fill in, and with what."""
    match = _PLACEHOLDER.search(url)
    if match is None:
        return None
    part = match.group(1) if match.group(1) is not None else match.group(2)
    hint = PLACEHOLDER_HINTS.get(part.lower(), "its value")
    return f"Replace {{{part}}} in the URL with {hint}."


CONNECTOR_CREDENTIALS_HINT = "put the provider's key in the API key field, or other credentials in the headers"


def url_error(url: str, credentials_hint: str = CONNECTOR_CREDENTIALS_HINT) -> str | None:
    """Why ``url`` cannot be an upstream URL, or None. ``credentials_hint`` says where credentials go instead of the
    URL's userinfo."""
    placeholder = placeholder_error(url)
    if placeholder:
        return placeholder
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "Enter a valid URL."
    if parts.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    if _CONTROL_CHARACTERS.search(url) or any(char.isspace() for char in url.strip()):
        return "The URL cannot contain spaces or control characters."
    if "\\" in url:
        # Browsers and some clients read a backslash as "/", others keep it: the host would depend on who parses.
        return "The URL cannot contain a backslash (\\)."
    if "@" in parts.netloc:
        return f"The URL cannot contain a user name or password (user:pass@host); {credentials_hint}."
    if not parts.hostname:
        return "The URL must include a hostname."
    return None


def url_origin(url: str) -> tuple[str, str, int] | None:
    """The scheme, host and effective port a URL reaches (its origin), or None for a malformed port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default_port(parts.scheme.lower())


def is_azure_deployments_url(url: str) -> bool:
    return bool(_AZURE_DEPLOYMENTS_PATH.search(urlsplit(url).path))


def azure_deployment(url: str) -> str:
    """The deployment named by an Azure deployments URL (``.../openai/deployments/{deployment}/chat/completions``),
    or "" for any other URL: on such a connector the deployment is the model."""
    match = _AZURE_DEPLOYMENT_SEGMENT.search(urlsplit(url).path)
    return match["deployment"] if match else ""


def azure_url_error(url: str) -> str | None:
    parts = urlsplit(url)
    on_azure = (parts.hostname or "").endswith(_AZURE_HOST_SUFFIXES)
    if _AZURE_DEPLOYMENTS_PATH.search(parts.path):
        if on_azure and not parse_qs(parts.query).get("api-version"):
            return f"An Azure deployments URL needs an api-version query: {AZURE_DEPLOYMENTS_URL_PATTERN}"
        return None
    if _AZURE_V1_PATH.search(parts.path):
        return None
    # An API Management gateway or proxy may expose any path (Kibana posts to apiUrl as it is).
    if not on_azure and parts.path.rstrip("/").endswith("/chat/completions"):
        return None
    return (
        "The Azure OpenAI URL must look like "
        f"{AZURE_DEPLOYMENTS_URL_PATTERN} or {AZURE_V1_URL_PATTERN} (any host name, any path prefix)."
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
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            return f"{_shown(name)} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)."
        if is_forbidden_header(name):
            return (f"The header {name} cannot be set: it is a connection, framing or routing header that the HTTP "
                    "client manages itself.")
        if not isinstance(value, str):
            return f"The value of header {name} must be a string."
        if not _HEADER_VALUE.fullmatch(value):
            return (f"The value of header {name} can hold only printable ASCII characters, spaces and tabs (no line "
                    "breaks or other control characters).")
    return None


def is_forbidden_header(name: str) -> bool:
    """A connection, framing or routing header, which only the HTTP client may set."""
    return name.lower() in FORBIDDEN_HEADERS or name.lower().startswith(FORBIDDEN_HEADER_PREFIXES)


def _shown(value: object) -> str:
    """A value quoted for a message, control characters escaped and length bounded."""
    return repr(value)[:80]


def text_error(value: str) -> str | None:
    """Why a short text field (a name, a model, an id) cannot be stored: NUL and other control characters, which
    PostgreSQL refuses in text and which no name needs. None when it is fine."""
    if _CONTROL_CHARACTERS.search(value):
        return "This field cannot contain control characters (such as NUL or a line break)."
    return None


def api_key_error(api_key: str) -> str | None:
    """An API key is sent in a header: it cannot hold spaces, line breaks or other control characters."""
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in api_key):
        return "The API key cannot contain spaces, line breaks or control characters."
    return None


# Kibana's connector-type validation sentences (docs/KIBANA.md 1.1, 6), for the API's error messages.
CONFIG_ERROR_PREFIX = "error validating action type config: "
SECRETS_ERROR_PREFIX = "error validating action type secrets: "


def kibana_url_error(url: str) -> str | None:
    """Kibana's ``configValidator`` verdict on ``apiUrl`` (URL shape, then allowedHosts), or None."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "Error configuring OpenAI action: Error: URL Error: Invalid URL"
    if not parts.scheme or not parts.netloc:
        return "Error configuring OpenAI action: Error: URL Error: Invalid URL"
    if not parts.hostname:
        return "Error configuring OpenAI action: Error: URL Error: URL must contain hostname"
    if parts.scheme not in ("http", "https"):
        return "Error configuring OpenAI action: Error: URL Error: Invalid protocol"
    if not settings.ACTIONS_CONFIG.is_host_allowed(parts.hostname):
        return (
            f'Error configuring OpenAI action: Error: error validating url: target url "{url}" is not added to the '
            "Kibana config xpack.actions.allowedHosts"
        )
    return None


_PEM_FORMAT = 'Invalid {what} file format: The file must be a PEM-encoded {kind} beginning with {begins}.'
_CERTIFICATE_BEGIN = '"-----BEGIN CERTIFICATE-----"'
_KEY_BEGIN = '"-----BEGIN PRIVATE KEY-----" or "-----BEGIN RSA PRIVATE KEY-----"'


def decode_pem(data: str) -> str:
    """The PEM text of a base64-encoded secret (Kibana takes PKI material base64-encoded); "" if it is not base64."""
    try:
        return base64.b64decode(data.strip(), validate=False).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return ""


def pki_secrets_error(certificate_data: str, private_key_data: str, ca_data: str) -> str | None:
    """Kibana's ``pkiSecretsValidator`` (docs/KIBANA.md 1.2): both parts present, each with the right PEM header.

    As in Kibana only the headers are checked here; a certificate that does not load fails when it is used.
    """
    if not certificate_data:
        return "Certificate data must be provided for PKI"
    if not private_key_data:
        return "Private key data must be provided for PKI"
    if "-----BEGIN CERTIFICATE-----" not in decode_pem(certificate_data):
        return _PEM_FORMAT.format(what="Certificate data", kind="certificate", begins=_CERTIFICATE_BEGIN)
    key = decode_pem(private_key_data)
    if "-----BEGIN PRIVATE KEY-----" not in key and "-----BEGIN RSA PRIVATE KEY-----" not in key:
        return _PEM_FORMAT.format(what="Private key data", kind="private key", begins=_KEY_BEGIN)
    if ca_data and "-----BEGIN CERTIFICATE-----" not in decode_pem(ca_data):
        return _PEM_FORMAT.format(what="CA certificate data", kind="certificate", begins=_CERTIFICATE_BEGIN)
    return None


def schema_type_of(value: object) -> str:
    """The type name Kibana's schema errors print for a JSON value (``but got [<type>]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "Array"
    return "Object"
