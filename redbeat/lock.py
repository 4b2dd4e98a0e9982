"""The lock that keeps one beat active among many.

The lock is a Redis string holding the token of the beat that owns it, with
an expiry. It shares its key and shape with celery-redbeat 2.x (a redis-py
lock), so old and new beats exclude each other during a rolling upgrade.

Holding the lock is not checked here before each dispatch: every script that
changes the schedule on the active beat's behalf starts with ``FENCE_LUA``,
so a beat whose lock expired (a long pause, a partition) changes nothing.
The broker cannot be fenced that way: a beat checks the lock with ``renew``
just before each batch it sends there instead (docs/reliability.rst says
what that leaves).
"""

from __future__ import annotations

import os
import socket
import uuid

from redis import Redis
from redis.cluster import RedisCluster

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
    if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then  -- pcall: a lock key of another type is not ours either
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
    if redis.pcall('GET', KEYS[1]) == ARGV[1] then
        return redis.call('DEL', KEYS[1])
    end
    return 0
    """

    # Takes the lock if it is free or already ours; returns {taken, what was
    # replaced}. A lock key of another type than a string (someone wrote a
    # hash there), or a string without an expiry, would keep every beat out
    # for ever: no beat (nor celery-redbeat 2.x) writes a lock without one,
    # so neither is a live beat's lock. It is replaced, and the caller says so.
    # KEYS: lock   ARGV: token, ttl_ms
    ACQUIRE_LUA = """
    local kind = redis.call('TYPE', KEYS[1])['ok']
    local replaced = ''
    if kind == 'string' and redis.call('PTTL', KEYS[1]) == -1 and redis.call('GET', KEYS[1]) ~= ARGV[1] then
        kind = 'string without an expiry'
    end
    if kind == 'hash' and redis.call('HEXISTS', KEYS[1], 'definition') == 1 then
        return {0, 'entry'}  -- a schedule entry's hash: never deleted; the caller says so
    end
    if kind ~= 'string' and kind ~= 'none' then
        redis.call('DEL', KEYS[1])
        replaced = kind
    end
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
        return {1, replaced}
    end
    return {redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0, replaced}
    """

    def __init__(self, client: Redis | RedisCluster, key: str, timeout: float, token: str | None = None) -> None:
        self.client = client
        self.key = key
        self.timeout = timeout
        self.token = token or make_token()
        self.held = False
        self._release = client.register_script(self.RELEASE_LUA)
        self._acquire = client.register_script(self.ACQUIRE_LUA)
        self._renew = client.register_script(self.RENEW_LUA)
        self.replaced: str | None = None  # the type of what the last acquire found in place of a lock

    @property
    def ttl_ms(self) -> int:
        return max(int(self.timeout * 1000), 1)

    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours); never waits.

        ``replaced`` then names the type of a value that was at the lock's key
        instead of a lock (and is gone), or is None.
        """
        taken, replaced = self._acquire(keys=[self.key], args=[self.token, self.ttl_ms])
        self.replaced = replaced.decode() if replaced else None
        self.held = bool(taken)
        return self.held

    # Renews the lock if it is still ours: FENCE_LUA alone. Returns 1, or
    # LOCK_LOST. A beat runs it before each batch it sends to the broker, so
    # that one which lost the lock while it built the batch sends nothing.
    # KEYS: lock   ARGV: token, ttl_ms
    RENEW_LUA = FENCE_LUA + """
    return 1
    """

    def renew(self) -> bool:
        """Check that the lock is still ours and renew it, in one round trip; False if it was lost."""
        self.held = self._renew(keys=[self.key], args=[self.token, self.ttl_ms]) != LOCK_LOST
        return self.held

    def release(self) -> bool:
        """Give the lock back so a standby takes over at once; True if it was ours."""
        self.held = False
        return bool(self._release(keys=[self.key], args=[self.token]))
