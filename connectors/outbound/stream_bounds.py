"""The limits on a relayed stream, and the linear-time SSE line reader that enforces the one on a line or event.

A provider's stream is relayed as it arrives (connectors.outbound.streaming), so nothing in the response head
tells how long it will run or how much it will send. Four bounds end it (README, "Limits on streams"):

- ``STREAM_MAX_BYTES``: the bytes read from the provider in all;
- ``STREAM_MAX_SECONDS``: the time since the request reached the execution, whatever the provider sends;
- ``STREAM_MAX_EVENT_BYTES``: one SSE event (its lines up to the blank line that ends it), and so one line,
  which must be held whole to be read;
- ``responseTimeout`` (or a longer per-call ``timeout``): the time without any byte from the provider.

They are settings of this server (settings.py), not ``ACTIONS_CONFIG`` keys: that file holds Kibana's own
``xpack.actions`` keys, so that a kibana.yml section loads as it is, and Kibana has no stream limits to copy (its
``maxResponseContentLength`` applies to buffered responses, not to streamed ones).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class StreamBounds:
    max_bytes: int
    max_seconds: float
    max_event_bytes: int

    @classmethod
    def from_settings(cls) -> StreamBounds:
        return cls(max_bytes=settings.STREAM_MAX_BYTES, max_seconds=settings.STREAM_MAX_SECONDS,
                   max_event_bytes=settings.STREAM_MAX_EVENT_BYTES)


class StreamCut(Exception):
    """A bound ended the stream. ``reason`` says which, for the event log and the caller (no secret in it)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def too_large(cls, where: str, received: int, limit: int) -> StreamCut:
        return cls(f"The provider's stream from {where} was cut after {received} bytes: it passed STREAM_MAX_BYTES "
                   f"({limit} bytes).")

    @classmethod
    def too_long(cls, where: str, limit: float) -> StreamCut:
        return cls(f"The provider's stream from {where} was cut: it ran longer than STREAM_MAX_SECONDS ({limit:g} s).")

    @classmethod
    def event_too_large(cls, where: str, limit: int) -> StreamCut:
        return cls(f"The provider's stream from {where} was cut: a line or event passed STREAM_MAX_EVENT_BYTES "
                   f"({limit} bytes) without ending.")


class EventTooLarge(Exception):
    """An SSE line or event grew past its bound (raised by ``SSELineReader``, turned into a ``StreamCut``)."""


class SSELineReader:
    """Splits a stream's bytes into lines in time linear in its length, holding at most ``max_event_bytes``.

    The unterminated end of a chunk is kept in a ``bytearray`` and extended in place, so a line that arrives in
    many pieces costs its length once, not once per piece (re-joining it each time made a stream with no newline
    quadratic, and held the CPU for seconds). The bytes of the current event, the lines since the last blank one
    and the unterminated line, are counted: past ``max_event_bytes``, ``lines()`` raises ``EventTooLarge`` before
    handing out anything of the chunk that crossed the bound.
    """

    def __init__(self, max_event_bytes: int):
        self.max_event_bytes = max_event_bytes
        self._partial = bytearray()
        self._event_size = 0  # bytes of the current event's complete lines, newlines included

    def lines(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, without their ``\\n`` (a ``\\r`` before it is kept)."""
        pieces = chunk.split(b"\n")
        if len(pieces) == 1:
            self._partial += chunk
            if self._event_size + len(self._partial) > self.max_event_bytes:
                raise EventTooLarge
            return []
        if self._partial:
            self._partial += pieces[0]
            pieces[0] = bytes(self._partial)
        lines, tail = pieces[:-1], pieces[-1]
        event_size = self._event_size
        for line in lines:
            event_size = 0 if line in (b"", b"\r") else event_size + len(line) + 1
            if event_size > self.max_event_bytes:
                raise EventTooLarge
        if event_size + len(tail) > self.max_event_bytes:
            raise EventTooLarge
        self._event_size = event_size
        self._partial = bytearray(tail)
        return lines

    def rest(self) -> bytes:
        """The unterminated last line, handed out once (at the end of the stream)."""
        rest = bytes(self._partial)
        self._partial.clear()
        return rest
