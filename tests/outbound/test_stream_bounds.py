"""The limits on relayed streams (README, "Limits on streams"), against hostile upstreams over real sockets, through
both streaming entry points (``_execute`` stream and the OpenAI-compatible endpoint with ``stream: true``): a
flood of 64 KB events, a line that never ends, a slowloris trickle and a stream that goes silent are each cut at
their bound, the upstream connection closed, and the execution recorded once with the reason."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from connectors.outbound import tokens
from connectors.outbound.stream_bounds import EventTooLarge, SSELineReader
from tests.conftest import basic_auth
from tests.servers.hostile_upstream import HostileUpstream
from usage.models import ExecutionEvent

HELLO = [{"role": "user", "content": "Hello world"}]
ENTRY_POINTS = ["execute", "openai"]


@pytest.fixture(scope="module")
def hostile():
    server = HostileUpstream().start()
    yield server
    server.stop()


@dataclass
class StreamRead:
    status: int
    body: bytes
    ended: bool  # the gateway ended the response (False: the reader gave up)

    def content(self) -> str:
        """The generated text of the content events received."""
        text = []
        for line in self.body.decode("utf-8", "replace").splitlines():
            if line.startswith("data: {"):
                payload = json.loads(line[len("data: "):])
                text += [c["delta"].get("content") or "" for c in payload.get("choices") or []]
        return "".join(text)

    def error_events(self) -> list[dict]:
        lines = self.body.decode("utf-8", "replace").splitlines()
        return [json.loads(line[6:])["error"] for line in lines if line.startswith('data: {"error"')]


def read_stream(server, entry: str, user, connector, *, give_up_bytes: int = 1 << 30,
                give_up_seconds: float = 60) -> StreamRead:
    """Stream through ``entry`` and read to the end; give up (``ended`` False) past either limit, so that a test
    of an unbounded stream fails instead of running forever."""
    headers = {"Authorization": basic_auth(user), "kbn-xsrf": "true"}  # Basic writes carry it, as Kibana's clients do
    if entry == "execute":
        url = f"{server.url}/api/actions/connector/{connector.pk}/_execute"
        body = {"params": {"subAction": "stream",
                           "subActionParams": {"stream": True, "body": json.dumps({"messages": HELLO})}}}
    else:
        url = f"{server.url}/api/openai/{connector.pk}/v1/chat/completions"
        body = {"model": "gpt-4o", "stream": True, "messages": HELLO}
    received = bytearray()
    give_up_at = time.monotonic() + give_up_seconds
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        for piece in response.iter_raw():
            received += piece
            if len(received) > give_up_bytes or time.monotonic() > give_up_at:
                return StreamRead(response.status_code, bytes(received), ended=False)
        return StreamRead(response.status_code, bytes(received), ended=True)


def assert_cut(read: StreamRead, entry: str, connector, reason: str) -> ExecutionEvent:
    """The stream ended; an OpenAI caller got the interruption as an error event; one event holds the reason."""
    assert read.ended, "the stream was not cut"
    assert read.status == 200
    if entry == "openai":
        errors = read.error_events()
        assert len(errors) == 1 and errors[0]["code"] == "stream_interrupted" and reason in errors[0]["message"]
    else:
        assert b'"error"' not in read.body  # Kibana's stream just ends
    event = ExecutionEvent.objects.get(connector_id=connector.pk)  # exactly one
    assert event.outcome == "failure" and reason in event.error_message
    assert event.sub_action == "stream" and event.source == ("openai_api" if entry == "openai" else "api")
    return event


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_flood_of_64kb_events_is_cut_at_stream_max_bytes(asgi_live_server, recorded_events, operator,
                                                         make_connector, hostile, settings, entry):
    settings.STREAM_MAX_BYTES = limit = 2 * 1024 * 1024
    connector = make_connector(api_url=hostile.url("flood-65536"))
    read = read_stream(asgi_live_server, entry, operator, connector, give_up_bytes=8 * limit)
    assert len(read.body) <= limit + 4096  # what was relayed, framing included, stayed within the bound
    assert hostile.connections[-1].closed.wait(10), "the gateway kept reading the upstream"
    recorded_events.wait_for(1)
    event = assert_cut(read, entry, connector, f"passed STREAM_MAX_BYTES ({limit} bytes)")
    assert limit < event.response_bytes <= limit + 1024 * 1024  # cut at the read that crossed the bound
    # The 2 MB of text was counted in pieces while it arrived; the estimate is the count of everything relayed.
    assert event.usage_source == "estimated"
    if entry == "openai":  # whole events only: exactly the text counted
        assert event.completion_tokens == tokens.count_tokens(read.content(), "gpt-4o") > 100_000
    else:
        assert event.completion_tokens > 100_000


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_line_without_end_is_cut_at_the_event_bound_and_other_calls_go_on_meanwhile(
    asgi_live_server, recorded_events, operator, make_connector, hostile, fake_openai, settings, entry
):
    settings.STREAM_MAX_EVENT_BYTES = limit = 512 * 1024
    hostile.gate_reached.clear()
    connector = make_connector(api_url=hostile.url(f"noline-gated-{limit // 2}"))
    other = make_connector(name="Other", api_url=fake_openai.url("ok"))
    reads: list[StreamRead] = []
    reader = threading.Thread(
        target=lambda: reads.append(read_stream(asgi_live_server, entry, operator, connector, give_up_seconds=60)))
    reader.start()
    try:
        # The gateway holds half a megabyte of an unfinished line; another call is answered meanwhile.
        assert hostile.gate_reached.wait(20)
        answer = httpx.post(f"{asgi_live_server.url}/api/actions/connector/{other.pk}/_execute",
                            json={"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": HELLO})}}},
                            headers={"Authorization": basic_auth(operator), "kbn-xsrf": "true"}, timeout=30).json()
        assert answer["status"] == "ok"
        recorded_events.wait_for(1)
        assert reader.is_alive() and not ExecutionEvent.objects.filter(connector_id=connector.pk).exists()
    finally:
        hostile.release()
        reader.join(90)
    assert hostile.connections[-1].closed.wait(10)
    recorded_events.wait_for(2)
    read = reads[0]
    event = assert_cut(read, entry, connector, f"passed STREAM_MAX_EVENT_BYTES ({limit} bytes)")
    assert event.response_bytes <= limit + 1024 * 1024
    if entry == "openai":
        assert b"xxxx" not in read.body  # the unfinished line is dropped, not glued to the error event


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_slowloris_trickle_is_cut_at_stream_max_seconds(asgi_live_server, recorded_events, operator,
                                                         make_connector, hostile, settings, entry):
    settings.STREAM_MAX_SECONDS = 1  # the trickle never stays quiet for responseTimeout (60 s)
    connector = make_connector(api_url=hostile.url("trickle-50"))
    read = read_stream(asgi_live_server, entry, operator, connector, give_up_seconds=30)
    assert hostile.connections[-1].closed.wait(10)
    recorded_events.wait_for(1)
    event = assert_cut(read, entry, connector, "ran longer than STREAM_MAX_SECONDS (1 s)")
    assert read.content().startswith("drip drip")
    assert event.usage_source == "estimated" and event.completion_tokens >= 2


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_stream_gone_silent_is_cut_at_the_idle_bound(asgi_live_server, recorded_events, operator,
                                                      make_connector, hostile, actions_config, entry):
    actions_config({"responseTimeout": "300ms"})
    connector = make_connector(api_url=hostile.url("idle"))
    read = read_stream(asgi_live_server, entry, operator, connector, give_up_seconds=30)
    assert hostile.connections[-1].closed.wait(10)
    recorded_events.wait_for(1)
    event = assert_cut(read, entry, connector, "stalled: no data for 0.3 s (responseTimeout/timeout)")
    assert read.content() == "Hello" and event.completion_tokens == 1


# --- the pieces ------------------------------------------------------------------------------------------


def test_the_line_reader_holds_an_event_up_to_its_bound_and_no_further():
    reader = SSELineReader(max_event_bytes=100)
    assert reader.lines(b"data: " + b"a" * 50) == []
    assert reader.lines(b"a" * 43 + b"\n") == [b"data: " + b"a" * 93]  # 94 bytes with its newline
    assert reader.lines(b"\n" + b"b" * 99) == [b""]  # a blank line ends the event: a new one starts
    with pytest.raises(EventTooLarge):
        reader.lines(b"bb")
    # An event of many short lines is bounded too (its data lines are held until the blank line).
    reader = SSELineReader(max_event_bytes=100)
    reader.lines(b"data: x\n" * 12)
    with pytest.raises(EventTooLarge):
        reader.lines(b"data: x\n")
    # CRLF framing: "\r" alone is a blank line.
    reader = SSELineReader(max_event_bytes=10)
    assert reader.lines(b"data: 1\r\n\r\ndata: 2\r\n\r\n") == [b"data: 1\r", b"\r", b"data: 2\r", b"\r"]


def test_a_line_over_the_bound_in_one_chunk_is_refused_before_it_is_read():
    reader = SSELineReader(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        reader.lines(b"data: " + b"a" * 200 + b"\n\n")


PARAGRAPH = ("The quick brown fox, it said, jumps over 1234567 lazy dogs!\n\nThen:  it rests;  code `x = f(y)`\n"
             "and 汉字没有空格的文本 — then more words.  ")


def test_text_counted_in_pieces_counts_as_the_whole():
    encoding = tokens._encoding("o200k_base")
    text = PARAGRAPH * 2500  # about 300k characters: several pieces
    assert len(text) > 4 * tokens.PIECE_CHARS
    assert tokens.count_tokens(text, "gpt-4o") == len(encoding.encode_ordinary(text))


def test_a_text_of_a_million_characters_is_counted():
    # bpe-openai alone refuses a text of a million characters or more.
    text = PARAGRAPH * 10_000
    assert len(text) > 1_000_000
    assert tokens.count_tokens(text, "gpt-4o") == 4 * tokens.count_tokens(PARAGRAPH * 2500, "gpt-4o")


def test_a_streamed_completion_counted_while_it_arrives_counts_as_the_whole():
    completion = tokens.StreamedCompletion()
    text = PARAGRAPH * 3000
    held = 0
    for start in range(0, len(text), 777):
        completion.add(text[start:start + 777])
        while completion.piece_ready:
            piece = completion.ready_piece()
            completion.counted(piece, tokens.count_tokens(piece, "gpt-4o"))
        held = max(held, len(completion.pending_text))
    assert held < tokens.PIECE_CHARS + 777  # never more than a piece and what just arrived
    assert completion.tokens("gpt-4o") == tokens.count_tokens(text, "gpt-4o")
    assert tokens.estimate_usage({"messages": HELLO}, completion, "gpt-4o")["completion_tokens"] == \
        completion.tokens("gpt-4o")


def test_a_piece_that_could_not_be_counted_fails_the_estimate_rather_than_undercount():
    completion = tokens.StreamedCompletion()
    completion.add("some words")
    completion.give_up()
    completion.add("more words")
    assert completion.pending_text == ""
    with pytest.raises(ValueError):
        completion.tokens("gpt-4o")
