"""A TCP proxy in front of a server (PostgreSQL in the tests), that a test can stop and start again.

Stopped, it closes its listening socket, so that new connections are refused (what a stopped database server
gives), and cuts every connection it carries (what that server's clients see). Started again, it listens on the
same port: stopping wakes the thread blocked in accept(), which would otherwise keep the port listening. The port
is taken below the kernel's ephemeral range, so that while the proxy is stopped no outgoing connection is given it
as its own port (nor connects to itself on it, as a client retrying a refused port in that range can)::

    proxy = TcpProxy("127.0.0.1", 5432).start()
    ...  # connect to 127.0.0.1:proxy.port
    proxy.stop()
    proxy.start()
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = _listener(self.host, self.port) if self.port else self._listen_below_the_ephemeral_range()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            carried, self._sockets = self._sockets, set()
        if listener is not None:
            try:
                # Wakes the thread blocked in accept(): close() alone does not, and until accept() returns the
                # socket stays listening on the port, which start() could then not take again.
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for sock in carried:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # its pump thread then reads the end and closes it
            except OSError:
                pass

    def _listen_below_the_ephemeral_range(self) -> socket.socket:
        lowest_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0]) if EPHEMERAL_RANGE.exists() else 32768
        candidates = random.sample(range(max(1024, lowest_ephemeral - 12000), lowest_ephemeral), 200)
        for port in candidates:
            try:
                return _listener(self.host, port)
            except OSError:
                continue  # taken by another listener
        raise OSError(f"no free port below {lowest_ephemeral} after {len(candidates)} tries")

    @property
    def running(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._sockets.discard(source)
            source.close()  # each socket is the source of one pump: closed once, by the thread that reads it


def _listener(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener
