"""The outbound HTTP path: httpx clients shaped by the networking settings (REFERENCE section 5).

One pooled ``httpx.AsyncClient`` per distinct transport profile (proxy or not, TLS settings), per event loop,
reused across requests. Every request and every redirect target is checked against allowedHosts; responses are
read up to maxResponseContentLength; the whole exchange is bounded by max(responseTimeout, the call's timeout).
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import count
from urllib.parse import urljoin, urlsplit

import certifi
import httpx
from django.conf import settings

from connectors.providers import UpstreamRequest
from connectors_admin.actions_config import ActionsConfig, TLSSettings, default_port

MAX_REDIRECTS = 5


class OutboundError(Exception):
    """A failure of the outbound call. ``str()`` is safe to show: it never holds a secret or a URL's userinfo."""

    retry = False

    def __init__(self, message: str, *, retry: bool | None = None):
        super().__init__(message)
        if retry is not None:
            self.retry = retry


class HostNotAllowed(OutboundError):
    pass


class UpstreamTimeout(OutboundError):
    retry = True


class UpstreamUnreachable(OutboundError):
    retry = True


class TLSFailure(OutboundError):
    pass


class ResponseTooLarge(OutboundError):
    pass


@dataclass
class UpstreamResponse:
    status: int
    headers: httpx.Headers
    body: bytes


@dataclass(frozen=True)
class TransportProfile:
    """Everything that makes two outbound connections incompatible; one pooled client per profile."""

    proxy_url: str
    proxy_headers: tuple[tuple[str, str], ...]
    proxy_verification_mode: str
    tls: TLSSettings


def profile_for(config: ActionsConfig, url: str) -> TransportProfile:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    custom = config.custom_host_setting_for(parts.scheme, host, parts.port)
    use_proxy = config.uses_proxy_for(host)
    return TransportProfile(
        proxy_url=config.proxy_url if use_proxy else "",
        proxy_headers=config.proxy_headers if use_proxy else (),
        proxy_verification_mode=config.proxy_verification_mode,
        tls=custom.ssl if custom else config.ssl,
    )


@lru_cache(maxsize=64)
def ssl_context_for(tls: TLSSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    for path in tls.certificate_authorities_files:
        context.load_verify_locations(cafile=path)
    if tls.certificate_authorities_data:
        context.load_verify_locations(cadata=tls.certificate_authorities_data)
    if tls.verification_mode in ("certificate", "none"):
        context.check_hostname = False
    if tls.verification_mode == "none":
        context.verify_mode = ssl.CERT_NONE
    return context


def _new_client(profile: TransportProfile) -> httpx.AsyncClient:
    proxy = None
    if profile.proxy_url:
        # httpcore refuses a TLS context for a plain-http proxy, and the verification mode only means something
        # for an https one; an https target is still verified end to end through the CONNECT tunnel.
        proxy_tls = urlsplit(profile.proxy_url).scheme == "https"
        proxy = httpx.Proxy(
            profile.proxy_url,
            headers=dict(profile.proxy_headers) or None,
            ssl_context=ssl_context_for(TLSSettings(verification_mode=profile.proxy_verification_mode))
            if proxy_tls
            else None,
        )
    return httpx.AsyncClient(
        verify=ssl_context_for(profile.tls),
        proxy=proxy,
        trust_env=False,  # only ACTIONS_CONFIG decides about proxies, never HTTP_PROXY & co.
        follow_redirects=False,  # redirects are followed here, so that each target is checked
        timeout=None,  # the deadline is set around the whole exchange
        # The limits are shared out among the profile's pool shards (see client_for).
        limits=httpx.Limits(
            max_connections=-(-settings.OUTBOUND_MAX_CONNECTIONS // settings.OUTBOUND_POOL_SHARDS),
            max_keepalive_connections=-(-settings.OUTBOUND_MAX_KEEPALIVE // settings.OUTBOUND_POOL_SHARDS),
            keepalive_expiry=30,
        ),
    )


_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def client_for(profile: TransportProfile) -> httpx.AsyncClient:
    """One of the profile's pooled clients, in turn.

    httpcore's pool scans every connection for every waiting request, which is quadratic in the requests in
    flight (with 500 at once in one pool, 80% of the server's CPU went there); OUTBOUND_POOL_SHARDS pools of a
    share of the limits each keep that cost small, and each still keeps its connections alive.
    """
    # Connections belong to an event loop; uvicorn has one, but test clients may run each request in a new one.
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    shards = per_loop.get(profile)
    if shards is None:
        shards = per_loop[profile] = ([_new_client(profile) for _ in range(settings.OUTBOUND_POOL_SHARDS)], count())
    clients, turn = shards
    return clients[next(turn) % len(clients)]


async def close_clients() -> None:
    per_loop = _clients.pop(asyncio.get_running_loop(), {})
    for clients, _turn in per_loop.values():
        for client in clients:
            await client.aclose()


def check_host_allowed(config: ActionsConfig, url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not config.is_host_allowed(host):
        raise HostNotAllowed(f'The host "{host}" is not in the allowedHosts networking setting.')


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or default_port(parts.scheme)}"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port(parts.scheme)


def _keeps_credentials(source: str, target: str) -> bool:
    """Whether a redirect from ``source`` to ``target`` may carry the API key (same origin, or an https upgrade)."""
    if _origin(source) == _origin(target):
        return True
    (from_scheme, from_host, from_port), (to_scheme, to_host, to_port) = _origin(source), _origin(target)
    return (from_scheme, to_scheme, from_host, from_port, to_port) == ("http", "https", to_host, 80, 443)


def _describe_failure(exc: Exception, url: str, timeout: float, proxy_url: str = "") -> OutboundError:
    where = _where(url)
    if proxy_url:
        # Only host and port: the proxy URL may carry credentials.
        where = f"{where} (through the proxy {_where(proxy_url)})"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return UpstreamTimeout(f"No complete response from {where} within {timeout:g} s (responseTimeout/timeout).")
    if isinstance(exc, httpx.ProxyError):
        return UpstreamUnreachable(f"The proxy refused or failed the request to {where}: {exc}")
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(exc)
        return TLSFailure(f"TLS connection to {where} failed: {str(reason).rstrip('.')}.")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"Could not connect to {where}: {exc or 'connection failed'}.")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return UpstreamUnreachable(f"The connection to {where} broke: {exc or type(exc).__name__}.")
    return UpstreamUnreachable(f"The request to {where} failed: {type(exc).__name__}.")


def effective_timeout(config: ActionsConfig, call_timeout_ms: float | None) -> float:
    return max(config.response_timeout, (call_timeout_ms or 0) / 1000)


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(
            f"The response ({int(declared)} bytes) exceeds maxResponseContentLength ({limit} bytes)."
        )
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"The response exceeded maxResponseContentLength ({limit} bytes).")
        chunks.append(chunk)
    return b"".join(chunks)


@asynccontextmanager
async def _open(request: UpstreamRequest, config: ActionsConfig, timeout: float) -> AsyncIterator[httpx.Response]:
    """Send the request, following redirects (each target checked), and yield the final streaming response."""
    method, url, body = "POST", request.url, request.body
    headers = dict(request.headers)
    for _hop in range(MAX_REDIRECTS + 1):
        check_host_allowed(config, url)
        profile = profile_for(config, url)
        client = client_for(profile)
        try:
            response = await client.send(client.build_request(method, url, headers=headers, content=body), stream=True)
        except httpx.HTTPError as exc:
            raise _describe_failure(exc, url, timeout, profile.proxy_url) from exc
        location = response.headers.get("location")
        if response.status_code in (301, 302, 303, 307, 308) and location:
            await response.aclose()
            target = urljoin(url, location)
            if not _keeps_credentials(url, target):
                # Never hand the key to another origin (another host, port, or a downgrade to plain http), as
                # browsers and httpx do.
                headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "api-key")}
            if response.status_code in (301, 302, 303):
                method, body = "GET", None
                headers.pop("Content-Type", None)
            url = target
            continue
        try:
            yield response
        except httpx.HTTPError as exc:
            raise _describe_failure(exc, url, timeout, profile.proxy_url) from exc
        finally:
            await response.aclose()
        return
    raise UpstreamUnreachable(f"Too many redirects (more than {MAX_REDIRECTS}).")


async def send(request: UpstreamRequest, *, call_timeout_ms: float | None = None) -> UpstreamResponse:
    """Send ``request`` and read the whole response, within the networking settings."""
    config = settings.ACTIONS_CONFIG
    timeout = effective_timeout(config, call_timeout_ms)
    try:
        async with asyncio.timeout(timeout):
            async with _open(request, config, timeout) as response:
                body = await _read_limited(response, config.max_response_content_length)
                return UpstreamResponse(status=response.status_code, headers=response.headers, body=body)
    except TimeoutError as exc:
        raise _describe_failure(exc, request.url, timeout) from None


@asynccontextmanager
async def open_stream(request: UpstreamRequest, *, call_timeout_ms: float | None = None):
    """Open a streaming exchange: yields the response, whose body the caller reads as it arrives.

    The deadline covers the connection and the response head only; the streamed body is bounded by the caller.
    """
    config = settings.ACTIONS_CONFIG
    timeout = effective_timeout(config, call_timeout_ms)
    try:
        async with asyncio.timeout(timeout):
            context = _open(request, config, timeout)
            response = await context.__aenter__()
    except TimeoutError as exc:
        raise _describe_failure(exc, request.url, timeout) from None
    try:
        yield response
    except BaseException as exc:
        if not await context.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await context.__aexit__(None, None, None)
