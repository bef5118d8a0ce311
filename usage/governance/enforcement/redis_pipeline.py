"""One pipelined Redis connection per event loop, for the two scripts a governed call runs (usage/governance/enforcement/counters.py).

Redis answers the commands of a connection in the order it received them, so concurrent callers can share one
connection: each writes its command and waits for the reply in its turn, matched first in, first out. No pool, no
checkout, no lock: under a burst of a thousand calls their admissions go out back to back on one connection.

Why not redis-py's asyncio client, which the rest of the app uses for Redis: on this path it spent about 0.13 ms of
CPU and 0.18 ms of latency per command (pool checkout, retry and timeout wrappers, command packing; measured with
the same script, docs/PERFORMANCE.md), as much as the rest of the admission. The protocol is read by
hiredis (the parser redis-py itself uses) as the bytes arrive, in the connection's protocol, which hands each reply
to its caller (no stream reader and no reading task to wake: 4 % of a governed call's instructions,
docs/PERFORMANCE.md); what is written here is the framing of a command, connecting (TLS for rediss://, AUTH,
SELECT from the URL) and matching replies to callers.

A lost connection fails the commands waiting on it with ``RedisUnavailable`` (the admission then admits and logs,
README "Budgets and rate limits") and the next command connects again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import unquote, urlsplit

import hiredis

CONNECT_TIMEOUT_SECONDS = 5
REPLY_TIMEOUT_SECONDS = 5
# After a failed connection attempt, commands fail at once for this long instead of each trying again (and each
# waiting up to CONNECT_TIMEOUT_SECONDS for a server that does not answer): during a Redis outage, governed calls
# are admitted unchecked without delay (README, "Budgets and rate limits").
RECONNECT_PAUSE_SECONDS = 1.0


class RedisUnavailable(ConnectionError):
    """The connection could not be made, was lost, or a reply did not come in time."""


class RedisReplyError(Exception):
    """Redis answered with an error (the message is Redis's)."""


def frame(*parts) -> bytes:
    """Parts of a command in RESP, without the array's header: bulk strings (bytes as they are, an int in decimal,
    anything else as its str in UTF-8)."""
    framed = []
    for part in parts:
        if type(part) is int:
            part = b"%d" % part
        elif not isinstance(part, bytes):
            part = str(part).encode()
        framed.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(framed)


def pack(*parts) -> bytes:
    """A command in RESP: an array of bulk strings (``frame``)."""
    return b"*%d\r\n" % len(parts) + frame(*parts)


class PipelinedRedis:
    """A connection to the Redis of ``url`` (redis:// or rediss://, with user, password and database number)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://…")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.tls = parts.scheme == "rediss"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self.db = int(path) if path.isdigit() else 0
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[tuple[asyncio.Future, float]] = deque()  # each command's reply and its deadline
        self._watchdog: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Lock | None = None
        self._unreachable_until = 0.0
        self._unreachable_reason = ""

    async def execute(self, *parts):
        """Send one command; its reply (an int, bytes, a list, ...). Raises RedisReplyError or RedisUnavailable."""
        return await self.execute_framed(pack(*parts))

    async def execute_framed(self, command: bytes):
        """``execute`` of a command already framed (``pack``)."""
        if self._transport is None:
            await self._connect()
        reply = await self._send(command)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    async def _send(self, command: bytes):
        transport = self._transport
        if transport is None:  # lost while this command waited for its turn to connect
            raise RedisUnavailable("the connection to Redis was lost")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # Before writing: the reply may be read as soon as the bytes leave.
        self._waiting.append((future, loop.time() + REPLY_TIMEOUT_SECONDS))
        transport.write(command)
        if self._watchdog is None:
            self._watchdog = loop.call_later(REPLY_TIMEOUT_SECONDS, self._check_replies)
        return await future

    def _check_replies(self) -> None:
        """Fail the connection when its oldest command has waited REPLY_TIMEOUT_SECONDS for its reply.

        One timer per connection rather than a timeout context per command, which cost a governed call 1.8 % of its
        instructions (docs/PERFORMANCE.md, "Governed calls under half"). The timer is armed by a command sent while
        none is, and fires at the oldest waiting command's deadline; with nothing waiting it stops."""
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0][1]
        if loop.time() >= deadline:
            # A reply may still come after this; the connection is dropped with everything waiting on it, and the
            # next command connects again: a server that stops answering is treated as gone.
            self._lost(RedisUnavailable(f"no reply from Redis within {REPLY_TIMEOUT_SECONDS} s"))
        else:
            self._watchdog = loop.call_at(deadline, self._check_replies)

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None:
                return
            loop = asyncio.get_running_loop()
            if loop.time() < self._unreachable_until:
                raise RedisUnavailable(self._unreachable_reason)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    self._transport = await self._open(loop)
            except (OSError, TimeoutError) as exc:
                self._unreachable_reason = f"cannot connect to Redis at {self.host}:{self.port}: {exc or 'timed out'}"
                self._unreachable_until = loop.time() + RECONNECT_PAUSE_SECONDS
                raise RedisUnavailable(self._unreachable_reason) from None
            if self._transport.is_closing():  # closed by Redis as soon as it was made
                self._transport = None
                raise RedisUnavailable("Redis closed the connection")
            setup = []
            if self.password is not None:
                setup.append(pack("AUTH", self.username, self.password) if self.username else pack("AUTH", self.password))
            if self.db:
                setup.append(pack("SELECT", self.db))
            for command in setup:
                reply = await self._send(command)
                if isinstance(reply, hiredis.ReplyError):
                    self._lost(RedisUnavailable(f"Redis refused the connection's set-up: {reply}"))
                    raise RedisUnavailable(f"Redis refused the connection's set-up: {reply}")

    async def _open(self, loop: asyncio.AbstractEventLoop) -> asyncio.Transport:
        context = ssl.create_default_context() if self.tls else None
        transport, _ = await loop.create_connection(lambda: _Replies(self), self.host, self.port, ssl=context)
        return transport

    def _received(self, transport: asyncio.Transport, parser: hiredis.Reader) -> None:
        """Hand the replies ``parser`` holds now to the commands that wait for them, oldest first."""
        if transport is not self._transport:  # a connection already given up
            return
        try:
            while (reply := parser.gets()) is not False:
                future = self._waiting.popleft()[0]
                if not future.done():
                    future.set_result(reply)
        except Exception as exc:  # what hiredis cannot read, or a reply no command waits for
            self._lost(RedisUnavailable(f"Redis sent what cannot be read: {exc}"))

    def _closed(self, transport: asyncio.Transport, exc: Exception | None) -> None:
        if transport is self._transport:
            self._lost(RedisUnavailable(f"the connection to Redis was lost: {exc}" if exc else
                                        "Redis closed the connection"))

    def _lost(self, error: Exception) -> None:
        """Forget the connection; every command still waiting on it fails with ``error``."""
        transport, self._transport = self._transport, None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if transport is not None:
            transport.close()

    async def close(self) -> None:
        self._lost(RedisUnavailable("closed"))


class _Replies(asyncio.Protocol):
    """A connection's bytes from Redis, parsed as they arrive and handed to ``PipelinedRedis._received``."""

    def __init__(self, connection: PipelinedRedis):
        self.connection = connection
        self.parser = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        self.connection._received(self.transport, self.parser)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection._closed(self.transport, exc)
