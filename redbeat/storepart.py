"""What every part of the store shares: the client, the key names, and the
lock fence's keys and arguments.

``store.ScheduleStore`` is made of parts named after their callers (the
tick's reads, claims and statuses, entry writes, operators' queries); each
part is a ``StorePart`` and can be used alone.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.cluster import RedisCluster

from .config import RedBeatConfig
from .lock import BeatLock
from .lua import ArgLayout
from .stages import text

__all__ = ["StorePart", "WrongTypeError", "NoEntryKeyError", "fenced_layout"]


class WrongTypeError(RuntimeError):
    """One of RedBeat's own keys holds another type of value than the data format says."""

    def __init__(self, key: str, found: str, expected: str) -> None:
        self.key, self.found, self.expected = key, found, expected
        super().__init__(f"{key} is a {found}, not a {expected} as RedBeat expects: nothing can be read from it "
                         f"until it is fixed (RENAME it aside, or DEL it if nothing in it matters)")


class NoEntryKeyError(KeyError):
    """A key asked to be written or deleted as an entry's is none (one of RedBeat's own):
    a KeyError, as a missing entry's, whose message says why."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(key)
        self.key, self.why = key, why

    def __str__(self) -> str:
        return self.why


def fenced_layout(*names: str) -> ArgLayout:
    """The fixed ARGV of a fenced script (Lua locals ``ARG_...``): FENCE_LUA reads
    the token at ARGV[1] and the lock's time-to-live at ARGV[2], then ``names``."""
    return ArgLayout("ARG_", ("token", "ttl_ms", *names), first=1)


class StorePart:
    """One app's schedule in Redis, as one group of callers reads and writes it."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        self.client = client
        self.conf = conf
        self.keys = conf.keys
        self.inflight_key = conf.keys.inflight
        self.heartbeat_key = conf.keys.heartbeat

    def key_for(self, name: str) -> str:
        return self.keys.entry(name)

    def is_entry_key(self, key: str | bytes) -> bool:
        """Whether ``key`` can be an entry's (see ``KeyNames.is_entry_key``)."""
        return self.keys.is_entry_key(text(key))

    def refuse_no_entry_key(self, key: str | bytes) -> None:
        """Raise NoEntryKeyError if ``key`` is no entry key: RedBeat's own keys are never an entry's."""
        if not self.is_entry_key(key):
            raise NoEntryKeyError(text(key), self.keys.no_entry_name(text(key)))

    def history_key(self, key: str) -> str:
        return self.keys.history(key)

    def _fence(self, lock: BeatLock | None) -> tuple[list[str], dict[str, Any]]:
        """KEYS (lock, schedule, inflight) and the fence's ARGV values of a fenced script."""
        # The lock key is always declared (Redis Cluster routes by declared
        # keys); an empty token tells the fence there is no lock to check.
        lock_key = lock.key if lock is not None else self.conf.default_lock_key
        keys = [lock_key, self.conf.schedule_key, self.inflight_key]
        if lock is None:
            return keys, {"token": "", "ttl_ms": 0}
        return keys, {"token": lock.token, "ttl_ms": lock.ttl_ms}
