"""What a provider's error answer means for the caller: one reading of ``status >= 400`` for every path.

The non-streamed execution, the OpenAI-compatible passthrough and streams all turn an upstream 4xx/5xx into the
same ``UpstreamError``: Kibana's service message (the OpenAI connector's ``getResponseErrorMessage``, docs/KIBANA.md
4.4), how long to wait (``retry-after``/``retry-after-ms``, for 429 and 5xx), and the body with the provider key masked
(README, "Running a connector"). A failure without an HTTP status reads as Kibana's ``Unexpected API Error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from connectors.outbound.masking import loads_provider_json, mask_secret


@dataclass(frozen=True)
class UpstreamError:
    status: int
    message: str  # Kibana's service_message, safe to show and to store
    retry: bool  # worth retrying soon (429, 5xx): only these carry retry_after. The envelope says retry: true anyway.
    retry_after: float | None
    body: bytes  # the provider's body, its key masked


def upstream_error(status: int, headers: Mapping[str, str], body: bytes, api_key: str,
                   reason: str = "") -> UpstreamError:
    """The provider answered ``status`` >= 400 with ``body``: what to tell the caller and record."""
    # A provider may echo the key it was sent; it must not reach the caller or the event log.
    body = scrub_secret(body, api_key)
    retry = status == 429 or status >= 500
    after = retry_after_seconds(headers) if retry else None
    message = provider_error_message(status, body, reason)
    return UpstreamError(status=status, message=message, retry=retry, retry_after=after, body=body)


def not_json_message(status: int, headers: Mapping[str, str]) -> str:
    content_type = headers.get("content-type", "unknown")
    return f"Status code: {status}. Message: the provider's response is not JSON (content-type {content_type})"


def provider_error_message(status: int, body: bytes, reason: str = "") -> str:
    """Kibana's service_message for a provider's error answer, as its sub-action framework writes it:
    ``Status code: 422. Message: API Error: Unprocessable Entity - <error.message>``, and for 401
    ``Status code: 401. Message: Unauthorized API Error - <error.message>``. The provider's message is
    ``error.message``, or ``error`` when it is a string (LM Studio); nothing else, as in Kibana. ``reason`` is the
    provider's own reason phrase, which Kibana prints (axios's ``statusText``); the standard one stands in when the
    status line had none (HTTP/2 has none)."""
    reason = " ".join(reason.split())[:200]  # one line, bounded: it goes into messages and the event log
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
    detail = ""
    try:
        payload = loads_provider_json(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message") is not None:
        detail = str(error["message"])
    elif isinstance(error, str):
        detail = error
    message = "Unauthorized API Error" if status == 401 else f"API Error: {reason}"
    if detail:
        message = f"{message} - {detail[:1000]}"
    return f"Status code: {status}. Message: {message}"


def unexpected_error_message(code: str, message: str) -> str:
    """Kibana's service_message for a failure without an HTTP status (connection, TLS, timeout, size): the sub-action
    framework prints the missing status as ``undefined``; ``message`` is this app's sentence saying what happened."""
    return f"Status code: undefined. Message: Unexpected API Error: {code} - {message}"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def scrub_secret(body: bytes, secret: str) -> bytes:
    """``body`` with every form of ``secret`` masked (connectors/outbound/masking.py; transport masks already)."""
    return mask_secret(body, secret)
