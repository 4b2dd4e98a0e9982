"""How many entries the schedule holds in each state, counted from Redis: what
``redbeat metrics``, beat's own metrics endpoint and the dashboard show.

Counted in chunks, so that a schedule of 100,000 entries costs flat memory
and never blocks Redis for long: each script call scans a chunk of the
schedule (ZSCAN) and counts it inside Redis, so no member or definition
crosses the network. Plain data, no metrics library:
``schedulemetrics`` turns a ``ScheduleSnapshot`` into Prometheus gauges.

The states (docs/metrics.rst says the same):

- parked: the entry's hash has a ``parked`` field (beat set it aside);
- finished: not parked, and its score is negative: never due again (a
  one-off that ran, a schedule with no further runs);
- paused: not parked, still scheduled (score 0 or more), and its definition
  says ``"enabled": false``: beat wakes it at its slots and runs nothing;
- active: every other entry with a hash, malformed ones included (beat
  parks those when they come due).

Members whose key holds no entry hash (an orphan, another type, a key
outside the prefix) are in no state: ``orphans`` counts them. ``failing``
counts the entries (with a hash, in any state) that are members of the
workers' failing set (``outcomecounts.py``): their last reported run failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, cast

from celery import Celery

from .admin import beat_status
from .client import get_store
from .outcomecounts import OutcomeCounts
from .outcomereads import outcome_counts

__all__ = ["EntryState", "Census", "ScheduleSnapshot", "census", "snapshot", "CENSUS_CHUNK"]

# Members counted per script call: small enough that a call holds Redis up
# for about a millisecond (docs/benchmarks.md, Metrics), so beat's reads wait little.
CENSUS_CHUNK = 250


class EntryState(str, Enum):
    """The state of an entry, the ``state`` label of ``redbeat_schedule_entries``."""

    ACTIVE = "active"
    PAUSED = "paused"
    PARKED = "parked"
    FINISHED = "finished"


@dataclass(frozen=True)
class Census:
    """Entries by state, members with no entry behind them, the runs given up over all entries
    (the sum of each entry's ``status.given_up``), and the entries whose last reported run failed."""

    active: int = 0
    paused: int = 0
    parked: int = 0
    finished: int = 0
    orphans: int = 0
    given_up: int = 0
    failing: int = 0

    def by_state(self) -> dict[EntryState, int]:
        return {state: getattr(self, state.value) for state in EntryState}

    def __add__(self, other: Census) -> Census:
        return Census(*(a + b for a, b in zip(self.counts(), other.counts())))

    def counts(self) -> tuple[int, ...]:
        return (self.active, self.paused, self.parked, self.finished, self.orphans, self.given_up, self.failing)


# Counts one ZSCAN chunk of the schedule by state.
# KEYS: schedule, the workers' failing set
# ARGV: prefix, ZSCAN cursor, chunk size
# Returns: {next cursor, active, paused, parked, finished, orphans, given_up, failing}
# The chunk is scanned inside the script, so no member crosses the network
# (and the beat process that serves this spends no time on them). Like the
# read of what is due, it reads the entries its members name; a member
# outside the prefix is never read (an ACL limited to the prefix, or Redis
# Cluster, would refuse it): an orphan. ``"enabled": false`` is looked for as
# text first and confirmed by decoding only when found: decoding every
# definition would hold Redis up for no gain. ``given_up`` is read from the
# status, which beat writes flat (a quote inside a reason is escaped, so the
# pattern cannot match there). Each entry is looked up in the failing set
# only when that set has members (ZCARD once per chunk), so a schedule
# without failing runs, or without workers that record them, pays nothing;
# a failing set of the wrong type counts none (pcall).
#
# The state of one schedule member, a Lua function that the census and the dashboard's
# search (``entrysearch``) share: ``entry_state(prefix, key, score)`` returns the state
# ('active', 'paused', 'parked', 'finished', or false for an orphan), the runs given up,
# and the definition as stored (or false).
ENTRY_STATE_LUA = """
local function entry_state(prefix, key, score)
    if string.sub(key, 1, #prefix) ~= prefix or string.sub(key, #prefix + 1, #prefix + 1) == ':' then
        return false, 0, false
    end
    local fields = redis.pcall('HMGET', key, 'parked', 'definition', 'status')
    if fields['err'] or not (fields[1] or fields[2] or fields[3]) then return false, 0, false end
    local given_up = 0
    if fields[3] then
        local count = tonumber(string.match(fields[3], '"given_up"%s*:%s*(%d+)')) or 0
        if count <= 1e9 then  -- more is no count beat wrote: it would overflow the reply's integer
            given_up = count
        end
    end
    if fields[1] then return 'parked', given_up, fields[2] end
    if score < 0 then return 'finished', given_up, fields[2] end
    if fields[2] and string.find(fields[2], '"enabled"%s*:%s*false') then
        local ok, definition = pcall(cjson.decode, fields[2])
        if ok and type(definition) == 'table' and definition['enabled'] == false then
            return 'paused', given_up, fields[2]
        end
    end
    return 'active', given_up, fields[2]
end
"""

CENSUS_LUA = ENTRY_STATE_LUA + """
local prefix = ARGV[1]
local scanned = redis.call('ZSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local members = scanned[2]
local counts = {active = 0, paused = 0, parked = 0, finished = 0}
local orphans, given_up, failing = 0, 0, 0
local any_failing = redis.pcall('ZCARD', KEYS[2])
any_failing = type(any_failing) == 'number' and any_failing > 0
for i = 1, #members, 2 do
    local state, runs_given_up = entry_state(prefix, members[i], tonumber(members[i + 1]))
    if state then
        counts[state] = counts[state] + 1
        given_up = given_up + runs_given_up
        if any_failing and redis.call('ZSCORE', KEYS[2], members[i]) then
            failing = failing + 1
        end
    else
        orphans = orphans + 1
    end
end
return {scanned[1], counts.active, counts.paused, counts.parked, counts.finished, orphans, given_up, failing}
"""


def census(app: Celery, chunk: int = CENSUS_CHUNK) -> Census:
    """Count the app's schedule by state, ``chunk`` members per script call.

    ZSCAN returns every member that stays in the schedule throughout at
    least once, however beat moves scores; a member may come twice only
    while Redis resizes the set (many entries added or removed meanwhile),
    which a gauge can bear: remembering every member to drop repeats would
    make memory grow with the schedule. Raises redis-py's errors.
    """
    store = get_store(app)
    script = store.client.register_script(CENSUS_LUA)
    keys, prefix = [store.conf.schedule_key, store.keys.failing], store.conf.key_prefix
    total = Census()
    cursor: bytes | int = 0
    while True:
        cursor, *counts = cast("list[Any]", script(keys=keys, args=[prefix, cursor, chunk]))
        total = total + Census(*counts)
        if int(cursor) == 0:
            return total


@dataclass(frozen=True)
class ScheduleSnapshot:
    """The schedule-wide view at one moment: entries by state (``census``), beat's
    status (``admin.beat_status``: the lock, the heartbeat, what is due and in flight)
    and how the workers say runs ended (``outcomecounts``)."""

    census: Census
    status: dict[str, Any] = field(default_factory=dict)
    took: float = 0.0  # seconds the reads took
    outcomes: OutcomeCounts | None = None  # None: the counts' key holds another type

    @property
    def last_tick_at(self) -> float | None:
        """When the active beat last completed a tick (UNIX seconds), None without a heartbeat."""
        last = self.status.get("last_tick")
        return None if last is None else datetime.fromisoformat(last).timestamp()

    @property
    def lock_held(self) -> bool:
        return self.status.get("lock_holder") is not None


def snapshot(app: Celery) -> ScheduleSnapshot:
    """Read the schedule-wide view; raises redis-py's errors (Redis unreachable, a read refused)."""
    started = time.perf_counter()
    counted = census(app)
    status = beat_status(app)
    store = get_store(app)
    outcomes = outcome_counts(store.client, store.keys)
    return ScheduleSnapshot(counted, status, time.perf_counter() - started, outcomes)
