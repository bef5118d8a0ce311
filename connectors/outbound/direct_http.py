"""The client of direct upstream connections (no proxy), the hot path: HTTP/1.1 on pooled keep-alive connections,
parsed by httptools (the C parser uvicorn serves with).

It does what the outbound path asks of a client and nothing else (docs/PERFORMANCE.md, "An own HTTP client"):

- one request, one response; redirects, the deadline, allowedHosts and the response size limit are the caller's
  (connectors/outbound/transport.py);
- the request written in one piece (head and body), with ``Host``, ``Content-Length``, and ``Accept: */*``,
  ``Accept-Encoding: gzip, deflate`` and ``User-Agent: connectors-admin`` unless the caller set them; a header
  holding a line break or NUL (or a name holding a colon) is refused: it would split the request;
- the response's head awaited, then its body read by chunks as it arrives (a stream) or as a whole; gzip and
  deflate bodies inflated in bounded pieces, so that a small compressed body cannot fill the memory in one go;
- a connection goes back to the pool only when its response was read to the end and both sides keep it alive;
  anything else (a body left unread, a parse error, a hang-up, a cancellation) closes it. Idle connections are
  closed after ``keepalive_seconds``, and at most ``limit`` are open at once (callers beyond wait their turn);
- TLS with the profile's context, the server's name checked as the context says.

A POST is never retried on another connection: the provider may have acted on it.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import httptools
from multidict import CIMultiDict

from connectors.actions_config import default_port
from connectors.validation import url_origin

MAX_BUFFERED = 256 * 1024  # bytes received and not yet read before the socket stops being read
INFLATED_PIECE = 64 * 1024  # the most a compressed body's piece inflates to at a time
DEFAULT_HEADERS = (  # sent unless the caller sent its own
    (b"accept", b"Accept: */*\r\n"),
    (b"accept-encoding", b"Accept-Encoding: gzip, deflate\r\n"),
    (b"user-agent", b"User-Agent: connectors-admin\r\n"),
)
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")


class HTTPClientError(Exception):
    """A failed exchange; ``str()`` never holds the request's headers."""


class ConnectFailed(HTTPClientError):
    """The connection (or its TLS handshake) could not be made; ``os_error`` is the system's error."""

    def __init__(self, os_error: Exception):
        super().__init__(str(os_error))
        self.os_error = os_error


class ConnectionBroke(HTTPClientError):
    """The connection ended, or was found unusable, before the response did."""


class MalformedResponse(HTTPClientError):
    """The upstream's bytes are not an HTTP/1.1 response."""


class InvalidRequest(HTTPClientError):
    """A request this client will not write (a header that would split it)."""


class Target(NamedTuple):
    origin: tuple[str, str, int]  # scheme, host, port: what a pooled connection is for
    host_header: bytes
    request_target: bytes  # path and query, percent-encoded


@lru_cache(maxsize=1024)
def target_of(url: str) -> Target:
    origin = url_origin(url)
    if origin is None:
        raise InvalidRequest("The URL's port is not a number.")
    scheme, host, port = origin
    parts = urlsplit(url)
    ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    shown_host = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    host_header = shown_host if port == default_port(scheme) else f"{shown_host}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return Target(origin, host_header.encode("ascii"), path.encode("ascii"))


def request_head(method: str, target: Target, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode("ascii"), target.request_target, target.host_header)]
    given = set()
    for name, value in headers.items():
        if ":" in name or any(character in name or character in value for character in _FORBIDDEN_IN_HEADERS):
            raise InvalidRequest("A header of the request holds a line break, a NUL or (in its name) a colon.")
        lower = name.lower()
        if lower in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # this client's own
        given.add(lower.encode("ascii", "replace"))
        lines.append(b"%s: %s\r\n" % (name.encode("utf-8"), value.encode("utf-8")))
    lines.extend(line for name, line in DEFAULT_HEADERS if name not in given)
    if body is not None:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


class Response:
    """A response whose head has arrived: ``status``, ``reason``, ``headers`` (case-insensitive, repeated names
    kept), and its body by ``chunks()`` or ``read()``. ``release()`` ends it."""

    def __init__(self, connection: _Connection):
        self._connection = connection
        self.status = connection.status
        self.reason = connection.reason.decode("utf-8", "replace")
        self.headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in connection.headers
        )
        self._released = False

    @property
    def encoding(self) -> str:
        return self.headers.get("content-encoding", "identity").strip().lower()

    async def chunks(self):
        """The body as it arrives, inflated when it came compressed with gzip or deflate."""
        inflater = _inflater(self.encoding)
        while (chunk := await self._connection.next_chunk()) is not None:
            if inflater is None:
                yield chunk
                continue
            for piece in _inflated(inflater, chunk):
                yield piece
        if inflater is not None:
            try:
                rest = inflater.flush()
            except zlib.error as exc:
                raise MalformedResponse(f"the {self.encoding} body could not be inflated: {exc}") from None
            if rest:
                yield rest

    async def read(self) -> bytes:
        """The whole body, as it came (not inflated): the parser holds it to its declared length, and a connection
        that ends before it raises ConnectionBroke."""
        chunks = []
        while (chunk := await self._connection.next_chunk()) is not None:
            chunks.append(chunk)
        return b"".join(chunks)

    @property
    def at_end(self) -> bool:
        return self._connection.complete and not self._connection.buffered

    def release(self) -> None:
        """The connection back to the pool if the response was read to its end, else closed."""
        if not self._released:
            self._released = True
            self._connection.done_with(self.at_end)


def _inflater(encoding: str):
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    return None


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped as the RFC says, or raw, as some do."""

    def __init__(self):
        self._inflater = None
        self.unconsumed_tail = b""

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if self._inflater is None:
            zlib_wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        output = self._inflater.decompress(data, max_length)
        self.unconsumed_tail = self._inflater.unconsumed_tail
        return output

    def flush(self) -> bytes:
        return self._inflater.flush() if self._inflater is not None else b""


def _inflated(inflater, data: bytes):
    try:
        while data:
            piece = inflater.decompress(data, INFLATED_PIECE)
            if piece:
                yield piece
            data = inflater.unconsumed_tail
    except zlib.error as exc:
        raise MalformedResponse(f"the compressed body could not be inflated: {exc}") from None


class _Connection(asyncio.Protocol):
    """One pooled connection and the response it is reading (one at a time)."""

    def __init__(self, pool: DirectClient, origin: tuple[str, str, int]):
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._expecting = False  # a request was written and its response has not ended
        self.parser = httptools.HttpResponseParser(self)  # one for the connection's life: it reads message after message
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.buffered = 0
        self._informational = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._error: HTTPClientError | None = None
        self._waiter: asyncio.Future | None = None
        self._paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._expecting:  # bytes nobody asked for: the connection cannot be trusted with the next request
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MalformedResponse(str(exc) or type(exc).__name__))
            self._close()

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost tells the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._expecting and not self.complete:
            if self.status and self._reads_until_close():
                self._end_of_message()  # a body without a length ends with the connection
            elif self.status:
                self._fail(ConnectionBroke("Response payload is not completed"))
            else:
                self._fail(ConnectionBroke(f"Server disconnected{f': {exc}' if exc else ''}"))
        self.pool.forget(self)

    # -- httptools callbacks -----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.status and not self._informational:  # a second response to one request
            self._fail(MalformedResponse("more than one response to one request"))
            raise self._error  # stops the parser: data_received closes the connection

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and the like: the response follows
            self._informational = True
            self.reason, self.headers = b"", []
            return
        self._informational = False
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self.buffered += len(body)
        if self.buffered > MAX_BUFFERED and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            return
        self._end_of_message()

    # -- used by the pool and the response ---------------------------------------------------------------------
    def send(self, head: bytes, body: bytes | None) -> None:
        self._reset()
        self._expecting = True
        self.transport.write(head + body if body else head)

    async def head(self) -> None:
        while not self.status:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self._paused and self.buffered < MAX_BUFFERED // 2:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()

    def done_with(self, read_to_the_end: bool) -> None:
        self._expecting = False
        if read_to_the_end and self.keep_alive and self.usable():
            self.pool.give_back(self)
        else:
            self._close()

    def usable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def _reads_until_close(self) -> bool:
        """Whether the body runs until the connection closes (no Content-Length, not chunked)."""
        names = {name.lower() for name, _value in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _end_of_message(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: HTTPClientError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self.pool.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _close(self) -> None:
        self._expecting = False
        if self.transport is not None:
            self.transport.close()
        if not self.closed:
            self.closed = True
            self.pool.forget(self)


class DirectClient:
    """Pooled connections of one event loop, for one TLS context."""

    def __init__(self, ssl_context, *, limit: int, keepalive_seconds: float):
        self.loop = asyncio.get_running_loop()
        self._ssl = ssl_context
        self._limit = limit
        self._keepalive = keepalive_seconds
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._turns: collections.deque[asyncio.Future] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Response:
        """Send the request; the response once its head has arrived. The caller releases it."""
        target = target_of(url)
        head = request_head(method, target, headers, body)
        connection = await self._connection_to(target.origin)
        try:
            connection.send(head, body)
            await connection.head()
        except BaseException:
            connection.done_with(read_to_the_end=False)
            raise
        return Response(connection)

    async def close(self) -> None:
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        for connection in list(self._open):
            connection.done_with(read_to_the_end=False)
        self._idle.clear()

    # -- the pool ----------------------------------------------------------------------------------------------
    async def _connection_to(self, origin: tuple[str, str, int]) -> _Connection:
        while True:
            if self.closed:
                raise ConnectionBroke("the client is closed")
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if connection.usable() and self.loop.time() - connection.idle_since < self._keepalive:
                    return connection
                connection.done_with(read_to_the_end=False)
            if len(self._open) + self._connecting < self._limit:
                return await self._connect(origin)
            if self._close_one_idle():
                continue
            turn = self.loop.create_future()
            self._turns.append(turn)
            try:
                await turn
            finally:
                if turn in self._turns:
                    self._turns.remove(turn)

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        connection = None
        self._connecting += 1
        try:
            _transport, connection = await self.loop.create_connection(
                lambda: _Connection(self, origin), host, port,
                ssl=self._ssl if scheme == "https" else None, server_hostname=host if scheme == "https" else None,
            )
        except (OSError, ValueError) as exc:  # refused, unreachable, a name that does not resolve, a TLS failure
            raise ConnectFailed(exc) from exc
        finally:
            self._connecting -= 1
            if connection is None:  # failed or cancelled: the place it held is free for a caller waiting its turn
                self._next_turn()
        self._open.add(connection)
        return connection

    def give_back(self, connection: _Connection) -> None:
        if self.closed:
            connection.done_with(read_to_the_end=False)
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self._keepalive, self._close_expired)
        self._next_turn()

    def forget(self, connection: _Connection) -> None:
        """A connection closed: its place is free."""
        if connection in self._open:
            self._open.discard(connection)
            idle = self._idle.get(connection.origin)
            if idle and connection in idle:
                idle.remove(connection)
            self._next_turn()

    def _next_turn(self) -> None:
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def _close_one_idle(self) -> bool:
        """At the limit with idle connections to other origins: close the longest idle one."""
        oldest = min((connection for idle in self._idle.values() for connection in idle),
                     key=lambda connection: connection.idle_since, default=None)
        if oldest is None:
            return False
        oldest.done_with(read_to_the_end=False)
        return True

    def _close_expired(self) -> None:
        self._sweep = None
        now = self.loop.time()
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if now - c.idle_since >= self._keepalive]:
                connection.done_with(read_to_the_end=False)
        if any(self._idle.values()):
            self._sweep = self.loop.call_later(self._keepalive / 2, self._close_expired)
