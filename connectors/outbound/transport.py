"""The outbound HTTP path: pooled HTTP clients shaped by the networking settings
(docs/KIBANA.md, 'Networking settings').

One pooled client per distinct transport profile (proxy or not, TLS settings), per event loop, reused across
requests. Direct connections, the hot path, go through the project's own HTTP/1.1 client
(connectors/outbound/direct_http.py: httptools' C parser on pooled connections, a third of aiohttp's CPU per
request, docs/PERFORMANCE.md "An own HTTP client"). Connections through a proxy go through httpx, which verifies an
https proxy with its own TLS settings (proxyVerificationMode) apart from the target's.

Every request and every redirect target is checked against allowedHosts; responses are read up to
maxResponseContentLength; the whole exchange is bounded by max(responseTimeout, the call's timeout).

Everything the provider sends comes in here, so the provider's key is masked here (connectors/outbound/masking.py):
in the response headers, the body (whole or streamed) and every error message built from the provider's bytes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

import certifi
import httpx
from django.conf import settings
from multidict import CIMultiDict

from connectors.actions_config import ActionsConfig, TLSSettings, default_port
from connectors.caching.kept_under_config import KeptUnderConfig
from connectors.event_loops import PerEventLoop
from connectors.outbound import direct_http
from connectors.outbound.masking import StreamMasker, mask_secret
from connectors.outbound.providers import ConnectorTLS, UpstreamRequest
from connectors.validation import url_origin
from usage.observability.execution import upstream_call

MAX_REDIRECTS = 5
KEEPALIVE_SECONDS = 30


class OutboundError(Exception):
    """A failure of the outbound call. ``str()`` is safe to show: it never holds a secret or a URL's userinfo.

    ``code`` is the error code Node would give the same failure (``ECONNREFUSED``, ``ECONNABORTED``, a TLS code...):
    Kibana prints it in ``Unexpected API Error: <code> - <message>`` (docs/KIBANA.md 4.4).
    """

    retry = False
    code = "ERR_NETWORK"

    def __init__(self, message: str, *, retry: bool | None = None, code: str | None = None):
        super().__init__(message)
        if retry is not None:
            self.retry = retry
        if code:
            self.code = code


class HostNotAllowed(OutboundError):
    code = "ERR_HOST_NOT_ALLOWED"


class UpstreamTimeout(OutboundError):
    retry = True
    code = "ECONNABORTED"


class UpstreamUnreachable(OutboundError):
    retry = True
    code = "ECONNREFUSED"


class TLSFailure(OutboundError):
    code = "EPROTO"


class ResponseTooLarge(OutboundError):
    code = "ERR_BAD_RESPONSE"


# OpenSSL verification results -> Node's error codes for them (what Kibana's axios errors carry).
_TLS_CODES = {
    10: "CERT_HAS_EXPIRED", 18: "DEPTH_ZERO_SELF_SIGNED_CERT", 19: "SELF_SIGNED_CERT_IN_CHAIN",
    20: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", 21: "UNABLE_TO_VERIFY_LEAF_SIGNATURE", 62: "ERR_TLS_CERT_ALTNAME_INVALID",
    64: "ERR_TLS_CERT_ALTNAME_INVALID",
}


def _errno_code(exc: BaseException | None, default: str) -> str:
    """The errno name of an OS-level failure (``ECONNREFUSED``, ``ECONNRESET``...), ``ENOTFOUND`` for a name lookup."""
    for _depth in range(6):
        if exc is None:
            break
        if isinstance(exc, socket.gaierror):
            return "ENOTFOUND"
        number = getattr(exc, "errno", None)
        if isinstance(number, int) and number in errno.errorcode:
            return errno.errorcode[number]
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
    return default


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    reason: str = ""  # the provider's reason phrase, its key masked


NO_BODY_STATUSES = frozenset({204, 304})  # and 1xx, which never reach here


class Exchange:
    """A response whose head has arrived: ``status``, case-insensitive ``headers``, and ``chunks()``, the body as it
    arrives (raising OutboundError if the connection breaks). The same for both clients. The provider's key is
    masked in the headers, the body and the errors."""

    status: int
    headers: Mapping[str, str]

    def __init__(self, where: str, secret: str = ""):
        self.where = where  # host:port (and the proxy's), for messages
        self.secret = secret

    reason = ""  # the status line's reason phrase as the provider wrote it (axios's statusText)

    def _take_head(self, status: int, headers: Mapping[str, str], reason: str | None = "") -> None:
        self.status, self.headers = status, masked_headers(headers, self.secret)
        self.reason = mask_secret(reason or "", self.secret)

    async def chunks(self) -> AsyncIterator[bytes]:
        masker = StreamMasker(self.secret)
        async for chunk in self._raw_chunks():
            passed = masker.feed(chunk)
            if passed:
                yield passed
        rest = masker.close()
        if rest:
            yield rest

    def _raw_chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def read_whole(self, length: int) -> bytes | None:
        """The body of a declared ``length``, masked, in one read; None where this client reads by chunks only."""
        return None

    async def aclose(self) -> None:
        raise NotImplementedError

    def broken(self, exc: Exception) -> OutboundError:
        reason = mask_secret(str(exc) or type(exc).__name__, self.secret)
        error = UpstreamUnreachable(f"The connection to {self.where} broke: {reason}.",
                                    code=_errno_code(exc, "ECONNRESET"))
        # What callers show as the cause must be masked too (the client's own exception text may echo the key).
        error.__cause__ = ProviderProtocolError(reason)
        return error


class ProviderProtocolError(Exception):
    """The text of a client library's error about the provider's bytes, with the key masked."""


def masked_headers(headers: Mapping[str, str], secret: str) -> CIMultiDict:
    """Response headers with the key masked in names and values (a provider may echo it in x-request-id)."""
    return CIMultiDict((mask_secret(name, secret), mask_secret(value, secret)) for name, value in headers.items())


def masked_error(error: OutboundError, secret: str) -> OutboundError:
    """``error`` with the key masked in its message, same class and retry flag."""
    message = str(error)
    masked = mask_secret(message, secret)
    if masked == message:
        return error
    return type(error)(masked, retry=error.retry, code=error.code)


class _DirectExchange(Exchange):
    def __init__(self, response: direct_http.Response, where: str, secret: str = ""):
        super().__init__(where, secret)
        self._response = response
        self._take_head(response.status, response.headers, response.reason)

    async def _raw_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.chunks():
                yield chunk
        except direct_http.HTTPClientError as exc:
            error = self.broken(exc)
            raise error from error.__cause__

    async def read_whole(self, length: int) -> bytes | None:
        """A non-streamed answer with a Content-Length and no Content-Encoding (every provider's JSON, in practice)
        read in one go and masked once: the same bytes as ``chunks()`` joined (``mask_secret`` is what
        ``StreamMasker`` does across chunks), without two async generators and a masker per call. A compressed
        body (inflated as it is read, so the length is not the body's) and an answer without a body keep the
        chunks."""
        response = self._response
        if response.encoding != "identity" or response.status in NO_BODY_STATUSES:
            return None
        try:
            body = await response.read()
        except direct_http.HTTPClientError as exc:  # cut short, or the connection broke
            error = self.broken(exc)
            raise error from error.__cause__
        return mask_secret(body, self.secret)

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; anything else closes it.
        self._response.release()


class _HttpxExchange(Exchange):
    def __init__(self, response: httpx.Response, where: str, secret: str = ""):
        super().__init__(where, secret)
        self._response = response
        self._take_head(response.status_code, response.headers, response.reason_phrase)

    async def _raw_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            error = self.broken(exc)
            raise error from error.__cause__

    async def aclose(self) -> None:
        await self._response.aclose()


@dataclass(frozen=True)
class TransportProfile:
    """Everything that makes two outbound connections incompatible; one pooled client per profile."""

    proxy_url: str
    proxy_headers: tuple[tuple[str, str], ...]
    proxy_verification_mode: str
    tls: TLSSettings


def profile_for(config: ActionsConfig, url: str, connector_tls: ConnectorTLS | None = None) -> TransportProfile:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    custom = config.custom_host_setting_for(parts.scheme, host, parts.port)
    use_proxy = config.uses_proxy_for(host)
    tls = custom.ssl if custom else config.ssl
    return TransportProfile(
        proxy_url=config.proxy_url if use_proxy else "",
        proxy_headers=config.proxy_headers if use_proxy else (),
        proxy_verification_mode=config.proxy_verification_mode,
        tls=connector_tls.applied_to(tls) if connector_tls else tls,
    )


@lru_cache(maxsize=64)
def ssl_context_for(tls: TLSSettings) -> ssl.SSLContext:
    """The TLS context of a profile. Listed certificate authorities *replace* the public roots for that target, as in
    Kibana (docs/KIBANA.md 6.1): a private CA trusted for one host does not also admit the whole public web there."""
    if tls.certificate_authorities_files or tls.certificate_authorities_data:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies host names, loads no roots
        for path in tls.certificate_authorities_files:
            context.load_verify_locations(cafile=path)
        if tls.certificate_authorities_data:
            context.load_verify_locations(cadata=tls.certificate_authorities_data)
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    if tls.client_certificate:
        _load_client_certificate(context, tls.client_certificate, tls.client_key)
    if tls.verification_mode in ("certificate", "none"):
        context.check_hostname = False
    if tls.verification_mode == "none":
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_client_certificate(context: ssl.SSLContext, certificate: str, key: str) -> None:
    """``load_cert_chain`` reads files only: hand it an anonymous in-memory file (memfd), so the private key never
    touches the disk; a private temporary file where memfd does not exist."""
    pem = (certificate.strip() + "\n" + key.strip() + "\n").encode("utf-8")
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("connector-client-certificate", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as handle:  # created 0600
        handle.write(pem)
        handle.flush()
        context.load_cert_chain(handle.name)


def _new_direct_client(profile: TransportProfile) -> direct_http.DirectClient:
    """The direct (no proxy) client. It keeps no cookies (one provider's never reach another call) and reads no
    proxy from the environment (only ACTIONS_CONFIG decides about proxies); the deadline is set around the whole
    exchange (``send``)."""
    return direct_http.DirectClient(ssl_context_for(profile.tls), limit=settings.OUTBOUND_MAX_CONNECTIONS,
                                    keepalive_seconds=KEEPALIVE_SECONDS)


def proxy_for(profile: TransportProfile) -> httpx.Proxy:
    """The profile's proxy (``profile.proxy_url`` set), with its headers and its own TLS verification."""
    # httpcore refuses a TLS context for a plain-http proxy, and the verification mode only means something for
    # an https one; an https target is still verified end to end through the CONNECT tunnel.
    proxy_tls = urlsplit(profile.proxy_url).scheme == "https"
    return httpx.Proxy(
        profile.proxy_url,
        headers=dict(profile.proxy_headers) or None,
        ssl_context=ssl_context_for(TLSSettings(verification_mode=profile.proxy_verification_mode))
        if proxy_tls
        else None,
    )


def _new_proxied_client(profile: TransportProfile) -> httpx.AsyncClient:
    """The client through the proxy."""
    return httpx.AsyncClient(
        verify=ssl_context_for(profile.tls),
        proxy=proxy_for(profile),
        trust_env=False,
        follow_redirects=False,  # redirects are followed here, so that each target is checked
        timeout=None,
        limits=httpx.Limits(max_connections=settings.OUTBOUND_MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_SECONDS),
    )


class _LoopClients(dict):
    """One event loop's pooled clients, by profile, closed when the loop shuts down."""

    def __init__(self):
        super().__init__()
        self.closer = _close_with_the_loop(self)


_clients: PerEventLoop[_LoopClients] = PerEventLoop(_LoopClients)


def client_for(profile: TransportProfile) -> direct_http.DirectClient | httpx.AsyncClient:
    """The profile's pooled client in this event loop (connections belong to a loop; uvicorn has one, but test
    clients may run each request in a new one)."""
    per_loop = _clients.get()
    client = per_loop.get(profile)
    if client is None:
        client = per_loop[profile] = _new_proxied_client(profile) if profile.proxy_url else _new_direct_client(profile)
    return client


async def _close(client) -> None:
    await (client.aclose() if isinstance(client, httpx.AsyncClient) else client.close())


def _close_with_the_loop(per_loop: dict):
    """Close ``per_loop``'s clients when their loop shuts down, however it was started.

    An async generator, once started, is closed by the loop's ``shutdown_asyncgens()``, which ``asyncio.run``,
    uvicorn and asgiref (Django's test client runs each request in a loop of its own) all call before closing the
    loop; the generator's ``finally`` closes the clients there, while the loop still runs.
    """

    async def closer():
        try:
            yield
        finally:
            for client in list(per_loop.values()):
                await _close(client)

    generator = closer()
    try:
        generator.asend(None).send(None)  # run to the yield: the loop now knows the generator
    except StopIteration:
        pass
    return generator


def check_host_allowed(config: ActionsConfig, url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not config.is_host_allowed(host):
        raise HostNotAllowed(f'The host "{host}" is not in the allowedHosts networking setting.')


def _where(url: str, proxy_url: str = "") -> str:
    """host:port for messages, and the proxy's when there is one (only host and port: a URL may hold credentials)."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or default_port(parts.scheme)}"
    return f"{where} (through the proxy {_where(proxy_url)})" if proxy_url else where


def _keeps_credentials(source: str, target: str) -> bool:
    """Whether a redirect from ``source`` to ``target`` may carry the API key (same origin, or an https upgrade)."""
    source_origin, target_origin = url_origin(source), url_origin(target)
    if source_origin is None or target_origin is None:
        return False  # a malformed port: no origin to compare, so no key
    if source_origin == target_origin:
        return True
    (from_scheme, from_host, from_port), (to_scheme, to_host, to_port) = source_origin, target_origin
    return (from_scheme, to_scheme, from_host, from_port, to_port) == ("http", "https", to_host, 80, 443)


def _ssl_error_in(exc: BaseException | None) -> ssl.SSLError | None:
    """The ssl module's own error behind a client's exception."""
    for _depth in range(10):
        if exc is None:
            return None
        inner = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
        if isinstance(exc, ssl.SSLError) and not isinstance(inner, ssl.SSLError):
            return exc
        exc = inner or exc.__cause__ or exc.__context__
    return None


def _describe_failure(exc: BaseException, url: str, timeout: float, proxy_url: str = "") -> OutboundError:
    """A safe message for a failed exchange, from either client's exceptions."""
    where = _where(url, proxy_url)
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        # axios's own words for its timeout, which Kibana users search their logs and event log for.
        return UpstreamTimeout(f"timeout of {round(timeout * 1000)}ms exceeded")
    if isinstance(exc, httpx.ProxyError):
        return UpstreamUnreachable(f"The proxy refused or failed the request to {where}: {exc}",
                                   code="ERR_BAD_RESPONSE")
    cause = _ssl_error_in(exc)
    if cause is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause or exc)
        code = _TLS_CODES.get(getattr(cause, "verify_code", None), "EPROTO")
        return TLSFailure(f"TLS connection to {where} failed: {str(reason).rstrip('.')}.", code=code)
    if isinstance(exc, direct_http.ConnectFailed):
        reason = getattr(exc.os_error, "strerror", None) or str(exc.os_error) or "connection failed"
        return UpstreamUnreachable(f"Could not connect to {where}: {reason}.", code=_errno_code(exc, "ECONNREFUSED"))
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"Could not connect to {where}: {exc or 'connection failed'}.",
                                   code=_errno_code(exc, "ECONNREFUSED"))
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, direct_http.ConnectionBroke)):
        return UpstreamUnreachable(f"The connection to {where} broke: {exc or type(exc).__name__}.",
                                   code=_errno_code(exc, "ECONNRESET"))
    if isinstance(exc, direct_http.MalformedResponse):  # a malformed response head, among others
        return UpstreamUnreachable(f"The response from {where} could not be read: {exc or type(exc).__name__}.",
                                   code="ERR_BAD_RESPONSE")
    if isinstance(exc, direct_http.InvalidRequest):
        return UpstreamUnreachable(f"The request to {where} was not sent: {exc}", code="ERR_INVALID_CHAR")
    return UpstreamUnreachable(f"The request to {where} failed: {type(exc).__name__}.", code="ERR_NETWORK")


def effective_timeout(config: ActionsConfig, call_timeout_ms: float | None) -> float:
    return max(config.response_timeout, (call_timeout_ms or 0) / 1000)


async def _read_limited(exchange: Exchange, limit: int) -> bytes:
    declared = exchange.headers.get("content-length")
    if declared and declared.isdigit():
        length = int(declared)
        if length > limit:
            raise ResponseTooLarge(f"The response ({length} bytes) exceeds maxResponseContentLength ({limit} bytes).")
        whole = await exchange.read_whole(length)
        if whole is not None:
            return whole
    chunks, size = [], 0
    async for chunk in exchange.chunks():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"The response exceeded maxResponseContentLength ({limit} bytes).")
        chunks.append(chunk)
    return b"".join(chunks)


async def _send_once(profile: TransportProfile, method: str, url: str, headers: dict, body: bytes | None,
                     timeout: float, secret: str = "", where: str = "") -> Exchange:
    """One request (no redirect following); the response head has arrived."""
    where = where or _where(url, profile.proxy_url)
    try:
        client = client_for(profile)
    except (ssl.SSLError, ValueError, OSError) as exc:
        # A connector's client certificate or CA that does not load (Kibana checks only their PEM headers at save).
        raise TLSFailure(f"The TLS settings for {where} could not be used: {getattr(exc, 'reason', None) or exc}.",
                         code="ERR_OSSL_PEM_NO_START_LINE" if "PEM" in str(exc) else "EPROTO") from None
    try:
        if isinstance(client, httpx.AsyncClient):
            request = client.build_request(method, url, headers=headers, content=body)
            return _HttpxExchange(await client.send(request, stream=True), where, secret)
        return _DirectExchange(await client.request(method, url, headers, body), where, secret)
    except (httpx.HTTPError, direct_http.HTTPClientError) as exc:
        # Not chained: a malformed status line or header is quoted in the client's exception, key and all.
        raise masked_error(_describe_failure(exc, url, timeout, profile.proxy_url), secret) from None


@dataclass(frozen=True)
class _Route:
    """What the networking settings make of one target URL: whether its host is allowed, the transport profile,
    where it is (for messages) and its origin. Worked out once per (settings, URL, connector TLS) and kept: a
    connector calls the same URL every time, and parsing it five times a call cost a few percent of the call."""

    host: str
    allowed: bool
    profile: TransportProfile | None  # None when the host is not allowed
    where: str
    origin: tuple[str, str, int] | None


_routes = KeptUnderConfig(max_entries=1024)


def _route(config: ActionsConfig, url: str, own_tls: ConnectorTLS | None) -> _Route:
    return _routes.get(config, (url, own_tls), lambda: _work_out_route(config, url, own_tls))


def _work_out_route(config: ActionsConfig, url: str, own_tls: ConnectorTLS | None) -> _Route:
    host = urlsplit(url).hostname or ""
    if config.is_host_allowed(host):
        profile = profile_for(config, url, own_tls)
        return _Route(host, True, profile, _where(url, profile.proxy_url), url_origin(url))
    return _Route(host, False, None, "", url_origin(url))


async def _final_exchange(request: UpstreamRequest, config: ActionsConfig, timeout: float,
                          method: str = "POST") -> Exchange:
    """Send the request, following redirects (each target checked): the final response, its head arrived. The
    caller closes it."""
    url, body = request.url, (request.body if method == "POST" else None)
    headers = request.headers  # copied before a redirect changes them
    home = _route(config, request.url, None).origin
    for _hop in range(MAX_REDIRECTS + 1):
        # The connector's own TLS (client certificate) goes to its provider's origin only, never to a redirect target.
        route = _route(config, url, None)
        if route.allowed and request.tls is not None and route.origin == home:
            route = _route(config, url, request.tls)
        if not route.allowed:
            raise HostNotAllowed(f'The host "{route.host}" is not in the allowedHosts networking setting.')
        exchange = await _send_once(route.profile, method, url, headers, body, timeout, request.secret, route.where)
        location = exchange.headers.get("location")
        if exchange.status in (301, 302, 303, 307, 308) and location:
            await exchange.aclose()
            target = urljoin(url, location)
            headers = dict(headers)
            if not _keeps_credentials(url, target):
                # Never hand the key to another origin (another host, port, or a downgrade to plain http), as
                # browsers and httpx do.
                headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "api-key")}
            if exchange.status in (301, 302, 303):
                method, body = "GET", None
                headers.pop("Content-Type", None)
            url = target
            continue
        return exchange
    raise UpstreamUnreachable(f"Too many redirects (more than {MAX_REDIRECTS}).", code="ERR_FR_TOO_MANY_REDIRECTS")


@asynccontextmanager
async def _open(request: UpstreamRequest, config: ActionsConfig, timeout: float,
                method: str = "POST") -> AsyncIterator[Exchange]:
    """``_final_exchange`` as a context that closes it."""
    exchange = await _final_exchange(request, config, timeout, method)
    try:
        yield exchange
    finally:
        await exchange.aclose()


async def send(request: UpstreamRequest, *, call_timeout_ms: float | None = None,
               method: str = "POST") -> UpstreamResponse:
    """Send ``request`` and read the whole response, within the networking settings. ``method="GET"`` sends no
    body (connectors.outbound.models_list asks a provider for its models that way)."""
    config = settings.ACTIONS_CONFIG
    timeout = effective_timeout(config, call_timeout_ms)
    call = upstream_call("POST", request.url)  # the execution's upstream time, and its HTTP span when tracing
    try:
        async with asyncio.timeout(timeout):
            # Not ``_open``: an async context manager is an async generator the loop registers, per call.
            exchange = await _final_exchange(request, config, timeout, method)
            try:
                call.responded(exchange.status)
                body = await _read_limited(exchange, config.max_response_content_length)
                call.end()
                return UpstreamResponse(status=exchange.status, headers=exchange.headers, body=body,
                                        reason=exchange.reason)
            finally:
                await exchange.aclose()
    except TimeoutError as exc:
        failure = _describe_failure(exc, request.url, timeout)
        call.end(failure)
        raise failure from None
    except BaseException as exc:
        call.end(exc)
        raise


@asynccontextmanager
async def open_stream(request: UpstreamRequest, *, call_timeout_ms: float | None = None):
    """Open a streaming exchange: yields the Exchange, whose ``chunks()`` the caller reads as they arrive.

    The deadline covers the connection and the response head only; the streamed body is bounded by the caller.
    """
    config = settings.ACTIONS_CONFIG
    timeout = effective_timeout(config, call_timeout_ms)
    call = upstream_call("POST", request.url)  # lasts until the stream is closed
    try:
        async with asyncio.timeout(timeout):
            context = _open(request, config, timeout)
            exchange = await context.__aenter__()
    except TimeoutError as exc:
        failure = _describe_failure(exc, request.url, timeout)
        call.end(failure)
        raise failure from None
    except BaseException as exc:
        call.end(exc)
        raise
    call.responded(exchange.status)
    try:
        yield exchange
    except BaseException as exc:
        call.end(exc)
        if not await context.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        call.end()
        await context.__aexit__(None, None, None)
