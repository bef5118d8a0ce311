"""One pipelined Redis connection per event loop, for the two scripts a governed call runs (usage/governance/enforcement/counters.py).

Redis answers the commands of a connection in the order it received them, so concurrent callers can share one
connection: each writes its command and waits for the reply in its turn, matched first in, first out. No pool, no
checkout, no lock: under a burst of a thousand calls their admissions go out back to back on one connection.

Why not redis-py's asyncio client, which the rest of the app uses for Redis: on this path it spent about 0.13 ms of
CPU and 0.18 ms of latency per command (pool checkout, retry and timeout wrappers, command packing; measured with
the same script, docs/PERFORMANCE.md), as much as the rest of the admission. The protocol is read by
hiredis (the parser redis-py itself uses); what is written here is the framing of a command, connecting (TLS for
rediss://, AUTH, SELECT from the URL) and matching replies to callers.

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


def pack(*parts) -> bytes:
    """A command in RESP: an array of bulk strings (bytes as they are, an int in decimal, anything else as its str
    in UTF-8)."""
    framed = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if type(part) is int:
            part = b"%d" % part
        elif not isinstance(part, bytes):
            part = str(part).encode()
        framed.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(framed)


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
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[tuple[asyncio.Future, float]] = deque()  # each command's reply and its deadline
        self._watchdog: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Lock | None = None
        self._reading: asyncio.Task | None = None
        self._unreachable_until = 0.0
        self._unreachable_reason = ""

    async def execute(self, *parts):
        """Send one command; its reply (an int, bytes, a list, ...). Raises RedisReplyError or RedisUnavailable."""
        if self._writer is None:
            await self._connect()
        reply = await self._send(pack(*parts))
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    async def _send(self, command: bytes):
        writer = self._writer
        if writer is None:  # lost while this command waited for its turn to connect
            raise RedisUnavailable("the connection to Redis was lost")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # Before writing: the reply may be read as soon as the bytes leave.
        self._waiting.append((future, loop.time() + REPLY_TIMEOUT_SECONDS))
        writer.write(command)
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
            if self._writer is not None:
                return
            loop = asyncio.get_running_loop()
            if loop.time() < self._unreachable_until:
                raise RedisUnavailable(self._unreachable_reason)
            context = ssl.create_default_context() if self.tls else None
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    reader, writer = await asyncio.open_connection(self.host, self.port, ssl=context)
            except (OSError, TimeoutError) as exc:
                self._unreachable_reason = f"cannot connect to Redis at {self.host}:{self.port}: {exc or 'timed out'}"
                self._unreachable_until = loop.time() + RECONNECT_PAUSE_SECONDS
                raise RedisUnavailable(self._unreachable_reason) from None
            self._writer = writer
            self._reading = asyncio.ensure_future(self._read(reader, writer))
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

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise RedisUnavailable("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = self._waiting.popleft()[0]
                    if not future.done():
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone (or Redis sent what hiredis cannot read)
            if self._writer is writer:
                self._lost(exc if isinstance(exc, RedisUnavailable) else RedisUnavailable(str(exc)))

    def _lost(self, error: Exception) -> None:
        """Forget the connection; every command still waiting on it fails with ``error``."""
        writer, self._writer = self._writer, None
        reading, self._reading = self._reading, None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if writer is not None:
            writer.close()
        if reading is not None and reading is not asyncio.current_task():
            reading.cancel()

    async def close(self) -> None:
        self._lost(RedisUnavailable("closed"))
