"""Masking the provider's API key in everything that comes back from the provider.

A provider may echo the key it was sent: in an error message, a request-id or rate-limit header, a 200 body, even
a malformed status line. Everything the provider sends enters the application through connectors.outbound.transport,
which masks it there with ``mask_secret`` (headers, bodies, streamed chunks, error messages), so that no response,
event field, export or log line downstream can carry it.

What must not reach a caller is the key *as the caller reads it*: bodies are JSON (SSE events hold JSON too), and a
JSON string may spell any character as an escape (``\\u0073`` is ``s``, ``\\/`` is ``/``), so ``"\\u0073k-..."``
decodes to the key although its bytes do not hold it. The key is therefore masked:

- as sent, and in the fixed forms an echo takes on the way: JSON-escaped (a key holding ``"`` or ``\\``),
  URL-encoded, and as Python quotes bytes;
- spelled in a JSON string with any of its characters escaped (``\\uXXXX`` in either case, a surrogate pair for a
  character beyond U+FFFF, or the short escapes), in the raw and URL-encoded forms. That is, every spelling whose
  decoded text holds the key. An escape that is itself escaped (``\\\\u0073``) decodes to a backslash and text,
  not to the key, and is left alone, so masking never breaks the JSON around it.

The escaped spellings are searched for only where the bytes hold an escape of one of the key's own characters
(``\\u0073`` for ``s``, ``\\/`` for a key with ``/``...), which no server writes for letters and digits; finding
out costs one scan for a backslash, and one for those escapes when there is one. Provider JSON is read as UTF-8 only
(``loads_provider_json``), so that what is parsed is exactly the bytes that were masked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from urllib.parse import quote, quote_plus

from connectors import json_codec

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter "keys" would mask ordinary words; such keys are refused for OpenAI/Azure anyway
# Where the end of a streamed chunk holds more places that could begin an escaped spelling of the key than this (a
# word of text holds a few), they are not read one by one: the end is held back whole (at most one spelling's length).
MAX_CANDIDATES = 16

# JSON's two-character escapes (RFC 8259, 7), by the character they stand for.
_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_SHORT_UNESCAPES = {letter: char for char, letter in _SHORT_ESCAPES.items()}
# One character of a JSON string: an escape, or a character written as itself (one to four UTF-8 bytes).
_TOKEN = re.compile(rb'\\u(?P<unit>[0-9a-fA-F]{4})|\\(?P<short>["\\/bfnrt])|[\x00-\x5b\x5d-\x7f]|[\xc0-\xff][\x80-\xbf]+')
# The same cut off by the end of what has arrived: a backslash, ``\u`` and up to three hex digits, part of a character.
_PARTIAL_TOKEN = re.compile(rb"\\(?:u[0-9a-fA-F]{0,3})?|[\xc0-\xff][\x80-\xbf]*")
_HEX = b"0123456789abcdefABCDEF"


def _hex_digits(code_unit: int) -> str:
    """``\\uXXXX`` for ``code_unit`` as a pattern that takes the hex digits in either case."""
    return r"\\u" + "".join(f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{code_unit:04x}")


def _code_units(char: str) -> list[int]:
    code = ord(char)
    if code < 0x10000:
        return [code]
    code -= 0x10000
    return [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]


def _char_pattern(char: str) -> str:
    """The ways a JSON string can spell ``char``: itself (unless it must be escaped there) or an escape."""
    options = []
    if char not in '"\\' and ord(char) >= 0x20:
        options.append(re.escape(char))
    if char in _SHORT_ESCAPES:
        options.append(re.escape("\\" + _SHORT_ESCAPES[char]))
    options.append("".join(_hex_digits(unit) for unit in _code_units(char)))
    return "(?:" + "|".join(options) + ")"


def _longest_spelling(text: str) -> int:
    """The most bytes a JSON string can take to spell ``text`` (every character as ``\\uXXXX``)."""
    return sum(max(len(char.encode("utf-8")), 6 * len(_code_units(char))) for char in text)


@dataclass(frozen=True)
class _Spellings:
    """Everything masking needs to know about one key, computed once per key."""

    forms: tuple[str, ...]  # fixed forms, longest first (so a longer form is masked whole)
    byte_forms: tuple[bytes, ...]
    bases: tuple[str, ...]  # the forms whose JSON-escaped spellings are masked too
    escaped: tuple[re.Pattern, ...]  # per base: any spelling of it (only those with an escape are not fixed forms)
    escaped_bytes: tuple[re.Pattern, ...]
    trigger: re.Pattern  # the escapes of the bases' characters: no escaped spelling without one
    byte_trigger: re.Pattern
    longest_escaped: int  # bytes
    alphabet: bytes  # every byte an escaped spelling can hold
    beginnings: re.Pattern  # (zero-width) where a spelling can begin: its first character, whole or cut off
    base_units: tuple[tuple[int, ...], ...]  # the bases as UTF-16 code units (what ``\uXXXX`` spells)


def _case_variants(text: str) -> set[str]:
    variants = {""}
    for char in text:
        variants = {variant + case for variant in variants for case in {char, char.upper()}}
    return variants


@lru_cache(maxsize=256)
def _spellings(secret: str) -> _Spellings | None:
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return None
    bases = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms = bases | {
        json.dumps(secret)[1:-1],  # JSON-escaped, ASCII (as most servers write JSON)
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret.encode("utf-8"))[2:-1],  # as client libraries quote a malformed status line or header
    }
    forms = tuple(sorted(forms, key=len, reverse=True))
    bases = tuple(sorted(bases, key=len, reverse=True))
    # One pattern per base, which begins with a choice of single characters, so that the regular expression engine
    # skips ahead to where a match can begin; where an escape can begin is checked apart (_mask_escaped).
    sources = ["".join(_char_pattern(char) for char in base) for base in bases]
    characters = set("".join(bases))
    triggers = set()
    alphabet = set(b"\\u" + _HEX)
    for char in characters:
        for unit in _code_units(char):
            triggers |= {"\\u" + digits for digits in _case_variants(f"{unit:04x}")}
        if char in _SHORT_ESCAPES:
            triggers.add("\\" + _SHORT_ESCAPES[char])
            alphabet.add(ord(_SHORT_ESCAPES[char]))
        if char not in '"\\' and ord(char) >= 0x20:
            alphabet |= set(char.encode("utf-8"))
    # One scan for all of them (a regular expression scans faster than ``in`` for each).
    trigger = "|".join(re.escape(escape) for escape in sorted(triggers))
    # A spelling's first character, or an escape cut off by the end of what has arrived.
    beginnings = "(?=" + "|".join([*{_char_pattern(base[0]) for base in bases}, r"\\(?:u[0-9a-fA-F]{0,3})?\Z"]) + ")"
    return _Spellings(
        forms=forms,
        byte_forms=tuple(form.encode("utf-8") for form in forms),
        bases=bases,
        escaped=tuple(re.compile(source) for source in sources),
        escaped_bytes=tuple(re.compile(source.encode("utf-8")) for source in sources),
        trigger=re.compile(trigger),
        byte_trigger=re.compile(trigger.encode()),
        longest_escaped=max(_longest_spelling(base) for base in bases),
        alphabet=bytes(sorted(alphabet)),
        beginnings=re.compile(beginnings.encode("utf-8")),
        base_units=tuple(tuple(unit for char in base for unit in _code_units(char)) for base in bases),
    )


def mask_secret(value: str | bytes, secret: str) -> str | bytes:
    """``value`` with every form of ``secret`` replaced by ``***`` (bytes in, bytes out; str in, str out)."""
    spellings = _spellings(secret)
    if spellings is None:
        return value
    if isinstance(value, bytes):
        return _mask_bytes(value, spellings)
    for form in spellings.forms:
        if form in value:
            value = value.replace(form, MASK)
    if "\\" in value and spellings.trigger.search(value):
        value = _mask_escaped(value, spellings.escaped, MASK, "\\")
    return value


def _mask_bytes(value: bytes, spellings: _Spellings, *, escaped_first: bool = False) -> bytes:
    """``mask_secret`` for bytes. ``escaped_first``: the byte before ``value`` (already passed on) is a backslash
    that escapes ``value``'s first byte."""
    for form in spellings.byte_forms:
        if form in value:
            value = value.replace(form, MASK.encode())
    if b"\\" in value and spellings.byte_trigger.search(value):
        value = _mask_escaped(value, spellings.escaped_bytes, MASK.encode(), b"\\", escaped_first)
    return value


def _mask_escaped(value, patterns, mask, backslash, escaped_first: bool = False):
    """``value`` with every match of ``patterns`` that starts where an escape can start replaced by ``mask``.

    A match right after an odd run of backslashes starts inside an escape (``\\\\u0073`` is a backslash and
    ``u0073``): it is not what a JSON reader decodes, and masking it would break the JSON, so it is skipped.
    """
    for pattern in patterns:
        pieces, done, position = [], 0, 0
        while (match := pattern.search(value, position)) is not None:
            start = run = match.start()
            while run > 0 and value[run - 1:run] == backslash:
                run -= 1
            odd = (start - run) % 2 == 1
            if run == 0 and escaped_first:
                odd = not odd
            if odd:
                position = start + 1
                continue
            pieces += [value[done:start], mask]
            done = position = match.end()
        if pieces:
            value = value[:0].join([*pieces, value[done:]])
    return value


def loads_provider_json(body: bytes):
    """The provider's JSON ``body``, read as UTF-8 only (as RFC 8259 requires between systems).

    ``json.loads`` would also read bytes in UTF-16 or UTF-32, where the key's characters are not the bytes that
    were masked; such a body is not read as JSON (ValueError). Parsed by connectors/json_codec.py (orjson where it
    agrees with ``json``), from text, so that its fallback to ``json`` never guesses an encoding either. A UTF-8 byte order mark is allowed, and the encoded
    surrogates that ``json.loads`` lets through are still let through.
    """
    return json_codec.loads(body.decode("utf-8-sig", "surrogatepass"))


class StreamMasker:
    """``mask_secret`` over a body that arrives in chunks, where an echoed key may straddle two chunks.

    Only the end of a chunk that could be the beginning of a key (in any form, escaped spellings included) is held
    back until the next chunk shows whether it is one, so a stream is relayed as it arrives unless it really is
    spelling out the key.
    """

    def __init__(self, secret: str):
        self._spellings = _spellings(secret)
        self._held = b""
        self._escaped_next = False  # what was passed on ends with an odd run of backslashes: the next byte is escaped

    def feed(self, chunk: bytes) -> bytes:
        if self._spellings is None:
            return chunk
        data = _mask_bytes(self._held + chunk, self._spellings, escaped_first=self._escaped_next)
        keep = max(self._possible_start(data), self._possible_escaped_start(data))
        passed, self._held = data[: len(data) - keep], data[len(data) - keep:]
        self._note_passed(passed)
        return passed

    def close(self) -> bytes:
        """The rest, at the end of the body."""
        held, self._held = self._held, b""
        return held

    def _note_passed(self, passed: bytes) -> None:
        run = len(passed) - len(passed.rstrip(b"\\"))
        if run == len(passed):
            self._escaped_next ^= bool(run % 2)
        else:
            self._escaped_next = bool(run % 2)

    def _possible_start(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that is a proper beginning of some fixed form of the key."""
        forms = self._spellings.byte_forms
        tail = data[-(len(forms[0]) - 1):] if len(forms[0]) > 1 else b""
        longest = 0
        for first in {form[:1] for form in forms}:
            position = tail.find(first)
            while position != -1 and len(tail) - position > longest:
                rest = tail[position:]
                if any(form.startswith(rest) for form in forms):
                    longest = len(rest)  # the earliest start is the longest end: no need to look further
                    break
                position = tail.find(first, position + 1)
        return longest

    def _possible_escaped_start(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that may begin an escaped spelling of the key.

        Such an end holds a backslash and only bytes a spelling can hold; anything else (a quote, a space, the
        newline that ends an SSE event) ends the search at once.
        """
        spellings = self._spellings
        if not data or data[-1] not in spellings.alphabet:
            return 0
        window = data[-(spellings.longest_escaped - 1):]
        tail = window[len(window.rstrip(spellings.alphabet)):]
        if b"\\" not in tail:
            return 0  # plain text: _possible_start has looked at it
        starts = [beginning.start() for beginning in islice(spellings.beginnings.finditer(tail), MAX_CANDIDATES + 1)]
        if len(starts) > MAX_CANDIDATES:
            return len(tail) - starts[0]  # a run of would-be beginnings (a hostile provider's): held, unread
        for start in starts:  # the earliest start is the longest end
            if self._begins_a_spelling(tail[start:]):
                return len(tail) - start
        return 0

    def _begins_a_spelling(self, end: bytes) -> bool:
        """Whether ``end``, read as the inside of a JSON string, is the beginning of a base: read one token at a
        time, so that a false start costs a token or two, not a decoding of the whole end."""
        for units in self._spellings.base_units:
            position, index = 0, 0
            while position < len(end):
                token = _TOKEN.match(end, position)
                if token is None or (token.lastgroup is None and token.end() == len(end) and end[-1] >= 0x80):
                    # An escape or a character cut off by the end of what has arrived, or no JSON at all.
                    if index < len(units) and _PARTIAL_TOKEN.fullmatch(end, position) is not None:
                        return True
                    break
                if token.lastgroup == "unit":
                    read = (int(token.group("unit"), 16),)
                elif token.lastgroup == "short":
                    read = (ord(_SHORT_UNESCAPES[token.group("short").decode()]),)
                else:
                    read = tuple(unit for char in token.group().decode("utf-8", "replace") for unit in _code_units(char))
                if units[index:index + len(read)] != read:
                    break
                position, index = token.end(), index + len(read)
            else:
                return True
        return False
