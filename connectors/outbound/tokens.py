"""Offline token estimation, for executions whose provider reported no usage (an ``Other`` server, a stream cut
short, a caller who left mid-stream).

The tokenizer is ``bpe-openai``: its wheel embeds the cl100k_base and o200k_base vocabularies, so counting never
touches the network (tiktoken downloads its vocabularies on first use). The package and its vocabularies are
loaded on the first estimate only, since most executions get their counts from the provider; callers in async
code run the estimate in a thread because that first load takes most of a second.

Prompt tokens follow OpenAI's published recipe for chat messages (3 tokens of framing per message, 1 per name,
3 to prime the reply); tool definitions are counted as their JSON. The result is an estimate and is recorded as
one (``usage_source = estimated``).

Text is counted in pieces of at most ``PIECE_CHARS`` characters, cut where the tokenizer would cut anyway (see
``_cut_point``), so the sum of the pieces is the count of the whole: bpe-openai refuses a text of a million
characters or more, and a stream's completion is counted while it arrives (``StreamedCompletion``) instead of
being kept whole until the end (README, "Limits on streams").
"""

from __future__ import annotations

import json
import threading
import warnings
from typing import Any

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# Model name prefixes whose tokenizer is o200k_base; everything else (gpt-4, gpt-3.5, unknown models of
# OpenAI-compatible servers) is counted with cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")

_encodings: dict[str, Any] = {}
_load_lock = threading.Lock()


def encoding_name_for(model: str) -> str:
    name = (model or "").lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" as some gateways spell it
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def _encoding(name: str):
    encoding = _encodings.get(name)
    if encoding is None:
        with _load_lock:
            encoding = _encodings.get(name)
            if encoding is None:
                with warnings.catch_warnings():
                    # bpe-openai 0.1.4 reads its embedded vocabularies (at import) with the deprecated
                    # importlib.resources.open_binary.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    import bpe_openai

                    encoding = _encodings[name] = bpe_openai.get_encoding(name)
    return encoding


def count_tokens(text: str, model: str = "") -> int:
    """Tokens in ``text`` for ``model``'s tokenizer; special-token text is counted as ordinary text."""
    if not text:
        return 0
    encoding = _encoding(encoding_name_for(model))
    return sum(len(encoding.encode_ordinary(piece)) for piece in _pieces(text))


# Text is counted this much at a time: a piece takes about 2 ms to count here, so a count in a worker thread
# never holds the interpreter for long, and it stays far below bpe-openai's limit of a million characters.
PIECE_CHARS = 64 * 1024


def _cut_point(text: str) -> int:
    """Where ``text`` may be cut so that its two parts count as many tokens as the whole.

    The tokenizers' pre-tokenizing (cl100k_base and o200k_base alike) attaches a space to the word that follows it
    and never a following space to what precedes it, so the text may be cut before a space that follows a
    non-space. The cut is looked for in the second half; a text without one there (code or a language written
    without spaces) is cut at its end, which may split one token in two: an estimate off by one token.
    """
    index = text.rfind(" ")
    while index > 0 and text[index - 1].isspace():
        index = text.rfind(" ", 0, index)
    return index if index >= len(text) // 2 else len(text)


def _pieces(text: str):
    """``text`` in consecutive pieces of at most PIECE_CHARS characters, cut at ``_cut_point``."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        window = text[start:start + PIECE_CHARS]
        cut = _cut_point(window)
        yield window[:cut]
        start += cut
    yield text[start:]


class StreamedCompletion:
    """The text a stream generates, counted while it arrives so that it is never held whole.

    ``add()`` takes each piece of generated text. Once PIECE_CHARS characters are pending, ``ready_piece()``
    offers a piece to count (the caller counts it in a worker thread, with ``count_tokens``) and
    ``counted(piece, tokens)`` lets it go; at most about PIECE_CHARS characters, plus one event's text, are held.
    A piece handed out but not yet ``counted`` stays pending, so a count interrupted by the caller's departure is
    still included in ``tokens()``.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._pending_chars = 0
        self.counted_tokens = 0
        self.uncountable = False  # a piece could not be counted: there is no estimate to make

    def add(self, text: str) -> None:
        if text and not self.uncountable:
            self._pending.append(text)
            self._pending_chars += len(text)

    @property
    def piece_ready(self) -> bool:
        return self._pending_chars >= PIECE_CHARS

    @property
    def pending_text(self) -> str:
        return "".join(self._pending)

    def ready_piece(self) -> str:
        pending = self.pending_text
        self._pending = [pending]
        window = pending[:PIECE_CHARS]
        return window[:_cut_point(window)]

    def counted(self, piece: str, tokens: int) -> None:
        """``piece`` (the last ``ready_piece()``, still at the head of the pending text) counts ``tokens``."""
        pending = self.pending_text
        assert pending.startswith(piece), "counted() takes the piece ready_piece() returned"
        self._pending = [pending[len(piece):]]
        self._pending_chars -= len(piece)
        self.counted_tokens += tokens

    def forget_pending(self) -> None:
        """Let the pending text go uncounted: the provider reported usage, so no estimate will be made."""
        self._pending, self._pending_chars = [], 0

    def give_up(self) -> None:
        """A piece could not be counted: keep nothing more, and make ``tokens()`` fail rather than undercount."""
        self.forget_pending()
        self.uncountable = True

    def tokens(self, model: str = "") -> int:
        if self.uncountable:
            raise ValueError("part of the completion could not be counted")
        return self.counted_tokens + count_tokens(self.pending_text, model)


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return ""


def _tool_calls_text(tool_calls: Any) -> str:
    pieces = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            pieces += [str(function.get("name") or ""), str(function.get("arguments") or "")]
    return "".join(pieces)


def estimate_prompt_tokens(body: dict) -> int:
    """Prompt tokens of a chat completion request body (its messages, and its tools or functions)."""
    model = str(body.get("model") or "")
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    total = REPLY_PRIMING_TOKENS if messages else 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE
        total += count_tokens(str(message.get("role") or ""), model)
        total += count_tokens(_content_text(message.get("content")), model)
        total += count_tokens(_tool_calls_text(message.get("tool_calls")), model)
        if isinstance(message.get("name"), str):
            total += TOKENS_PER_NAME + count_tokens(message["name"], model)
    for definitions in ("tools", "functions"):
        if body.get(definitions):
            total += count_tokens(json.dumps(body[definitions], separators=(",", ":"), ensure_ascii=False), model)
    return total


def estimate_usage(body: dict, completion_text: str | StreamedCompletion, model: str = "") -> dict[str, int]:
    """Estimated usage, shaped like ``execution.extract_usage``'s result.

    ``completion_text`` is everything the model produced: content, refusals, tool call names and arguments; for a
    stream, the ``StreamedCompletion`` that counted it as it arrived.
    """
    prompt = estimate_prompt_tokens(body)
    model = model or str(body.get("model") or "")
    if isinstance(completion_text, StreamedCompletion):
        completion = completion_text.tokens(model)
    else:
        completion = count_tokens(completion_text, model)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_text_of(payload: Any) -> str:
    """The generated text of a (non-streamed) chat completion object, for estimating its completion tokens."""
    pieces = []
    choices = payload.get("choices") if isinstance(payload, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            pieces.append(_content_text(message.get("content")))
            refusal = message.get("refusal")
            pieces.append(refusal if isinstance(refusal, str) else "")
            pieces.append(_tool_calls_text(message.get("tool_calls")))
            function_call = message.get("function_call")
            if isinstance(function_call, dict):
                pieces.append(str(function_call.get("name") or "") + str(function_call.get("arguments") or ""))
    return "".join(pieces)
