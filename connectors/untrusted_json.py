"""Parsing JSON that comes from a caller, so that what parses can also be stored, encoded and sent on.

``json.loads`` accepts things that break later, far from the caller's input, as a 500 or an "internal error":
nesting deep enough to exhaust the recursion limit (``[[[[…``: RecursionError while parsing, or later while
encoding), a ``\\ud800`` escape that decodes to a lone surrogate (no UTF-8 encoding exists for it), and the
non-standard ``NaN`` / ``Infinity`` (and numbers such as ``1e400`` that overflow to infinity). ``loads`` refuses
them with a ValueError whose message says what is wrong, so every endpoint answers them with a 400.

Lone surrogates can be replaced by U+FFFD instead (``replace_lone_surrogates``): Kibana's ``_execute`` accepts any
JSON string (JavaScript strings may hold them) and answers in its envelope, so that API keeps doing so.
"""

from __future__ import annotations

import json
import math
import re

from connectors import json_codec

MAX_DEPTH = 100  # far beyond any chat body or JSON schema, far below Python's recursion limit
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


class InvalidJSON(ValueError):
    """The caller's JSON cannot be used; the message is safe to show."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"the number {text[:32]} is too large")
    return value


def _refuse_constant(name: str):
    raise InvalidJSON(f"{name} is not valid JSON")


def loads(raw: str | bytes, *, replace_lone_surrogates: bool = False) -> object:
    """``json.loads`` for a caller's input; InvalidJSON (a ValueError) for what cannot be used.

    orjson reads it first (connectors/json_codec.py: about 5 times faster, and only where it gives ``json``'s
    value); what orjson refuses is read again by ``json``, whose rules and messages below decide."""
    value = json_codec.orjson_loads(raw)
    if value is not json_codec.NOT_READ:
        check_depth(value)  # orjson itself stops at 1,024 levels; no lone surrogate survives it
        return value
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJSON(f"the JSON is nested more than {MAX_DEPTH} levels deep") from None
    check_depth(value)
    # Only a \\uD800-\\uDFFF escape can produce a lone surrogate: look for one before walking the strings.
    # (A str may hold one already, decoded from an outer JSON document.)
    if not isinstance(raw, bytes | bytearray) or _SURROGATE_ESCAPE.search(raw):
        if replace_lone_surrogates:
            return _without_lone_surrogates(value)
        check_encodable(value)
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads has already joined every valid pair


def _without_lone_surrogates(value: object) -> object:
    """``value`` with each lone surrogate replaced by U+FFFD (depth already bounded, so recursion is safe)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(key): _without_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def check_depth(value: object) -> None:
    """InvalidJSON when ``value`` nests lists and objects more than MAX_DEPTH deep (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise InvalidJSON(f"the JSON is nested more than {MAX_DEPTH} levels deep")
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def check_encodable(value: object) -> None:
    """InvalidJSON when a string (or an object key) holds a lone surrogate, which has no UTF-8 encoding."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJSON("a string holds a lone surrogate (such as \\ud800), which is not valid Unicode") from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
