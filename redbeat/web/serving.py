"""Serving the dashboard with uvicorn, for ``redbeat web``: on a socket already listening,
stopped by the command's own signal handlers (installed before the socket listens)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

__all__ = ["DashboardServer", "listening"]


class DashboardServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``redbeat web`` sets ``should_exit``."""

    def __init__(self, app: Starlette) -> None:
        super().__init__(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                        server_header=False))

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        self.should_exit = True


def listening(host: str, port: int) -> socket.socket:
    """A socket listening on ``host`` and ``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections whose socket says
    # so, and without it a kept-alive connection waits ~40 ms (Nagle's algorithm meeting the
    # browser's delayed ACK) between a response's headers and its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
