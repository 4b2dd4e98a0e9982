"""Entries' ``status`` field, as the tick counts runs and misses into it after publishing.

The claim writes an entry's status too (``claims``): a status written here
goes in only if it is still the one read, so that neither undoes the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from redis.cluster import RedisCluster

from .config import RedBeatConfig
from .lua import ArgLayout
from .stages import text
from .storepart import StorePart

__all__ = ["Statuses"]

# One entry's status write, as WRITE_STATUS_LUA reads it (1-based within the entry's pair).
STATUS_WRITE = ArgLayout("S_", ("read", "new"), first=1)


class Statuses(StorePart):
    """Reading entries' status, and writing it where nobody changed it meanwhile."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._write_status = self.client.register_script(self.WRITE_STATUS_LUA)

    def statuses(self, keys: Sequence[str]) -> list[bytes | None]:
        """The ``status`` field of each entry (None: none, or the key is no hash); one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "status")
        return [None if isinstance(status, Exception) else status
                for status in pipe.execute(raise_on_error=False)]

    # Writes entries' status, each only if it is still what the caller read
    # (the claim script writes it too): a count added to a status read
    # before a claim would undo that claim's. A key that is gone, or no
    # entry hash any more, is left alone.
    # KEYS: entries   ARGV: STATUS_WRITE per entry (status as read, '' = none; new status)
    # Returns: the keys whose status changed since it was read, for the caller to read again
    WRITE_STATUS_LUA = STATUS_WRITE.lua() + """
    local changed = {}
    for i = 1, #KEYS do
        local write = S_SIZE * (i - 1)
        local status = redis.pcall('HGET', KEYS[i], 'status')
        local hash = not (type(status) == 'table' and status['err'])
        if hash and (status or '') ~= ARGV[write + S_READ] then
            changed[#changed + 1] = KEYS[i]
        elseif hash and redis.call('HEXISTS', KEYS[i], 'definition') == 1 then
            redis.call('HSET', KEYS[i], 'status', ARGV[write + S_NEW])
        end
    end
    return changed
    """

    def write_statuses(self, writes: Sequence[tuple[str, bytes | None, str]]) -> list[str]:
        """Write (key, status as read, new status) where the status is unchanged; the keys where it changed."""
        if not writes:
            return []
        args: list = []
        for _, read, new in writes:
            args += STATUS_WRITE.pack(read=read or b"", new=new)
        reply = self._write_status(keys=[key for key, _, _ in writes], args=args)
        return [text(key) for key in reply]
