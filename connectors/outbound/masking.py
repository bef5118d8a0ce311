"""Masking the provider's API key in everything that comes back from the provider.

A provider may echo the key it was sent: in an error message, a request-id or rate-limit header, a 200 body, even
a malformed status line. Everything the provider sends enters the application through connectors.outbound.transport,
which masks it there with ``mask_secret`` (headers, bodies, streamed chunks, error messages), so that no response,
event field, export or log line downstream can carry it. The key is masked as sent and in the forms an echo
takes on the way: JSON-escaped (a key holding ``"`` or ``\\``) and URL-encoded.
"""

from __future__ import annotations

import json
from functools import lru_cache
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter "keys" would mask ordinary words; such keys are refused for OpenAI/Azure anyway


@lru_cache(maxsize=256)
def _forms(secret: str) -> tuple[str, ...]:
    """The key and the forms an echo of it may take, longest first (so a longer form is masked whole)."""
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return ()
    forms = {
        secret,
        json.dumps(secret)[1:-1],  # JSON-escaped, ASCII (as most servers write JSON)
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),  # as a path segment keeps "/"
        quote_plus(secret),
        repr(secret.encode("utf-8"))[2:-1],  # as client libraries quote a malformed status line or header
    }
    return tuple(sorted(forms, key=len, reverse=True))


@lru_cache(maxsize=256)
def _byte_forms(secret: str) -> tuple[bytes, ...]:
    return tuple(form.encode("utf-8") for form in _forms(secret))


def mask_secret(value: str | bytes, secret: str) -> str | bytes:
    """``value`` with every form of ``secret`` replaced by ``***`` (bytes in, bytes out; str in, str out)."""
    if isinstance(value, bytes):
        for form in _byte_forms(secret):
            if form in value:
                value = value.replace(form, MASK.encode())
        return value
    for form in _forms(secret):
        if form in value:
            value = value.replace(form, MASK)
    return value


class StreamMasker:
    """``mask_secret`` over a body that arrives in chunks, where an echoed key may straddle two chunks.

    Only the end of a chunk that could be the beginning of a key is held back until the next chunk shows whether
    it is one, so a stream is relayed as it arrives unless it really is spelling out the key.
    """

    def __init__(self, secret: str):
        self._secret = secret
        self._forms = _byte_forms(secret)
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._forms:
            return chunk
        data = mask_secret(self._held + chunk, self._secret)
        keep = self._possible_start(data)
        self._held = data[len(data) - keep:] if keep else b""
        return data[: len(data) - keep]

    def close(self) -> bytes:
        """The rest, at the end of the body."""
        held, self._held = self._held, b""
        return held

    def _possible_start(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that is a proper beginning of some form of the key."""
        tail = data[-(len(self._forms[0]) - 1):] if len(self._forms[0]) > 1 else b""
        longest = 0
        for first in {form[:1] for form in self._forms}:
            position = tail.find(first)
            while position != -1 and len(tail) - position > longest:
                rest = tail[position:]
                if any(form.startswith(rest) for form in self._forms):
                    longest = len(rest)  # the earliest start is the longest end: no need to look further
                    break
                position = tail.find(first, position + 1)
        return longest
