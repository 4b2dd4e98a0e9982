"""The lock that keeps one beat active among many.

The lock is a Redis string holding the token of the beat that owns it, with
an expiry. It shares its key and shape with celery-redbeat 2.x (a redis-py
lock), so old and new beats exclude each other during a rolling upgrade.

Holding the lock is not checked here before each dispatch: every script that
changes the schedule on the active beat's behalf starts with ``FENCE_LUA``,
so a beat whose lock expired (a long pause, a partition) changes nothing.
"""

from __future__ import annotations

import os
import socket
import uuid

from redis import Redis

__all__ = ["BeatLock", "FENCE_LUA", "LOCK_LOST", "make_token"]

LOCK_LOST = -1

# The fence, placed at the top of scripts that take KEYS[1] = lock key,
# ARGV[1] = token ('' when the lock is disabled) and ARGV[2] = lock
# time-to-live in milliseconds. It renews the lock as it checks it, so a beat
# that keeps ticking keeps its lock without a round trip of its own; the
# renewal sets the expiry, never adds to it, so the lock can never outlive a
# dead holder by more than one time-to-live.
FENCE_LUA = """
if ARGV[1] ~= '' then
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then
        return -1
    end
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""


def make_token() -> str:
    """A beat's token: which host and process hold the lock, readable in ``redis-cli GET``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


class BeatLock:
    """One beat's claim on the lock: its token, and taking and giving back the lock."""

    # Give the lock back only if it is still ours: after an expiry another beat
    # may hold it, and deleting its lock would let a third one start.
    RELEASE_LUA = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then
        return redis.call('DEL', KEYS[1])
    end
    return 0
    """

    def __init__(self, client: Redis, key: str, timeout: float, token: str | None = None) -> None:
        self.client = client
        self.key = key
        self.timeout = timeout
        self.token = token or make_token()
        self.held = False
        self._release = client.register_script(self.RELEASE_LUA)

    @property
    def ttl_ms(self) -> int:
        return max(int(self.timeout * 1000), 1)

    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours); never waits."""
        taken = self.client.set(self.key, self.token, nx=True, px=self.ttl_ms)
        if not taken:
            current = self.client.get(self.key)
            taken = current is not None and current.decode("utf-8", "replace") == self.token
        self.held = bool(taken)
        return self.held

    def release(self) -> bool:
        """Give the lock back so a standby takes over at once; True if it was ours."""
        self.held = False
        return bool(self._release(keys=[self.key], args=[self.token]))
