"""Posting an alert to a webhook, under the connectors' outbound rules and one more (README, "Guarantees"):

- the URL passes the connectors' URL rules (http or https, no ``user:pass@``) and ``allowedHosts``;
- its host must resolve to public addresses only, unless ``allowedHosts`` lists the host or the address
  (connectors/destinations.py). This is checked at every delivery, and the connection goes to the address
  that was checked (the URL's name still goes in ``Host`` and in TLS's SNI and certificate check), so a name whose
  answer changes between the check and the connection (DNS rebinding) cannot lead anywhere else;
- a proxy only as ACTIONS_CONFIG says (``proxyUrl``, ``proxyBypassHosts``/``proxyOnlyHosts``), never from
  HTTP_PROXY & co. Through a proxy the proxy connects by name, as it does for connectors, under its own rules; the
  name is still refused when it resolves here to a non-public address;
- TLS as ACTIONS_CONFIG says (``ssl.verificationMode``, ``customHostSettings``);
- no redirect is followed (a 3xx is a failed delivery) and the response body is never read;
- one deadline for the whole exchange.

Every failure raises ``WebhookFailed``. Its text is for the server log (host and port at most, never the URL's path,
which may be a secret, as a Slack webhook's is); the alerts page shows ``DELIVERY_FAILED``, the same words for every
failure, so that it cannot tell which ports answer where.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

from connectors.actions_config import default_port
from connectors.destinations import Address, UnresolvedHost, refusal, resolve, url_destination_error
from connectors.outbound.transport import TransportProfile, profile_for, proxy_for, ssl_context_for
from connectors.validation import host_not_allowed_error, url_error

DELIVERY_FAILED = "Delivery failed: the webhook did not accept the alert (the server log says why)."
CREDENTIALS_HINT = "deliveries are authenticated with the signing secret instead"


class WebhookFailed(Exception):
    pass


def shown_webhook_url(url: str) -> str:
    """What pages, forms, records and logs may show of a webhook URL: its scheme, host and port. The path, query and
    fragment may be a secret (a Slack webhook's path is its token; others put one in the query) and show as "…";
    a ``user:pass@`` is dropped."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return "…"
    if parts.scheme not in ("http", "https") or not host:
        return "…"
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else "/"
    return f"{parts.scheme}://{netloc}{rest}"


def webhook_url_error(url: str) -> str | None:
    """Why ``url`` cannot be saved as a webhook, or None."""
    return url_destination_error(url, CREDENTIALS_HINT)


def post_alert(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST ``body`` to ``url``; returns when the webhook answered 2xx, raises WebhookFailed otherwise."""
    problem = url_error(url, CREDENTIALS_HINT) or host_not_allowed_error(url)
    if problem:  # a channel saved before these rules, or allowedHosts changed since
        raise WebhookFailed(problem)
    config = settings.ACTIONS_CONFIG
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or default_port(parts.scheme)
    profile = profile_for(config, url)
    try:
        addresses = resolve(host, port)
    except UnresolvedHost as exc:
        if not profile.proxy_url:
            raise WebhookFailed(str(exc)) from None
        addresses = []  # behind a proxy this host may not know public names: the proxy resolves them
    problem = refusal(config, host, addresses)
    if problem:
        raise WebhookFailed(problem)
    headers, extensions = dict(headers), {}
    if not profile.proxy_url:
        url = _to_address(url, addresses[0])
        headers["Host"] = parts.netloc
        if parts.scheme == "https":
            extensions["sni_hostname"] = host
    asyncio.run(_exchange(profile, url, body, headers, extensions, timeout, f"{host}:{port}"))


def _to_address(url: str, address: Address) -> str:
    parts = urlsplit(url)
    shown = f"[{address}]" if address.version == 6 else str(address)
    return urlunsplit((parts.scheme, f"{shown}:{parts.port or default_port(parts.scheme)}", parts.path or "/",
                       parts.query, ""))


async def _exchange(profile: TransportProfile, url: str, body: bytes, headers: dict[str, str], extensions: dict,
                    timeout: float, where: str) -> None:
    client = httpx.AsyncClient(
        verify=ssl_context_for(profile.tls),
        proxy=proxy_for(profile) if profile.proxy_url else None,
        trust_env=False,  # only ACTIONS_CONFIG decides about proxies, never HTTP_PROXY & co.
        follow_redirects=False,
        timeout=None,  # the deadline below covers the whole exchange
    )
    try:
        async with client, asyncio.timeout(timeout):
            request = client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            await response.aclose()
    except TimeoutError:
        raise WebhookFailed(f"no answer from {where} within {timeout:g} s") from None
    except (httpx.HTTPError, OSError) as exc:
        raise WebhookFailed(f"{type(exc).__name__} from {where}") from None
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"{where} answered HTTP {response.status_code}")
