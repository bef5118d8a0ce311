"""JSON on the execution path, with orjson where it gives exactly what the standard library gives.

orjson encodes and decodes several times faster than ``json`` (docs/PERFORMANCE.md, "Where a call's CPU goes"),
but differs from it at the edges: it reads integers of more than 64 bits as floats, refuses ``NaN`` and
``Infinity``, lone surrogates and integers it cannot hold, and encodes some types (datetimes, UUIDs) in its own
way. So each function here uses orjson only where both agree, and otherwise, or when orjson refuses, falls back to
``json``, whose behaviour (and errors) are then exactly what they were. One difference is kept: a float that is
not finite (``NaN``, read from a provider's answer by ``json``) is encoded as ``null``, valid JSON, where ``json``
wrote ``NaN``, which JSON parsers refuse.

The caller's own JSON is read by connectors/untrusted_json.py (its rules for what a caller may send); this module is
for what the gateway encodes, and for the provider's answers.
"""

from __future__ import annotations

import json

import orjson

# A run of 19 digits may be an integer beyond 64 bits, which orjson reads as a float (``json`` as an int). Found by
# mapping every digit to "0" and everything else to " " (bytes.translate, in C), several times faster than a regex.
_DIGITS_ONLY = bytes(ord("0") if chr(byte) in "0123456789" else ord(" ") for byte in range(256))
_LONG_NUMBER = b"0" * 19
# Only JSON's own types: anything else (a datetime, a dataclass, a str subclass) makes orjson raise, and ``json``
# decides, as it always did.
_NATIVE_ONLY = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


# What orjson_loads returns when orjson did not read the document (the caller then reads it with ``json``).
NOT_READ = object()


def orjson_loads(raw: bytes | str) -> object:
    """The value of ``raw`` read by orjson when orjson reads it exactly as ``json`` would, else NOT_READ: a possible
    integer beyond 64 bits, or anything orjson refuses (NaN and Infinity, a number that overflows, a lone surrogate,
    nesting beyond 1,024, text that is not UTF-8 or not JSON). What orjson reads holds no lone surrogate."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _LONG_NUMBER in data.translate(_DIGITS_ONLY):
        return NOT_READ
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return NOT_READ


def loads(raw: bytes | str) -> object:
    """``json.loads(raw)``: the same value, and the same ValueError for what it refuses."""
    value = orjson_loads(raw)
    return json.loads(raw) if value is NOT_READ else value  # json says why it refuses


def dumps_compact(value: object) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()``: the upstream request's body."""
    try:
        return orjson.dumps(value, option=_NATIVE_ONLY)
    except TypeError:  # orjson.JSONEncodeError: a type, a lone surrogate, an integer it cannot hold
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps_or_none(value: object) -> bytes | None:
    """The compact UTF-8 JSON of ``value`` when orjson encodes it (JSON's own types only), else None: the caller
    then encodes it as it always did (Django's JsonResponse, for the API's answers)."""
    try:
        return orjson.dumps(value, option=_NATIVE_ONLY)
    except TypeError:
        return None
