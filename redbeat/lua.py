"""What the store's Lua scripts share: named argument positions, and the
fragments that more than one script includes.

A script reads its arguments by position, and Python packs them by
position. ``ArgLayout`` names each position once, for both: Python packs and
parses by name, and the script reads ``ARGV[i + F_SCORE]`` (or
``ARGV[ARG_LIMIT]``) from Lua locals that the layout declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

__all__ = ["ArgLayout", "RUN_RECORD", "RECORD_PUBLISHED_LUA", "READ_ENTRY_LUA", "WRONG_TYPE"]

# What a script returns when one of RedBeat's own keys has the wrong type.
WRONG_TYPE = -2


class ArgLayout:
    """The names of consecutive values in a script's ARGV (or in its reply).

    ``lua()`` declares each name as a Lua local holding its position
    (``lua_prefix`` + the name in capitals, ``first`` for the first name),
    and ``<lua_prefix>SIZE`` as how many values the layout takes: a script
    reads ``ARGV[DUE_NOW]``, or ``ARGV[i + CLAIM_SCORE]`` for a group of
    values that repeats every ``CLAIM_SIZE``. Python packs the values with
    ``pack`` and finds one with ``index`` (0-based, whatever ``first`` is).
    """

    def __init__(self, lua_prefix: str, names: Sequence[str], first: int) -> None:
        self.lua_prefix = lua_prefix
        self.names = tuple(names)
        self.first = first
        self._index = {name: position for position, name in enumerate(self.names)}
        # Packing runs for every decision claimed: itemgetter is the fastest way to pick them.
        self._pick = itemgetter(*self.names)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Where ``name`` is in a list that ``pack`` made (or a reply with this layout)."""
        return self._index[name]

    def pack(self, **values: Any) -> list:
        """The values in the layout's order; every name must be given, and no other."""
        if len(values) != len(self.names):  # a name missing raises KeyError
            raise TypeError(f"expected {self.names}, got {tuple(values)}")
        picked = self._pick(values)
        return list(picked) if len(self.names) > 1 else [picked]

    def lua(self) -> str:
        """The Lua locals that name the positions (Lua allows 200 locals per script)."""
        names = ", ".join(self.lua_prefix + name.upper() for name in self.names)
        positions = ", ".join(str(self.first + offset) for offset in range(len(self.names)))
        return f"\nlocal {names} = {positions}\nlocal {self.lua_prefix}SIZE = {len(self.names)}\n"


# The Redis type of an entry's key and the given fields of its hash (all
# false unless it is a hash). A member may name a key that is no hash at
# all (a bare name that collides with a string): say so rather than fail
# the whole batch. Asks TYPE only when HMGET alone cannot tell: this runs
# for every entry read and claimed.
# A member that is not an entry key under ``prefix`` (another
# application's key, or one of RedBeat's own such as <prefix>:inflight)
# is 'outside' and never touched: reading it could be refused by an ACL
# limited to the prefix, or by Redis Cluster for a key of another slot,
# and either would fail the whole script, every tick.
# read_entry(prefix, key, field...) returns: kind ('hash', 'outside' or the
# key's Redis type), and the fields as HMGET gives them.
READ_ENTRY_LUA = """
local function is_entry_key(prefix, key)
    return string.sub(key, 1, #prefix) == prefix and string.sub(key, #prefix + 1, #prefix + 1) ~= ':'
end
local function read_entry(prefix, key, ...)
    if not is_entry_key(prefix, key) then
        return 'outside', {false, false, false, false}
    end
    local fields = redis.pcall('HMGET', key, ...)
    if fields['err'] then
        return redis.call('TYPE', key)['ok'], {false, false, false, false}
    end
    for f = 1, #fields do
        if fields[f] then return 'hash', fields end
    end
    return redis.call('TYPE', key)['ok'], fields
end
"""

# One published run to record, as ARGV packs it (offsets from the run's first value).
RUN_RECORD = ArgLayout("RUN_", ("task_id", "history_key", "record"), first=0)

# record_published(inflight, size, first) forgets runs that were published
# and pushes each onto its entry's history, capped at ``size`` records.
# ARGV from ``first`` on: RUN_RECORD for each run. Not fenced: the runs were
# published, whoever holds the lock now. Only a run still in flight gets a
# record: a run recorded twice (Celery's shutdown handler closes the
# scheduler in the middle of a tick that was recording it) is in the history
# once. A history key of another type (someone else's data) only loses that
# record: history must never stop beat from reading what is due.
RECORD_PUBLISHED_LUA = RUN_RECORD.lua() + """
local function record_published(inflight, size, first)
    for i = first, #ARGV, RUN_SIZE do
        -- An in-flight key of another type holds none of our runs (the next
        -- read moves it aside): the run's history is written all the same.
        local removed = redis.pcall('HDEL', inflight, ARGV[i + RUN_TASK_ID])
        if (removed == 1 or type(removed) == 'table') and size > 0
                and type(redis.pcall('LPUSH', ARGV[i + RUN_HISTORY_KEY], ARGV[i + RUN_RECORD])) == 'number' then
            redis.call('LTRIM', ARGV[i + RUN_HISTORY_KEY], 0, size - 1)
        end
    end
end
"""
