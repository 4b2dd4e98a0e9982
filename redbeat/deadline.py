"""A deadline for a probe's whole conversation with Redis, however many round trips it takes.

Each call of a command's client waits at most ``--timeout`` to connect and
for its answer; a probe (``status``, ``liveness``) makes several, and
resolving a host name is bounded by neither. A probe must answer within its
timeout (a Kubernetes exec probe is killed after its own, 1 s by default),
so the whole of it is bounded too: on expiry it fails as Redis out of reach
(``cli.base`` says so in one line, exit 4).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["overall_deadline", "DeadlinePassed"]


class DeadlinePassed(BaseException):  # noqa: N818 - not an error of the code: the probe's time is up
    """The probe's time is up. A BaseException, so that no ``except Exception`` on the way
    (redis-py's Cluster client tries the next node on any error) can swallow it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g}s")
        self.seconds = seconds


@contextmanager
def overall_deadline(seconds: float) -> Iterator[None]:
    """Raise ``DeadlinePassed`` in the block once ``seconds`` have passed.

    Through SIGALRM, so only in the main thread (elsewhere, as under a test
    runner's threads, the per-call timeouts alone bound it)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise DeadlinePassed(seconds)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
