"""Offline token estimation, for executions whose provider reported no usage (an ``Other`` server, a stream cut
short, a caller who left mid-stream).

The tokenizer is ``bpe-openai``: its wheel embeds the cl100k_base and o200k_base vocabularies, so counting never
touches the network (tiktoken downloads its vocabularies on first use). The package and its vocabularies are
loaded on the first estimate only, since most executions get their counts from the provider; callers in async
code run the estimate in a thread because that first load takes most of a second.

Prompt tokens follow OpenAI's published recipe for chat messages (3 tokens of framing per message, 1 per name,
3 to prime the reply); tool definitions are counted as their JSON. The result is an estimate and is recorded as
one (``usage_source = estimated``).
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
    return len(_encoding(encoding_name_for(model)).encode_ordinary(text))


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


def estimate_usage(body: dict, completion_text: str, model: str = "") -> dict[str, int]:
    """Estimated usage, shaped like ``execution.extract_usage``'s result.

    ``completion_text`` is everything the model produced: content, refusals, tool call names and arguments.
    """
    prompt = estimate_prompt_tokens(body)
    completion = count_tokens(completion_text, model or str(body.get("model") or ""))
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
