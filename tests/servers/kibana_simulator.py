"""A stand-in for Kibana's OpenAI simulator (its API integration tests' upstream), on a real loopback socket.

Like Kibana's ``openai_simulation.ts``: success mode answers **HTTP 202** with ``genAiSuccessResponse`` pretty-printed
with 4 spaces; error mode answers HTTP 422 with an OpenAI error body; the parsed request body is kept in
``request_data``. (202 is the simulator's quirk; the contract replayed is "a 2xx answer with this body".)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GEN_AI_SUCCESS_RESPONSE = {
    "id": "chatcmpl-7Gruzw7iTrb9X5mmQ533cSOGZU5Kh",
    "object": "chat.completion",
    "created": 1684254865,
    "model": "gpt-3.5-turbo-0301",
    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    "choices": [
        {
            "message": {"role": "assistant", "content": "Hello there! How may I assist you today?"},
            "finish_reason": "stop",
            "index": 0,
        }
    ],
}
GEN_AI_FAILED_RESPONSE = {
    "error": {
        "message": "The model `bad model` does not exist",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}


class OpenAISimulator:
    def __init__(self, *, return_error: bool = False):
        self.return_error = return_error
        self.request_data: object = None
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                simulator.request_bytes = raw
                simulator.request_data = json.loads(raw)
                if simulator.return_error:
                    status, body, content_type = 422, GEN_AI_FAILED_RESPONSE, "application/json;charset=UTF-8"
                else:
                    status, body, content_type = 202, GEN_AI_SUCCESS_RESPONSE, "application/json"
                payload = json.dumps(body, indent=4).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="kibana-openai-simulator")

    def start(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
