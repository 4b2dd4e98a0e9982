"""A TCP proxy on loopback that makes every round trip to a server slow.

Whatever a client sends reaches the server ``delay`` seconds later (in order,
without limiting throughput); replies come back at once. A request and its
reply so cost ``delay`` more than they would, as on a distant broker.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

from conftest import free_port


class LatencyProxy:
    """Listens on 127.0.0.1 and forwards each connection to ``target_port``, delayed."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            pending: queue.Queue = queue.Queue()
            threading.Thread(target=self._read_delayed, args=(client, pending), daemon=True).start()
            threading.Thread(target=self._write_delayed, args=(pending, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _read_delayed(self, source: socket.socket, pending: queue.Queue) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            pending.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write_delayed(self, pending: queue.Queue, target: socket.socket) -> None:
        while True:
            due, data = pending.get()
            time.sleep(max(due - time.monotonic(), 0.0))
            if not _forward(data, target):
                return

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not _forward(data, target):
                return


def _forward(data: bytes, target: socket.socket) -> bool:
    """Send ``data`` on (no data: the other side closed, so close this one for
    writing); False once the connection is done with."""
    try:
        if not data:
            target.shutdown(socket.SHUT_WR)
            return False
        target.sendall(data)
    except OSError:
        return False
    return True
