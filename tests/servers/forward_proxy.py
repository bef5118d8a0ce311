"""A real forward proxy for tests: proxy.py (PyPI) in a subprocess, with a plugin that records what it receives.

proxy.py runs its acceptors in separate processes, so the plugin cannot append to a list in the test process;
it appends one JSON line per request to the file named by ``$PROXY_LOG`` instead. A line is written before the
proxy connects upstream, so once a request through the proxy has completed its line is already in the file.

Recorded: ``CONNECT`` tunnels (https) with the CONNECT request's headers, and every plain-http request forwarded
with an absolute URI, with its headers. Run as ``python -m tests.servers.forward_proxy``; it prints its port when ready.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.http.proxy import HttpProxyBasePlugin

ROOT = Path(__file__).resolve().parents[2]


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value or "")


class RecordingPlugin(HttpProxyBasePlugin):
    """Writes each CONNECT and each forwarded plain-http request, with its headers, to ``$PROXY_LOG``."""

    def _record(self, request) -> None:
        headers = {_text(name).lower(): _text(value[1]) for name, value in (request.headers or {}).items()}
        line = {
            "method": _text(request.method),
            "host": _text(request.host),
            "port": request.port,
            "path": _text(request.path),
            "headers": headers,
        }
        with open(os.environ["PROXY_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")

    def before_upstream_connection(self, request):
        if request.is_https_tunnel:
            self._record(request)
        return request

    def handle_client_request(self, request):
        # Called for every plain-http request, including each one on a kept-alive connection.
        if not request.is_https_tunnel:
            self._record(request)
        return request


@dataclass
class ForwardProxy:
    """A proxy.py process on a free loopback port; ``seen()`` lists what reached it."""

    log_path: Path
    scheme: str = "http"  # "https" when started with --cert-file/--key-file
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, *extra_args: str) -> ForwardProxy:
        self.log_path.write_text("")
        env = {**os.environ, "PROXY_LOG": str(self.log_path), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.forward_proxy", *extra_args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its acceptor processes share our new group, so stop() can end them all
        )
        ready = self.process.stdout.readline()  # blocks until the listener is bound and the acceptors run
        if not ready.strip().isdigit():
            self.stop()
            raise RuntimeError(f"proxy.py did not start: {ready!r}")
        self.port = int(ready)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def clear(self) -> None:
        self.log_path.write_text("")

    def seen(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


def main(argv: list[str]) -> None:
    from proxy import Proxy

    args = [
        "--hostname", "127.0.0.1", "--port", "0", "--num-acceptors", "1", "--num-workers", "1",
        "--plugins", "tests.servers.forward_proxy.RecordingPlugin", *argv,
    ]
    with Proxy(args) as running:
        print(running.flags.port, flush=True)
        try:
            while True:
                time.sleep(3600)  # the work happens in proxy.py's processes; SIGINT ends this
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
