"""uvicorn's HTTP/1.1 protocol (httptools), writing a response of known length in one write instead of two.

uvicorn writes a response's status line and headers to the socket as soon as the application sends
``http.response.start``, and its body in a second write when ``http.response.body`` comes. For a JSON answer (every
API call) that is two system calls, two TCP segments and two wake-ups of the client (or of the reverse proxy) where
one would do: 2-3 % of a call's CPU in the gateway, and the client's share besides (docs/PERFORMANCE.md, "One write a
response"). This protocol holds the head of a response that declares its ``Content-Length`` and writes it with the
body's first piece. Everything else is uvicorn's own code: the head is built, checked and counted by it, the body
too; only the moment of the head's write moves. A streamed answer (Server-Sent Events: no ``Content-Length``), a
``HEAD`` request and a response without a body have their head written at once, as before, so a streaming client
sees the headers before the first event.

Serve with it by naming it to uvicorn (``make run`` and the README's production commands do)::

    uvicorn connectors_admin.asgi:application --http connectors_admin.http_protocol:OneWriteHttpToolsProtocol

Without it the application works the same, one write slower a response.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

PROTOCOL = "connectors_admin.http_protocol:OneWriteHttpToolsProtocol"
BODILESS_STATUSES = frozenset((204, 304))


class _HeadKeeper:
    """Stands in for the transport while uvicorn writes a response's head: keeps the bytes."""

    __slots__ = ("head",)

    def __init__(self) -> None:
        self.head = b""

    def write(self, data: bytes) -> None:
        self.head += data


class _HeadFirst:
    """Stands in for the transport while uvicorn writes the body's first piece: the held head goes with it, in one
    write. Anything else uvicorn asks of the transport (``close`` when the connection does not stay open) goes to
    the real one, after the head if it was not written yet."""

    __slots__ = ("transport", "head")

    def __init__(self, transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, b""
        self.transport.write(head + data if head else data)

    def flush_head(self) -> None:
        if self.head:
            self.write(b"")

    def close(self) -> None:
        self.flush_head()
        self.transport.close()

    def __getattr__(self, name):
        return getattr(self.transport, name)


def _has_sized_body(message, method: str) -> bool:
    if method == "HEAD" or message.get("status") in BODILESS_STATUSES:
        return False
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-length":
            return value != b"0"
    return False


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle with a sized response's head held until its body (the module's docstring)."""

    _held_head: bytes | None = None

    async def send(self, message) -> None:
        # uvicorn's send waits for the transport to drain before anything else, and does not wait after: waited
        # here, so that nothing else of the connection runs while a stand-in is the transport.
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        kind = message["type"]
        if (kind == "http.response.start" and not self.response_started and not self.disconnected
                and _has_sized_body(message, self.scope["method"])):
            transport, self.transport = self.transport, _HeadKeeper()
            try:
                await super().send(message)
            finally:
                keeper, self.transport = self.transport, transport
            self._held_head = keeper.head
            return
        if self._held_head is not None and kind == "http.response.body":
            head, self._held_head = self._held_head, None
            transport, self.transport = self.transport, _HeadFirst(self.transport, head)
            try:
                await super().send(message)
            finally:
                head_first, self.transport = self.transport, transport
                if not self.disconnected:
                    head_first.flush_head()  # a body uvicorn refused (longer than declared): the head still goes
            return
        await super().send(message)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests run in ``OneWriteCycle``s (pipelined ones too: every cycle
    starts here)."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:
        cycle.__class__ = OneWriteCycle
        super()._start_asgi_task(cycle, app)
