"""A real OTLP/HTTP trace receiver on a loopback port: decodes each ``POST /v1/traces`` body as
``ExportTraceServiceRequest`` (opentelemetry-proto) and keeps the spans, so tests can wait for them.

Also a sink for the latency benchmark (``python -m tests.servers.otlp_receiver --port N``): it answers every export as a
collector does, and prints how many spans it received when it is stopped.
"""

from __future__ import annotations

import argparse
import gzip
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def attribute_value(value):
    """An OTLP AnyValue as a Python value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(attribute_value(item) for item in value.array_value.values)
    return getattr(value, kind) if kind else None


class ReceivedSpan:
    def __init__(self, span, resource: dict):
        self.name = span.name
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex()
        self.kind = span.kind
        self.status_code = span.status.code
        self.attributes = {item.key: attribute_value(item.value) for item in span.attributes}
        self.resource = resource


class OTLPReceiver:
    def __init__(self, port: int = 0):
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="otlp-receiver")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _receive(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {item.key: attribute_value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans += [ReceivedSpan(span, resource) for span in scope_spans.spans]
        with self._condition:
            self.requests += 1
            self.spans += spans
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 20) -> list[ReceivedSpan]:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.spans) >= count, timeout):
                raise AssertionError(f"{len(self.spans)} spans received within {timeout} s, expected {count}")
            return list(self.spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    receiver = OTLPReceiver(args.port).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    receiver.stop()
    print(f"OTLP receiver: {len(receiver.spans)} spans in {receiver.requests} exports", flush=True)


if __name__ == "__main__":
    main()
