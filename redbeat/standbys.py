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

CHECK_IN_ARGS = ArgLayout("ARG_", ("token", "record", "keep_for"), first=1)


class Standbys(StorePart):
    """The standby beats' check-ins."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._check_in = self.client.register_script(self.CHECK_IN_LUA)

    # Writes (record set) or removes (record '') the caller's record, by its token.
    # A write sets the record's last_check to Redis's clock (TIME), and its since
    # to the one already stored for the token, if any: a standby learns Redis's
    # clock only once it ticks, and every reader compares with Redis's. It then
    # deletes the records checked in over ARG_KEEP_FOR seconds ago (or unreadable)
    # and keeps the hash that long. One round trip; the hash holds a record per
    # beat standing by, a handful at most.
    # The record is for operators only: a key of another type (someone wrote
    # there) must not stop a beat from standing by or taking over, so it is
    # left alone (pcall), and ``status`` reports it.
    # KEYS: standbys   ARGV: CHECK_IN_ARGS   Returns: 1 if written or removed, else 0
    CHECK_IN_LUA = CHECK_IN_ARGS.lua() + """
    if ARGV[ARG_RECORD] == '' then
        local removed = redis.pcall('HDEL', KEYS[1], ARGV[ARG_TOKEN])
        return type(removed) == 'number' and removed or 0
    end
    local stored = redis.pcall('HGET', KEYS[1], ARGV[ARG_TOKEN])
    if type(stored) == 'table' and stored['err'] then return 0 end
    local clock = redis.call('TIME')
    local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
    local record = cjson.decode(ARGV[ARG_RECORD])
    record['last_check'] = now
    record['since'] = now
    if stored then
        local ok, before = pcall(cjson.decode, stored)
        if ok and type(before) == 'table' and type(before['since']) == 'number' then
            record['since'] = before['since']
        end
    end
    redis.call('HSET', KEYS[1], ARGV[ARG_TOKEN], cjson.encode(record))
    local oldest = now - tonumber(ARGV[ARG_KEEP_FOR])
    local records = redis.call('HGETALL', KEYS[1])
    for i = 1, #records, 2 do
        local ok, other = pcall(cjson.decode, records[i + 1])
        if not ok or type(other) ~= 'table' or type(other['last_check']) ~= 'number'
                or other['last_check'] < oldest then
            redis.call('HDEL', KEYS[1], records[i])
        end
    end
    redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[ARG_KEEP_FOR]) * 1000))
    return 1
    """

    def check_in(self, record: StandbyBeat) -> bool:
        """Write the record of a beat standing by, its ``last_check`` (and ``since``, on
        its first check) by Redis's clock; False if the key holds another type."""
        args = CHECK_IN_ARGS.pack(token=record.token, record=record.to_json(), keep_for=STANDBY_KEEP_FOR)
        return bool(self._check_in(keys=[self.keys.standbys], args=args))

    def check_out(self, token: str) -> bool:
        """Remove the record of the beat with ``token`` (it took the lock, or stops);
        True if there was one."""
        args = CHECK_IN_ARGS.pack(token=token, record="", keep_for=STANDBY_KEEP_FOR)
        return bool(self._check_in(keys=[self.keys.standbys], args=args))
