"""An OpenAI-shaped HTTP server over real sockets, for tests and benchmarks.

The first path segment picks the behaviour, so one server serves every scenario:
``http://127.0.0.1:<port>/<scenario>/v1/chat/completions``. Scenarios:

- ``ok``: a chat completion whose content echoes the last message, with usage (and cached/reasoning details)
- ``azure``: as ok, but requires an ``api-key`` header and an ``api-version`` query (401/404 otherwise)
- ``sleep-<ms>``: as ok after waiting <ms> milliseconds (without holding any thread)
- ``stall``: never answers
- ``status-<code>``: an OpenAI error body with that status and its standard reason phrase (429 adds retry-after: 7);
  ``status-<code>-<Reason_Words>`` sends its own reason phrase instead (underscores become spaces)
- ``html``: 200 with an HTML page
- ``big-<bytes>``: a JSON body of about that size
- ``nousage``: a completion without a usage object
- ``redirect``: 307 to the URL in the ``to`` query parameter
- ``stream``: SSE chunks, usage in a final chunk with empty choices (include_usage)
- ``stream-always-usage``: SSE ending with a usage-only chunk even when not asked for (some OpenAI-compatible servers)
- ``stream-usage-in-choice``: SSE whose usage rides on the last chunk that still has choices
- ``stream-nousage``: SSE without usage
- ``stream-azure-filter``: SSE whose first chunk carries only prompt_filter_results (Azure)
- ``stream-slow-<ms>``: SSE with <ms> between chunks
- ``stream-cut``: SSE that stops mid-way without usage or [DONE]
- ``stream-gated``: SSE whose first chunk is sent at once and the rest only once ``server.gate`` is set (so a test
  can prove the first chunk reached its caller while the provider was still holding the rest)
- ``gather-<n>``: as ok, once <n> requests of this scenario are in flight at the same time (so a test can prove
  that calls ran side by side without timing them); after 60 s without them, 503
- ``gated``: as ok, once ``server.gate`` is set (so a test decides when the provider answers)
- ``model-surrogate`` / ``model-nul``: as ok, but the reported model holds a lone surrogate / a NUL character
- ``long-<n>``: as ok, from a model that writes <n> completion tokens unless the request's ``max_completion_tokens``
  or ``max_tokens`` stops it sooner (then ``finish_reason`` is ``length``): a provider that honours the cap
- ``usage-<n>``: as ok, but the usage reports <n> tokens in all whatever the request's cap: a provider (or a
  model) that does not honour it
- ``echo-key``: a completion that echoes the key it was sent (raw, JSON-escaped, URL-encoded) in its content
  and in ``x-request-id`` / ``x-ratelimit-*`` headers: a hostile or careless provider
- ``echo-key-error``: a 400 error whose message quotes the key
- ``echo-key-status``: a malformed status line that holds the key
- ``echo-key-stream``: SSE that spells the key out across two separately flushed chunks
- ``cut-body``: as ok, but the connection closes 100 bytes short of the declared Content-Length
- ``gzip``: as ok, compressed: ``Content-Encoding: gzip``, and the Content-Length of the compressed bytes

Every request is kept in ``server.requests`` (method, path, query, headers, body); ``wait_for_requests(n)`` waits
until n have arrived.

``GET .../models`` lists two models (except for ``status-<code>`` and ``stall``, which behave as above).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, quote, urlsplit

REPLY_WORDS = "Hello from the fake OpenAI server, happy to help"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class FakeOpenAI:
    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    record: bool = True

    def __post_init__(self):
        self.gate = threading.Event()
        self.gate_was_opened: bool | None = None
        self._arrived = threading.Condition()
        self._gathering: dict[str, tuple[int, asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, ssl=self.ssl_context, backlog=4096)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-openai")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            async def shutdown():
                self._server.close()
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._loop.stop()

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
            self._thread.join(5)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, scenario: str = "ok", path: str = "/v1/chat/completions", query: str = "") -> str:
        return f"{self.base_url}/{scenario}{path}" + (f"?{query}" if query else "")

    def clear(self) -> None:
        self.requests.clear()
        self.gate.clear()
        self.gate_was_opened = None
        self._gathering.clear()

    def wait_for_requests(self, count: int, timeout: float = 30) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests reached the upstream within {timeout} s, expected {count}")

    # --- HTTP ---------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                parts = urlsplit(target)
                request = RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body)
                if self.record:
                    with self._arrived:
                        self.requests.append(request)
                        self._arrived.notify_all()
                keep_alive = await self._respond(request, writer)
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError, asyncio.CancelledError):
            pass  # the peer went away, or the server is stopping
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass

    @staticmethod
    def _head(status: int, headers: dict[str, str], reason: str = "OK") -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, writer, status: int, body: bytes, content_type: str = "application/json", extra=None) -> bool:
        headers = {"content-type": content_type, "content-length": str(len(body)), **(extra or {})}
        writer.write(self._head(status, headers) + body)
        return True

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        segments = request.path.strip("/").split("/", 1)
        scenario = segments[0]
        rest = "/" + (segments[1] if len(segments) > 1 else "")
        if scenario.startswith("echo-key"):
            return await self._echo_key(scenario, request, writer)
        if rest.endswith("/models") and request.method == "GET" and not scenario.startswith(("status-", "stall")):
            models = [{"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
                      {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]
            return self._send(writer, 200, json.dumps({"object": "list", "data": models}).encode())
        if scenario == "stall":
            await asyncio.sleep(3600)
            return False
        if scenario.startswith("sleep-"):
            await asyncio.sleep(int(scenario.split("-")[1]) / 1000)
            scenario = "ok"
        if scenario == "gated":
            self.gate_was_opened = await asyncio.to_thread(self.gate.wait, 60)
            scenario = "ok"
        if scenario.startswith("gather-"):
            if not await self._gather(scenario, int(scenario.split("-")[1])):
                return self._send(writer, 503, json.dumps({"error": {"message": "not enough requests at once"}}).encode())
            scenario = "ok"
        if scenario.startswith("status-"):
            _, code, *custom = scenario.split("-", 2)
            status = int(code)
            reason = custom[0].replace("_", " ") if custom else HTTPStatus(status).phrase
            extra = {"retry-after": "7"} if status == 429 else {}
            body = {"error": {"message": f"Simulated {status} from the fake server", "type": "fake_error", "param": None, "code": str(status)}}
            writer.write(self._head(status, {"content-type": "application/json", "content-length": str(len(json.dumps(body))), **extra}, reason))
            writer.write(json.dumps(body).encode())
            return True
        if scenario == "tool-call":  # an answer without text: the model calls a tool
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}
            body = {"id": "chatcmpl-tool", "object": "chat.completion", "model": "gpt-4o",
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}
            return self._send(writer, 200, json.dumps(body).encode())
        if scenario == "no-choices":  # neither text nor usage
            return self._send(writer, 200, json.dumps({"id": "chatcmpl-empty", "object": "chat.completion",
                                                       "choices": []}).encode())
        if scenario == "html":
            return self._send(writer, 200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
        if scenario.startswith("big-"):
            size = int(scenario.split("-")[1])
            return self._send(writer, 200, json.dumps({"padding": "x" * size}).encode())
        if scenario == "redirect":
            target = request.query.get("to", [""])[0]
            writer.write(self._head(307, {"location": target, "content-length": "0"}, "Temporary Redirect"))
            return True
        if scenario == "azure":
            if not request.headers.get("api-key"):
                return self._send(writer, 401, json.dumps({"error": {"code": "401", "message": "Access denied due to missing api-key"}}).encode())
            if "api-version" not in request.query:
                return self._send(writer, 404, json.dumps({"error": {"code": "404", "message": "Resource not found"}}).encode())
        try:
            payload = json.loads(request.body or b"{}")
        except ValueError:
            return self._send(writer, 400, json.dumps({"error": {"message": "We could not parse the JSON body", "type": "invalid_request_error", "param": None, "code": None}}).encode())
        if scenario.startswith("stream"):
            await self._stream(scenario, payload, writer)
            return True
        extra = {"set-cookie": "upstream-session=from-the-provider; Path=/"} if scenario == "cookie" else None
        body = completion(payload, usage=scenario != "nousage", scenario=scenario)
        if scenario == "cut-body":
            raw = json.dumps(body).encode()
            writer.write(self._head(200, {"content-type": "application/json", "content-length": str(len(raw) + 100)}))
            writer.write(raw)
            return False  # closes the connection with the body incomplete
        if scenario == "gzip":
            return self._send(writer, 200, gzip.compress(json.dumps(body).encode()), extra={"content-encoding": "gzip"})
        if scenario.startswith("model-"):
            body["model"] = {"model-surrogate": "gpt-\ud800", "model-nul": "gpt-\x00"}[scenario]
        return self._send(writer, 200, json.dumps(body).encode(), extra=extra)

    async def _gather(self, scenario: str, count: int) -> bool:
        arrived, everyone = self._gathering.get(scenario, (0, asyncio.Event()))
        self._gathering[scenario] = (arrived + 1, everyone)
        if arrived + 1 >= count:
            everyone.set()
        try:
            async with asyncio.timeout(60):
                await everyone.wait()
        except TimeoutError:
            return False
        return True

    async def _echo_key(self, scenario: str, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        key = request.headers.get("api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        echoed = f"your key {key} or {quote(key, safe='')} was used"  # json.dumps escapes it once more
        if scenario == "echo-key-status":
            writer.write(f"HTTP/1.1 2x0 {key}\r\ncontent-length: 0\r\n\r\n".encode("latin-1"))
            await writer.drain()
            return False
        if scenario == "echo-key-error":
            body = json.dumps({"error": {"message": echoed, "type": "invalid_request_error", "param": None,
                                         "code": "invalid_api_key"}}).encode()
            return self._send(writer, 400, body, extra={"x-request-id": key})
        headers = {"x-request-id": f"req-{key}", "x-ratelimit-remaining-requests": key,
                   f"x-ratelimit-{quote(key, safe='')}": "1"}
        if scenario == "echo-key-stream":
            writer.write(self._head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked", **headers}))
            middle = len(key) // 2
            event = json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "gpt-4o",
                                "choices": [{"index": 0, "delta": {"content": key}, "finish_reason": "stop"}]})
            at = event.index(json.dumps(key)[1:-1]) + middle
            for piece in (f"data: {event[:at]}", f"{event[at:]}\n\n", "data: [DONE]\n\n"):
                raw = piece.encode()
                writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)  # separate reads are likely, not needed: the masking holds either way
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        payload = json.loads(request.body or b"{}")
        body = completion({**payload, "messages": [{"role": "user", "content": echoed}]})
        return self._send(writer, 200, json.dumps(body).encode(), extra=headers)

    async def _stream(self, scenario: str, payload: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(self._head(200, {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked"}))
        delay = int(scenario.rsplit("-", 1)[1]) / 1000 if scenario.startswith("stream-slow-") else 0

        def chunk(data: str) -> None:
            raw = f"data: {data}\n\n".encode()
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")

        model = payload.get("model") or "gpt-4o"
        words = REPLY_WORDS.split(" ")
        if scenario == "stream-azure-filter":
            chunk(json.dumps({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}))
        for index, word in enumerate(words):
            if scenario == "stream-cut" and index == 3:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            delta = {"role": "assistant", "content": word} if index == 0 else {"content": " " + word}
            body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if scenario == "stream-usage-in-choice" and index == len(words) - 1:
                body["choices"][0]["finish_reason"] = "stop"
                body["usage"] = usage_for(payload)
            chunk(json.dumps(body))
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)
            if scenario == "stream-gated" and index == 0:
                self.gate_was_opened = await asyncio.to_thread(self.gate.wait, 30)
        wants_usage = (payload.get("stream_options") or {}).get("include_usage") or scenario == "stream-always-usage"
        if scenario in ("stream", "stream-azure-filter", "stream-always-usage") or (scenario.startswith("stream-slow-") and wants_usage):
            if wants_usage:
                chunk(json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model, "choices": [], "usage": usage_for(payload)}))
        chunk("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def usage_for(payload: dict) -> dict:
    prompt = sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []) if isinstance(m, dict)) + 7
    completion_tokens = len(REPLY_WORDS.split(" "))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }


def completion(payload: dict, usage: bool = True, scenario: str = "ok") -> dict:
    messages = payload.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("model") or "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"  You said: {last.get('content', '')}  "}, "finish_reason": "stop"}],
    }
    if usage:
        body["usage"] = usage_for(payload)
        if scenario.startswith(("long-", "usage-")):
            reported = body["usage"] = _long_usage(scenario, payload)
            if reported.pop("stopped_by_cap"):
                body["choices"][0]["finish_reason"] = "length"
    return body


def _long_usage(scenario: str, payload: dict) -> dict:
    """The usage of ``long-<n>`` (n completion tokens, or the request's cap if smaller) and ``usage-<n>`` (n tokens
    in all, whatever the cap)."""
    prompt = usage_for(payload)["prompt_tokens"]
    n = int(scenario.split("-")[1])
    if scenario.startswith("usage-"):
        completion_tokens, stopped = max(0, n - prompt), False
    else:
        caps = [v for v in (payload.get("max_completion_tokens"), payload.get("max_tokens")) if isinstance(v, int)]
        completion_tokens = min([n, *caps])
        stopped = completion_tokens < n
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens, "stopped_by_cap": stopped}


if __name__ == "__main__":
    import sys

    server = FakeOpenAI(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0, record=False).start()
    print(f"fake OpenAI server on {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
