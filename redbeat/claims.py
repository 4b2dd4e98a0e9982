"""The tick's claims: applying decisions, and the runs in flight they leave.

A claim records each run it applies in ``<prefix>:inflight``; the runs stay
there until they are published (``due.DueReads.record``), retried later,
taken over by the lock holder, or forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis import Redis
from redis.cluster import RedisCluster

from .config import RedBeatConfig
from .lock import FENCE_LUA, LOCK_LOST, BeatLock
from .lua import READ_ENTRY_LUA, ArgLayout
from .records import InFlight
from .stages import Decision, text
from .storepart import StorePart, fenced_layout

__all__ = ["Claims", "CLAIM_FIELDS"]

FENCE_ARGS = fenced_layout()
CLAIM_ARGS = fenced_layout("prefix")
# One decision, as CLAIM_LUA reads it (offsets from its first value).
CLAIM_FIELDS = ArgLayout("F_", ("key", "action", "definition", "meta", "run_now", "new_meta", "new_status",
                                "new_definition", "score", "reason", "runs"), first=0)
# A run in flight: its task id and its record.
IN_FLIGHT_RUN = ArgLayout("RUN_", ("task_id", "record"), first=0)
# A run to take over: its task id, its record as read, and as taken over.
TAKEN_RUN = ArgLayout("RUN_", ("task_id", "read", "taken"), first=0)


class Claims(StorePart):
    """Claiming due entries and their runs, fenced by the lock."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._claim = self.client.register_script(self.CLAIM_LUA)
        self._take_over = self.client.register_script(self.TAKE_OVER_LUA)
        self._retry_later = self.client.register_script(self.RETRY_LATER_LUA)

    # Applies the scheduler's decisions, fenced by the lock, each one only if
    # the entry's definition, meta and run-now request are still what was
    # read: an edit made between reading and claiming (by a person, another
    # program or a second beat) wins, and the entry is looked at again on the
    # next tick. Runs are recorded in flight in the same step as the new meta
    # and score, so that no crash can leave a run neither scheduled nor
    # publishable.
    # KEYS: lock, schedule, inflight
    # ARGV: CLAIM_ARGS, then per decision CLAIM_FIELDS (definition, meta and
    #   run_now as read; new_* '' = keep; runs: how many) and IN_FLIGHT_RUN for each run
    # Returns: LOCK_LOST, or the 1-based positions of the decisions applied;
    #   only the runs of those may be published.
    CLAIM_LUA = READ_ENTRY_LUA + CLAIM_ARGS.lua() + CLAIM_FIELDS.lua() + IN_FLIGHT_RUN.lua() + FENCE_LUA + """
    -- Two passes. The first checks each decision and collects what it
    -- writes; the second writes the runs in flight first, then the entries,
    -- then the scores. Should a write fail, Redis keeps what was written
    -- before it: written in this order, no entry can have moved past a run
    -- that is not in flight (a run in flight is published; at worst twice,
    -- with one task id). Runs in flight and scores take one command each,
    -- not one per entry: this script runs for every entry dispatched.
    -- (In slices: Lua's unpack takes a few thousand values at most.)
    local function call_in_slices(command, key, flag, values)
        for first = 1, #values, 2000 do
            local last = math.min(first + 1999, #values)
            if flag then
                redis.call(command, key, flag, unpack(values, first, last))
            else
                redis.call(command, key, unpack(values, first, last))
            end
        end
    end
    if type(redis.pcall('HLEN', KEYS[3])) == 'table' then
        -- The in-flight key holds another type since the read: nothing can be
        -- claimed until the next read moves it aside.
        return {}
    end
    local applied, flight, scores, entries = {}, {}, {}, {}
    local n = 0
    local i = ARG_SIZE + 1
    while i <= #ARGV do
        n = n + 1
        local key, action = ARGV[i + F_KEY], ARGV[i + F_ACTION]
        local runs = tonumber(ARGV[i + F_RUNS])
        local kind, fields = read_entry(ARGV[ARG_PREFIX], key, 'definition', 'meta', 'run_now', 'parked')
        -- Only a hash can be parked, moved or run: a key that is gone or became
        -- something else since it was read is looked at again on the next tick.
        -- A key outside the prefix is only ever dropped from the schedule.
        local fits = kind == 'hash' or action == 'drop' or (action == 'delete' and kind ~= 'outside')
        if fits and (fields[1] or '') == ARGV[i + F_DEFINITION] and (fields[2] or '') == ARGV[i + F_META]
                and (fields[3] or '') == ARGV[i + F_RUN_NOW] then
            applied[#applied + 1] = n
            entries[#entries + 1] = {i, kind, fields}
            if action == 'run' then
                for r = 0, runs - 1 do
                    local run = i + F_SIZE + RUN_SIZE * r
                    flight[#flight + 1] = ARGV[run + RUN_TASK_ID]
                    flight[#flight + 1] = ARGV[run + RUN_RECORD]
                end
            end
            if action ~= 'drop' and action ~= 'delete' then
                scores[#scores + 1] = ARGV[i + F_SCORE]
                scores[#scores + 1] = key
            end
        end
        i = i + F_SIZE + RUN_SIZE * runs
    end
    call_in_slices('HSET', KEYS[3], nil, flight)
    for _, applied_entry in ipairs(entries) do
        local j, kind, fields = applied_entry[1], applied_entry[2], applied_entry[3]
        local key, action = ARGV[j + F_KEY], ARGV[j + F_ACTION]
        if action == 'drop' then
            -- only the member: a key of another type or outside the prefix is someone else's data
            if kind ~= 'hash' then
                redis.call('ZREM', KEYS[2], key)
            end
        elseif action == 'delete' then
            redis.call('DEL', key)
            redis.call('ZREM', KEYS[2], key)
        else
            local writes = {}
            if action == 'park' then
                writes = {'parked', ARGV[j + F_REASON]}
            end
            if ARGV[j + F_NEW_META] ~= '' then
                writes[#writes + 1] = 'meta'; writes[#writes + 1] = ARGV[j + F_NEW_META]
            end
            if ARGV[j + F_NEW_STATUS] ~= '' then
                writes[#writes + 1] = 'status'; writes[#writes + 1] = ARGV[j + F_NEW_STATUS]
            end
            if ARGV[j + F_NEW_DEFINITION] ~= '' then
                writes[#writes + 1] = 'definition'; writes[#writes + 1] = ARGV[j + F_NEW_DEFINITION]
            end
            if #writes > 0 then
                redis.call('HSET', key, unpack(writes))
            end
            if action == 'run' then
                if fields[3] or fields[4] then
                    redis.call('HDEL', key, 'parked', 'run_now')  -- a run-now request is served
                end
            elseif action ~= 'park' and fields[4] then
                redis.call('HDEL', key, 'parked')  -- it reads well again
            end
        end
    end
    call_in_slices('ZADD', KEYS[2], 'XX', scores)
    return applied
    """

    def claim(self, decisions: Sequence[Decision], lock: BeatLock | None = None) -> list[Decision] | None:
        """Apply ``decisions``; returns the applied ones, or None if the lock was lost."""
        if not decisions:
            return []
        keys, fence = self._fence(lock)
        args = CLAIM_ARGS.pack(**fence, prefix=self.conf.key_prefix)
        for d in decisions:
            record = d.record
            args += CLAIM_FIELDS.pack(
                key=record.key, action=d.action,
                definition=record.definition or b"", meta=record.meta or b"", run_now=record.run_now or b"",
                new_meta=d.meta or "", new_status=d.status or "", new_definition=d.definition or "",
                score=repr(d.score), reason=d.reason or "", runs=len(d.runs),
            )
            for run in d.runs:
                args += IN_FLIGHT_RUN.pack(task_id=run.task_id, record=run.to_json())
        reply = self._claim(keys=keys, args=args)
        if reply == LOCK_LOST:
            return None
        return [decisions[position - 1] for position in reply]

    # Takes over runs in flight for the caller, each only if its record is
    # still what the caller read: two beats (or one that lost the lock and
    # the one that has it) can never both republish the same run.
    # KEYS: lock, schedule, inflight   ARGV: FENCE_ARGS, then TAKEN_RUN per run
    # Returns: LOCK_LOST, or the task ids taken over
    TAKE_OVER_LUA = FENCE_ARGS.lua() + TAKEN_RUN.lua() + FENCE_LUA + """
    local taken = {}
    for i = ARG_SIZE + 1, #ARGV, RUN_SIZE do
        -- pcall: an in-flight key of another type holds none of our runs (see CLAIM_LUA)
        if redis.pcall('HGET', KEYS[3], ARGV[i + RUN_TASK_ID]) == ARGV[i + RUN_READ] then
            redis.call('HSET', KEYS[3], ARGV[i + RUN_TASK_ID], ARGV[i + RUN_TAKEN])
            taken[#taken + 1] = ARGV[i + RUN_TASK_ID]
        end
    end
    return taken
    """

    def take_over(self, runs: Sequence[tuple[bytes, InFlight]], lock: BeatLock | None = None) -> set[str] | None:
        """Take over (record as read, run as it will be) pairs; the task ids taken, None if the lock was lost."""
        if not runs:
            return set()
        keys, fence = self._fence(lock)
        args = FENCE_ARGS.pack(**fence)
        for raw, run in runs:
            args += TAKEN_RUN.pack(task_id=run.task_id, read=raw, taken=run.to_json())
        reply = self._take_over(keys=keys, args=args)
        if reply == LOCK_LOST:
            return None
        return {text(task_id) for task_id in reply}

    # Records failed runs for a later retry, but only those still in flight:
    # a beat that lost the lock must not bring back a run the new holder has
    # published and forgotten.
    # KEYS: lock, schedule, inflight   ARGV: FENCE_ARGS, then IN_FLIGHT_RUN per run
    # Returns: LOCK_LOST, or 1
    RETRY_LATER_LUA = FENCE_ARGS.lua() + IN_FLIGHT_RUN.lua() + FENCE_LUA + """
    for i = ARG_SIZE + 1, #ARGV, RUN_SIZE do
        -- pcall: an in-flight key of another type holds none of our runs (see CLAIM_LUA)
        if redis.pcall('HEXISTS', KEYS[3], ARGV[i + RUN_TASK_ID]) == 1 then
            redis.call('HSET', KEYS[3], ARGV[i + RUN_TASK_ID], ARGV[i + RUN_RECORD])
        end
    end
    return 1
    """

    def retry_later(self, runs: Sequence[InFlight], lock: BeatLock | None = None) -> None:
        if runs:
            keys, fence = self._fence(lock)
            args = FENCE_ARGS.pack(**fence)
            for run in runs:
                args += IN_FLIGHT_RUN.pack(task_id=run.task_id, record=run.to_json())
            self._retry_later(keys=keys, args=args)

    def in_flight(self) -> tuple[dict[bytes, bytes], list[InFlight], list[bytes]]:
        """The runs in flight: raw records by task id, those readable, and the ids of the others."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        raw = cast("dict[bytes, bytes]", self.client.hgetall(self.inflight_key))
        runs: list[InFlight] = []
        unreadable: list[bytes] = []
        for task_id, record in raw.items():
            try:
                run = InFlight.from_json(record)
                if not self.is_entry_key(run.key):
                    raise ValueError(f"{run.key!r} is not an entry key under {self.conf.key_prefix!r}")
            except Exception:  # whatever is in there (1e999, nesting 10,000 deep) costs one record
                unreadable.append(task_id)
            else:
                runs.append(run)
        return raw, runs, unreadable

    def finish(self, task_ids: Sequence[str]) -> None:
        """Forget runs in flight without a trace in the history (unreadable, entry gone)."""
        if task_ids:
            self.client.hdel(self.inflight_key, *task_ids)
