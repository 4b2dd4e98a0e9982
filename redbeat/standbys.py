"""Beats standing by check in at ``<prefix>:standbys``, so that ``redbeat status`` and
``redbeat liveness`` see them (docs/format.rst).

A beat that fails to take the lock writes its ``StandbyBeat`` record at each
poll; a beat that takes the lock, or stops, removes its own. A killed beat's
record stays until it ages out: readers ignore a record older than a few of
its polls, and each check-in deletes the records older than
``STANDBY_KEEP_FOR`` (the hash itself expires after that long too, once no
beat stands by).
"""

from __future__ import annotations

from redis import Redis
from redis.cluster import RedisCluster

from .config import RedBeatConfig
from .lua import ArgLayout
from .records import StandbyBeat
from .storepart import StorePart

__all__ = ["Standbys", "STANDBY_KEEP_FOR"]

# Seconds a standby's record is kept after its last check, for ``redbeat liveness``
# to say "stale" rather than "absent" about a beat killed a while ago.
STANDBY_KEEP_FOR = 600.0

CHECK_IN_ARGS = ArgLayout("ARG_", ("token", "record", "oldest", "keep_for_ms"), first=1)


class Standbys(StorePart):
    """The standby beats' check-ins."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._check_in = self.client.register_script(self.CHECK_IN_LUA)

    # Writes (record set) or removes (record '') the caller's record, by its token;
    # on a write, deletes the records checked in before ARG_OLDEST (or unreadable)
    # and keeps the hash for ARG_KEEP_FOR_MS. One round trip; the hash holds a
    # record per beat standing by, a handful at most.
    # The record is for operators only: a key of another type (someone wrote
    # there) must not stop a beat from standing by or taking over, so it is
    # left alone (pcall), and ``status`` reports it.
    # KEYS: standbys   ARGV: CHECK_IN_ARGS   Returns: 1 if written or removed, else 0
    CHECK_IN_LUA = CHECK_IN_ARGS.lua() + """
    if ARGV[ARG_RECORD] == '' then
        local removed = redis.pcall('HDEL', KEYS[1], ARGV[ARG_TOKEN])
        return type(removed) == 'number' and removed or 0
    end
    local written = redis.pcall('HSET', KEYS[1], ARGV[ARG_TOKEN], ARGV[ARG_RECORD])
    if type(written) == 'table' and written['err'] then return 0 end
    local oldest = tonumber(ARGV[ARG_OLDEST])
    local records = redis.call('HGETALL', KEYS[1])
    for i = 1, #records, 2 do
        local ok, record = pcall(cjson.decode, records[i + 1])
        if not ok or type(record) ~= 'table' or type(record['last_check']) ~= 'number'
                or record['last_check'] < oldest then
            redis.call('HDEL', KEYS[1], records[i])
        end
    end
    redis.call('PEXPIRE', KEYS[1], ARGV[ARG_KEEP_FOR_MS])
    return 1
    """

    def check_in(self, record: StandbyBeat) -> bool:
        """Write the record of a beat standing by; False if the key holds another type."""
        args = CHECK_IN_ARGS.pack(token=record.token, record=record.to_json(),
                                  oldest=repr(record.last_check - STANDBY_KEEP_FOR),
                                  keep_for_ms=int(STANDBY_KEEP_FOR * 1000))
        return bool(self._check_in(keys=[self.keys.standbys], args=args))

    def check_out(self, token: str) -> bool:
        """Remove the record of the beat with ``token`` (it took the lock, or stops);
        True if there was one."""
        args = CHECK_IN_ARGS.pack(token=token, record="", oldest="", keep_for_ms="")
        return bool(self._check_in(keys=[self.keys.standbys], args=args))
