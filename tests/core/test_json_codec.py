"""connectors/json_codec.py: orjson where it gives what ``json`` gives, ``json`` everywhere else."""

import json
import math

import pytest

from connectors import json_codec

ANSWERS = [
    b'{"id":"chatcmpl-1","choices":[{"message":{"content":"caf\\u00e9 \\ud83d\\ude00"}}],"usage":{"total_tokens":3}}',
    b'{"a":1,"a":2}',
    b'{"seed":123456789012345678901234567890,"small":-9223372036854775808}',  # beyond 64 bits stays an int
    b'{"x":1.5e300,"y":-0.0,"z":[true,false,null]}',
]


@pytest.mark.parametrize("raw", ANSWERS)
def test_loads_gives_what_json_gives(raw):
    assert json_codec.loads(raw) == json.loads(raw)
    assert type(json_codec.loads(raw)) is type(json.loads(raw))


def test_an_integer_beyond_64_bits_is_read_as_an_int_not_a_float():
    value = json_codec.loads(b'{"n":123456789012345678901234567890}')["n"]
    assert value == 123456789012345678901234567890 and isinstance(value, int)


def test_what_orjson_refuses_and_json_accepts_is_read_by_json():
    assert math.isnan(json_codec.loads(b"[NaN]")[0])
    assert json_codec.loads(b'["\\ud800"]') == ["\ud800"]  # a lone surrogate, as json reads it
    assert json_codec.loads(b"[1e400]") == [math.inf]


def test_invalid_json_raises_jsons_value_error():
    with pytest.raises(ValueError) as caught:
        json_codec.loads(b'{"a": ')
    assert type(caught.value) is json.JSONDecodeError


@pytest.mark.parametrize("value", [
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "Grüße \u2028 😀"}], "temperature": 0.7},
    {"n": 2**70, "stream": False},  # an integer orjson cannot hold
])
def test_dumps_compact_is_jsons_compact_utf8(value):
    assert json_codec.dumps_compact(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_dumps_compact_fails_as_before_on_a_lone_surrogate():
    # As json.dumps(...).encode("utf-8") did: the caller's body reaches here without one (connectors/untrusted_json.py).
    with pytest.raises(UnicodeEncodeError):
        json_codec.dumps_compact({"text": "lone \ud800"})


def test_dumps_or_none_leaves_other_types_to_the_caller():
    import datetime

    assert json_codec.dumps_or_none({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    assert json_codec.dumps_or_none({"at": datetime.datetime(2026, 1, 1)}) is None
    assert json_codec.dumps_or_none({1: "int key"}) is None
