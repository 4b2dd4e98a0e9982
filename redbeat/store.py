"""Where the schedule lives in Redis: the keys, and the scripts that change them.

This is the only module that knows the data layout of docs/format.rst:

- ``<prefix><name>``: hash with ``definition`` and ``meta`` (JSON), plus
  ``parked`` (JSON) when beat set a malformed entry aside;
- ``<prefix>:schedule``: sorted set of entry keys by next due time;
- ``<prefix>:statics``: set of names of entries from ``beat_schedule``;
- ``<prefix>:inflight``: hash of runs claimed but not yet published;
- ``<prefix>:history:<name>``: list of an entry's recent runs, newest first;
- ``<prefix>:heartbeat``: the active beat's last tick.

The store moves bytes; it does not decode entries (that is ``decoder`` and
``entry``) nor decide when things run (that is the scheduler).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from .config import RedBeatConfig
from .lock import FENCE_LUA, LOCK_LOST, BeatLock
from .records import NEVER, InFlight, Outcome, Parked
from .stages import Decision, DueBatch, DueRecord, text

# DueRecord, Decision, DueBatch, Outcome and NEVER live in stages and records; imported from here too.
__all__ = ["ScheduleStore", "DueRecord", "Decision", "DueBatch", "Outcome", "NEVER", "WrongTypeError", "text"]

# What a script returns when one of RedBeat's own keys has the wrong type.
WRONG_TYPE = -2
# Entries due within this many seconds are on time: each batch read gives
# them at least half its room, ahead of a backlog of entries due long ago.
ON_TIME_WINDOW = 5.0


class WrongTypeError(RuntimeError):
    """One of RedBeat's own keys holds another type of value than the data format says."""

    def __init__(self, key: str, found: str, expected: str) -> None:
        self.key, self.found, self.expected = key, found, expected
        super().__init__(f"{key} is a {found}, not a {expected} as RedBeat expects: nothing can be read from it "
                         f"until it is fixed (RENAME it aside, or DEL it if nothing in it matters)")


class ScheduleStore:
    """Reads and writes one app's schedule in Redis."""

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

    # Forgets runs that were published and pushes each onto its entry's
    # history, capped at ``size`` records. Not fenced: the runs were published,
    # whoever holds the lock now. Only a run still in flight gets a record: a
    # run recorded twice (Celery's shutdown handler closes the scheduler in the
    # middle of a tick that was recording it) is in the history once. A
    # history key of another type (someone else's data) only loses that
    # record: history must never stop beat from reading what is due. ARGV
    # from ``first`` on: task id, history key, history record, for each run.
    RECORD_PUBLISHED_LUA = """
    local function record_published(inflight, size, first)
        for i = first, #ARGV, 3 do
            -- An in-flight key of another type holds none of our runs (the next
            -- read moves it aside): the run's history is written all the same.
            local removed = redis.pcall('HDEL', inflight, ARGV[i])
            if (removed == 1 or type(removed) == 'table') and size > 0
                    and type(redis.pcall('LPUSH', ARGV[i + 1], ARGV[i + 2])) == 'number' then
                redis.call('LTRIM', ARGV[i + 1], 0, size - 1)
            end
        end
    end
    """

    # KEYS: inflight   ARGV: history size, then per run: task id, history key, record
    RECORD_LUA = RECORD_PUBLISHED_LUA + """
    record_published(KEYS[1], tonumber(ARGV[1]), 2)
    return 1
    """

    # Records the runs published since the last call (RECORD_PUBLISHED_LUA),
    # renews the lock (FENCE_LUA), then returns what is due: a status, the key
    # and score of the first entry not due yet, the number of runs in flight,
    # the type of a wrong-typed in-flight key moved aside ('' if none), the
    # time it read what is due at, and (key, score, key type, definition,
    # meta, status, run_now) for up to ARGV[4] due entries.
    # "Now" is Redis's clock (TIME) unless ARGV[3] gives one: every beat
    # then decides by the same clock, however far its own host's clock is off.
    # Fairness: a backlog (entries due long ago, such as thousands written
    # at once with score 0) must not delay the entries that come due on time.
    # Entries due within the last ARGV[9] seconds get at least half of a
    # batch, the backlog the rest (at least half too, so that it drains),
    # each oldest first; either takes what the other leaves.
    # Reading in the script keeps the batch consistent with the fence check
    # and costs one round trip however many are due; the record of the
    # previous batch rides along, so a batch costs two round trips (this and
    # the claim).
    # It also stores the beat's heartbeat (ARGV[5], when given), so that
    # status tools know who ticks and when, at no extra round trip.
    # RedBeat's own keys of the wrong type (someone wrote a string there)
    # must not stop every tick with WRONGTYPE: an in-flight key that is no
    # hash holds none of our runs, and is moved aside (kept, under
    # ARGV[8]) so that dispatching goes on; a schedule that is no sorted set
    # is the schedule itself, and is only reported: {-2, its type}.
    # KEYS: lock, schedule, inflight, heartbeat
    # ARGV: token, ttl_ms, now ('' = Redis's), limit, heartbeat, history size,
    #       prefix, set-aside name, on-time window, then runs to record as for RECORD_LUA
    READ_DUE_LUA = RECORD_PUBLISHED_LUA + READ_ENTRY_LUA + """
    local moved = ''
    local in_flight_readable = true
    local in_flight = redis.pcall('HLEN', KEYS[3])
    if type(in_flight) == 'table' and in_flight['err'] then
        -- Only the lock holder moves it, and only when asked to (ARGV[8] set).
        -- pcall: the lock key itself may hold another type.
        if ARGV[8] ~= '' and (ARGV[1] == '' or redis.pcall('GET', KEYS[1]) == ARGV[1]) then
            moved = redis.call('TYPE', KEYS[3])['ok']
            redis.call('RENAME', KEYS[3], ARGV[8])
        else
            in_flight_readable = false
        end
    end
    if in_flight_readable then
        record_published(KEYS[3], tonumber(ARGV[6]), 10)
    end
    """ + FENCE_LUA + """
    if ARGV[5] ~= '' then
        redis.call('SET', KEYS[4], ARGV[5], 'EX', 86400)
    end
    local now = ARGV[3]
    if now == '' then
        local clock = redis.call('TIME')
        now = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
    end
    local limit = tonumber(ARGV[4])
    local on_time_from = '(' .. string.format('%.6f', tonumber(now) - tonumber(ARGV[9]))
    local on_time = redis.pcall('ZRANGEBYSCORE', KEYS[2], on_time_from, now, 'WITHSCORES', 'LIMIT', 0, limit)
    if on_time['err'] then
        return {-2, redis.call('TYPE', KEYS[2])['ok']}
    end
    local backlog = redis.call('ZRANGEBYSCORE', KEYS[2], 0, string.sub(on_time_from, 2), 'WITHSCORES',
                               'LIMIT', 0, limit)
    -- At least half a batch for the backlog, and at least one entry once a batch holds two.
    local backlog_room = limit >= 2 and math.max(1, math.floor(limit / 2)) or 0
    local backlog_taken = math.min(#backlog / 2, math.max(limit - #on_time / 2, backlog_room))
    local on_time_taken = math.min(#on_time / 2, limit - backlog_taken)
    local after = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    local reply = {1, after[1] or false, after[2] or false, in_flight_readable and redis.call('HLEN', KEYS[3]) or 0,
                   moved, now}
    local n = #reply
    local function add(members, count)
        for i = 1, 2 * count, 2 do
            local key = members[i]
            local kind, fields = read_entry(ARGV[7], key, 'definition', 'meta', 'status', 'run_now')
            reply[n + 1] = key
            reply[n + 2] = members[i + 1]
            reply[n + 3] = kind
            for f = 1, 4 do
                reply[n + 3 + f] = fields[f]
            end
            n = n + 7
        end
    end
    add(on_time, on_time_taken)
    add(backlog, backlog_taken)
    return reply
    """

    # Applies the scheduler's decisions, fenced by the lock, each one only if
    # the entry's definition, meta and run-now request are still what was
    # read: an edit made between reading and claiming (by a person, another
    # program or a second beat) wins, and the entry is looked at again on the
    # next tick. Runs are recorded in flight in the same step as the new meta
    # and score, so that no crash can leave a run neither scheduled nor
    # publishable. Returns the 1-based positions of the decisions applied;
    # only the runs of those may be published.
    # KEYS: lock, schedule, inflight   ARGV: token, ttl_ms, prefix, then per decision:
    #   key, action, expected definition, expected meta, expected run_now,
    #   new meta, new status, new definition ('' = keep), score, reason,
    #   number of runs, then task id and in-flight record for each run
    CLAIM_LUA = READ_ENTRY_LUA + FENCE_LUA + """
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
    local i = 4
    while i <= #ARGV do
        n = n + 1
        local key, action = ARGV[i], ARGV[i + 1]
        local runs = tonumber(ARGV[i + 10])
        local kind, fields = read_entry(ARGV[3], key, 'definition', 'meta', 'run_now', 'parked')
        -- Only a hash can be parked, moved or run: a key that is gone or became
        -- something else since it was read is looked at again on the next tick.
        -- A key outside the prefix is only ever dropped from the schedule.
        local fits = kind == 'hash' or action == 'drop' or (action == 'delete' and kind ~= 'outside')
        if fits and (fields[1] or '') == ARGV[i + 2] and (fields[2] or '') == ARGV[i + 3]
                and (fields[3] or '') == ARGV[i + 4] then
            applied[#applied + 1] = n
            entries[#entries + 1] = {i, kind, fields}
            if action == 'run' then
                for r = 0, runs - 1 do
                    flight[#flight + 1] = ARGV[i + 11 + 2 * r]
                    flight[#flight + 1] = ARGV[i + 12 + 2 * r]
                end
            end
            if action ~= 'drop' and action ~= 'delete' then
                scores[#scores + 1] = ARGV[i + 8]
                scores[#scores + 1] = key
            end
        end
        i = i + 11 + 2 * runs
    end
    call_in_slices('HSET', KEYS[3], nil, flight)
    for _, applied_entry in ipairs(entries) do
        local j, kind, fields = applied_entry[1], applied_entry[2], applied_entry[3]
        local key, action = ARGV[j], ARGV[j + 1]
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
                writes = {'parked', ARGV[j + 9]}
            end
            if ARGV[j + 5] ~= '' then writes[#writes + 1] = 'meta'; writes[#writes + 1] = ARGV[j + 5] end
            if ARGV[j + 6] ~= '' then writes[#writes + 1] = 'status'; writes[#writes + 1] = ARGV[j + 6] end
            if ARGV[j + 7] ~= '' then writes[#writes + 1] = 'definition'; writes[#writes + 1] = ARGV[j + 7] end
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

    # Takes over runs in flight for the caller, each only if its record is
    # still what the caller read: two beats (or one that lost the lock and
    # the one that has it) can never both republish the same run.
    # KEYS: lock, schedule, inflight   ARGV: token, ttl_ms, then per run:
    #   task id, record as read, record as taken over
    TAKE_OVER_LUA = FENCE_LUA + """
    local taken = {}
    for i = 3, #ARGV, 3 do
        if redis.pcall('HGET', KEYS[3], ARGV[i]) == ARGV[i + 1] then  -- pcall: see CLAIM_LUA
            redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
            taken[#taken + 1] = ARGV[i]
        end
    end
    return taken
    """

    # Records failed runs for a later retry, but only those still in flight:
    # a beat that lost the lock must not bring back a run the new holder has
    # published and forgotten.
    # KEYS: lock, schedule, inflight   ARGV: token, ttl_ms, then task id, record
    RETRY_LATER_LUA = FENCE_LUA + """
    for i = 3, #ARGV, 2 do
        if redis.pcall('HEXISTS', KEYS[3], ARGV[i]) == 1 then  -- pcall: see CLAIM_LUA
            redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
        end
    end
    return 1
    """

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        self.client = client
        self.conf = conf
        self.keys = conf.keys
        self.inflight_key = conf.keys.inflight
        self.heartbeat_key = conf.keys.heartbeat
        self._read_due = client.register_script(self.READ_DUE_LUA)
        self._record = client.register_script(self.RECORD_LUA)
        self._claim = client.register_script(self.CLAIM_LUA)
        self._take_over = client.register_script(self.TAKE_OVER_LUA)
        self._retry_later = client.register_script(self.RETRY_LATER_LUA)
        self._write_status = client.register_script(self.WRITE_STATUS_LUA)
        self._save = client.register_script(self.SAVE_LUA)
        self._stop_heartbeat = client.register_script(self.STOP_HEARTBEAT_LUA)

    # -- keys ---------------------------------------------------------------

    def key_for(self, name: str) -> str:
        return self.keys.entry(name)

    def is_entry_key(self, key: str | bytes) -> bool:
        """Whether ``key`` can be an entry's (see ``KeyNames.is_entry_key``)."""
        return self.keys.is_entry_key(text(key))

    def _fenced(self, lock: BeatLock | None) -> tuple[list[str], list]:
        # The lock key is always declared (Redis Cluster routes by declared
        # keys); an empty token tells the fence there is no lock to check.
        lock_key = lock.key if lock is not None else self.conf.default_lock_key
        keys = [lock_key, self.conf.schedule_key, self.inflight_key]
        if lock is None:
            return keys, ["", 0]
        return keys, [lock.token, lock.ttl_ms]

    # -- the tick -----------------------------------------------------------

    def read_due(self, now: float | None, limit: int, lock: BeatLock | None = None, heartbeat: str = "",
                 published: Sequence[Outcome] = (), repair: bool = False) -> DueBatch:
        """Entries due at ``now`` (at most ``limit``; None: by Redis's clock), renewing
        and checking ``lock``; records ``published`` first, as ``record`` does, even if
        the lock was lost. With ``repair`` (the ticking beat), an in-flight key of
        another type is moved aside."""
        keys, args = self._fenced(lock)
        set_aside = f"{self.inflight_key}:wrongtype:{round(time.time() * 1000)}" if repair else ""
        args += ["" if now is None else repr(now), limit, heartbeat, self.conf.history_size, self.conf.key_prefix,
                 set_aside, ON_TIME_WINDOW]
        reply = self._read_due(keys=keys + [self.heartbeat_key], args=self._outcome_args(args, published))
        if reply == LOCK_LOST:
            return DueBatch([], lock_lost=True)
        if reply[0] == WRONG_TYPE:
            raise WrongTypeError(self.conf.schedule_key, text(reply[1]), "sorted set")
        next_score = float(reply[2]) if reply[2] is not None else None
        body = reply[6:]
        records = [
            DueRecord(body[i], float(body[i + 1]), body[i + 3], body[i + 4], body[i + 5], body[i + 6],
                      kind=text(body[i + 2]))
            for i in range(0, len(body), 7)
        ]
        moved = (text(reply[4]), set_aside) if reply[4] else None
        return DueBatch(records, reply[1], next_score, in_flight=reply[3], moved_in_flight=moved,
                        now=float(reply[5]))

    def claim(self, decisions: Sequence[Decision], lock: BeatLock | None = None) -> list[Decision] | None:
        """Apply ``decisions``; returns the applied ones, or None if the lock was lost."""
        if not decisions:
            return []
        keys, args = self._fenced(lock)
        args.append(self.conf.key_prefix)
        for d in decisions:
            args += [
                d.record.key,
                d.action,
                d.record.definition or b"",
                d.record.meta or b"",
                d.record.run_now or b"",
                d.meta or "",
                d.status or "",
                d.definition or "",
                repr(d.score),
                d.reason or "",
                len(d.runs),
            ]
            for run in d.runs:
                args += [run.task_id, run.to_json()]
        reply = self._claim(keys=keys, args=args)
        if reply == LOCK_LOST:
            return None
        return [decisions[position - 1] for position in reply]

    def finish(self, task_ids: Sequence[str]) -> None:
        """Forget runs in flight without a trace in the history (unreadable, entry gone)."""
        if task_ids:
            self.client.hdel(self.inflight_key, *task_ids)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Forget runs in flight and add each, as (run, outcome, when), to its entry's
        history, capped at ``redbeat_history_size``; one round trip."""
        if outcomes:
            self._record(keys=[self.inflight_key], args=self._outcome_args([self.conf.history_size], outcomes))

    def _outcome_args(self, args: list, outcomes: Sequence[Outcome]) -> list:
        for outcome in outcomes:
            run = outcome[0]
            args += [run.task_id, self.history_key(run.key), Outcome(*outcome).history_record().to_json()]
        return args

    # Marks the heartbeat as stopped, but only the caller's own: a beat that
    # lost its lock must not mark the new holder's heartbeat.
    # KEYS: heartbeat   ARGV: token, stopped_at
    STOP_HEARTBEAT_LUA = """
    local raw = redis.call('GET', KEYS[1])
    if not raw then return 0 end
    local ok, beat = pcall(cjson.decode, raw)
    if not ok or type(beat) ~= 'table' or beat['token'] ~= ARGV[1] then return 0 end
    beat['stopped_at'] = tonumber(ARGV[2])
    redis.call('SET', KEYS[1], cjson.encode(beat), 'EX', 86400)  -- as a tick writes it
    return 1
    """

    def stop_heartbeat(self, token: str, now: float) -> bool:
        """Record in the heartbeat that the beat with ``token`` stopped; True if it was its heartbeat."""
        return bool(self._stop_heartbeat(keys=[self.heartbeat_key], args=[token, repr(now)]))

    def history_key(self, key: str) -> str:
        return self.keys.history(key)

    def history(self, key: str) -> list[dict]:
        """The entry's recent runs, newest first."""
        records = []
        for raw in self.client.lrange(self.history_key(key), 0, -1):
            try:
                records.append(json.loads(raw))
            except ValueError:
                continue
        return records

    def retry_later(self, runs: Sequence[InFlight], lock: BeatLock | None = None) -> None:
        if runs:
            keys, args = self._fenced(lock)
            for run in runs:
                args += [run.task_id, run.to_json()]
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

    def take_over(self, runs: Sequence[tuple[bytes, InFlight]], lock: BeatLock | None = None) -> set[str] | None:
        """Take over (record as read, run as it will be) pairs; the task ids taken, None if the lock was lost."""
        if not runs:
            return set()
        keys, args = self._fenced(lock)
        for raw, run in runs:
            args += [run.task_id, raw, run.to_json()]
        reply = self._take_over(keys=keys, args=args)
        if reply == LOCK_LOST:
            return None
        return {text(task_id) for task_id in reply}

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
    # entry hash any more, is left alone. Returns the keys whose status
    # changed since it was read, for the caller to read again.
    # KEYS: entries   ARGV: per entry: status as read ('' = none), new status
    WRITE_STATUS_LUA = """
    local changed = {}
    for i = 1, #KEYS do
        local status = redis.pcall('HGET', KEYS[i], 'status')
        local hash = not (type(status) == 'table' and status['err'])
        if hash and (status or '') ~= ARGV[2 * i - 1] then
            changed[#changed + 1] = KEYS[i]
        elseif hash and redis.call('HEXISTS', KEYS[i], 'definition') == 1 then
            redis.call('HSET', KEYS[i], 'status', ARGV[2 * i])
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
            args += [read or b"", new]
        reply = self._write_status(keys=[key for key, _, _ in writes], args=args)
        return [text(key) for key in reply]

    def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None if the server will not say (managed Redis)."""
        try:
            # Keyed by bytes or str, as the client decodes; redis-py's types say str either way.
            reply: dict[Any, Any] = self.client.config_get("maxmemory-policy")
        except ResponseError:
            return None
        policy = reply.get(b"maxmemory-policy", reply.get("maxmemory-policy"))
        return text(policy) if policy is not None else None

    # -- single entries -----------------------------------------------------

    def load(self, key: str) -> tuple[bytes | None, bytes | None, bytes | None]:
        """An entry's ``definition``, ``meta`` and ``status``."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        definition, meta, status = cast("list[bytes | None]", self.client.hmget(key, "definition", "meta", "status"))
        return definition, meta, status

    def rewrite_definition(self, key: str, definition: str) -> None:
        """Replace an entry's definition (meta kept) and have beat look at it at its next tick."""
        pipe = self.client.pipeline()
        pipe.hset(key, "definition", definition)
        pipe.hdel(key, "parked")
        pipe.zadd(self.conf.schedule_key, {key: 0})
        pipe.execute()

    def request_run_now(self, key: str) -> None:
        """Ask beat to dispatch the entry once at its next tick, off its regular schedule."""
        pipe = self.client.pipeline()
        pipe.hset(key, "run_now", repr(time.time()))
        pipe.zadd(self.conf.schedule_key, {key: 0})
        pipe.execute()

    # Writes an entry's definition, and its meta only if it has none. A new
    # entry gets its score; an existing one keeps its history, so its score
    # becomes 0: beat looks at it at its next tick and runs it only if its
    # stored meta says it is due. (A score computed from the caller's fresh
    # object would push the entry back each time an app re-saves it.)
    # KEYS: schedule, entry   ARGV: definition, meta, score
    SAVE_LUA = """
    redis.call('HSET', KEYS[2], 'definition', ARGV[1])
    redis.call('HDEL', KEYS[2], 'parked')
    if redis.call('HSETNX', KEYS[2], 'meta', ARGV[2]) == 1 then
        redis.call('ZADD', KEYS[1], ARGV[3], KEYS[2])
    else
        redis.call('ZADD', KEYS[1], 0, KEYS[2])
    end
    return 1
    """

    def save(self, key: str, definition: str, meta: str, score: float) -> None:
        """Write an entry's definition; meta and score only if it is new (see SAVE_LUA).

        Saving also clears a parked mark: a new definition deserves a new chance.
        """
        self._save(keys=[self.conf.schedule_key, key], args=[definition, meta, repr(score)])

    def save_many(self, items: Iterable[tuple[str, str, str, float]], chunk: int = 1000) -> int:
        """``save`` for many (key, definition, meta, score) at once: one round trip per ``chunk``."""
        count = 0
        pipe = self.client.pipeline(transaction=False)
        for key, definition, meta, score in items:
            self._save(keys=[self.conf.schedule_key, key], args=[definition, meta, repr(score)], client=pipe)
            count += 1
            if count % chunk == 0:
                pipe.execute()
        pipe.execute()
        return count

    def _queue_save(self, pipe: Any, key: bytes | str, definition: bytes | str, meta: bytes | str,
                    score: float) -> None:
        pipe.hset(key, "definition", definition)
        pipe.hsetnx(key, "meta", meta)
        pipe.hdel(key, "parked")
        pipe.zadd(self.conf.schedule_key, {key: score})

    def save_meta(self, key: str, meta: str, score: float) -> None:
        pipe = self.client.pipeline()
        pipe.hset(key, "meta", meta)
        pipe.zadd(self.conf.schedule_key, {key: score})
        pipe.execute()

    def delete(self, key: str) -> None:
        pipe = self.client.pipeline()
        pipe.zrem(self.conf.schedule_key, key)
        pipe.delete(key)
        pipe.execute()

    # -- what operators ask (admin) ------------------------------------------

    # The Redis type each of RedBeat's own keys must have ("none": not there yet).
    OWN_KEY_TYPES = {"schedule": "zset", "statics": "set", "lock": "string", "inflight": "hash",
                     "heartbeat": "string"}

    def own_keys(self) -> dict[str, str]:
        """RedBeat's own keys by role (the lock only when locking is on)."""
        conf = self.conf
        keys = {"schedule": conf.schedule_key, "statics": conf.statics_key, "inflight": self.inflight_key,
                "heartbeat": self.heartbeat_key}
        if conf.lock_key:
            keys["lock"] = conf.lock_key
        return keys

    def own_key_types(self) -> dict[str, str]:
        """The Redis type of each of RedBeat's own keys, by role; one round trip."""
        keys = self.own_keys()
        return dict(zip(keys, self.key_types([key.encode() for key in keys.values()])))

    def schedule_members(self, chunk: int = 1000) -> Iterator[list[bytes]]:
        """Every member of the schedule, once, in chunks of about ``chunk``.

        ZSCAN, not ZRANGE by rank: a running beat moves scores all the time,
        which shifts ranks between pages, so paging by rank skips some members
        and repeats others. ZSCAN returns every member that stays in the set
        for the whole scan at least once, whatever happens to the scores;
        the repeats it may return are dropped here.
        """
        seen: set[bytes] = set()
        cursor = 0
        while True:
            cursor, pairs = self.client.zscan(self.conf.schedule_key, cursor, count=chunk)
            # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
            fresh = [cast(bytes, member) for member, _ in pairs if member not in seen]
            seen.update(fresh)
            if fresh:
                yield fresh
            if cursor == 0:
                return

    def read_entries(self, keys: Sequence[bytes]) -> list[tuple[float | None, dict[bytes, bytes] | str | None]]:
        """(score, fields) of each key, read in one transaction so that an entry's
        score and hash belong together even while beat moves it.

        The score is None for a key that is not (or no longer) in the schedule.
        The fields are the key's Redis type instead when it is no hash, and
        None for a key outside the prefix: that is no entry, and its hash is
        not read (under Redis Cluster it lives in another slot).
        """
        prefix = self.conf.key_prefix.encode()
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.zscore(self.conf.schedule_key, key)
            if key.startswith(prefix):
                pipe.hgetall(key)
        replies = iter(pipe.execute(raise_on_error=False) if keys else ())
        read: list[tuple[bytes, float | None, Any]] = []
        for key in keys:
            score = next(replies)
            if isinstance(score, Exception):
                raise score  # the schedule itself is unreadable: nothing here can be trusted
            read.append((key, score, next(replies) if key.startswith(prefix) else None))
        wrong = [key for key, _, raw in read if isinstance(raw, Exception)]
        kinds = dict(zip(wrong, self.key_types(wrong)))
        return [(score, kinds[key] if isinstance(raw, Exception) else raw) for key, score, raw in read]

    def key_types(self, keys: Sequence[bytes | str]) -> list[str]:
        """The Redis type of each key ("none" for a key that is not there)."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        return [text(kind) for kind in pipe.execute()]

    def history_records(self, key: str) -> list[bytes]:
        """The raw records of an entry's run history, newest first (``key`` as
        decoded with surrogateescape, so that any bytes name their key)."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        return cast("list[bytes]", self.client.lrange(self.history_key(key).encode("utf-8", "surrogateescape"), 0, -1))

    def misfiled_histories(self) -> Iterator[tuple[bytes, str]]:
        """(key, Redis type) of history keys that are no list."""
        pattern = _glob_escape(self.keys.histories) + "*"
        for keys in _chunks(self.client.scan_iter(match=pattern, count=1000), 1000):
            for key, kind in zip(keys, self.key_types(keys)):
                if kind != "list":
                    yield key, kind

    def rank(self, key: str) -> int | None:
        """The entry's position in the schedule, 0 for the first due; None if it is not in it."""
        # A list only with withscore=True, which is not asked for.
        return cast("int | None", self.client.zrank(self.conf.schedule_key, key))

    def known(self, key: str) -> bool:
        """Whether ``key`` is an entry hash or a member of the schedule (an orphan)."""
        return bool(self.client.exists(key)) or self.client.zscore(self.conf.schedule_key, key) is not None

    def unscheduled_hashes(self, scheduled: set[bytes]) -> Iterator[bytes]:
        """Hashes under the prefix that are neither RedBeat's own keys nor in the schedule.

        ``scheduled`` are the members seen a moment ago; a hash not among them
        is looked up again before it is reported, so an entry added meanwhile
        is not taken for an unscheduled one.
        """
        own = self.keys.own.encode()
        raw_keys = self.client.scan_iter(match=_glob_escape(self.conf.key_prefix) + "*", count=1000, _type="hash")
        candidates = (key for key in raw_keys if not key.startswith(own) and key not in scheduled)
        for keys in _chunks(candidates, 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.zscore(self.conf.schedule_key, key)
            yield from (key for key, score in zip(keys, pipe.execute()) if score is None)

    def time(self) -> float:
        """Now by Redis's clock, the one beat decides by (UNIX seconds)."""
        seconds, microseconds = self.client.time()
        return seconds + microseconds / 1e6

    def overview(self, now: float) -> dict[str, Any]:
        """The lock's token, the heartbeat, and how the schedule stands at ``now``;
        two round trips. What cannot be read (a key of the wrong type) is None."""
        conf = self.conf
        pipe = self.client.pipeline(transaction=False)
        pipe.get(conf.lock_key or conf.default_lock_key)
        pipe.get(self.heartbeat_key)
        pipe.zcard(conf.schedule_key)
        pipe.zcount(conf.schedule_key, 0, now)
        # Score 0 means "due now" to whoever wrote it, not "late since 1970".
        pipe.zrangebyscore(conf.schedule_key, "(0", now, start=0, num=1, withscores=True)
        pipe.zrangebyscore(conf.schedule_key, "-inf", "(0")
        pipe.hlen(self.inflight_key)
        replies = [None if isinstance(reply, ResponseError) else reply
                   for reply in pipe.execute(raise_on_error=False)]
        token, heartbeat, total, due, oldest, never, in_flight = replies
        parked = 0
        if never:
            pipe = self.client.pipeline(transaction=False)
            for key in never:
                pipe.hexists(key, "parked")
            parked = sum(reply is True for reply in pipe.execute(raise_on_error=False))
        return {"lock_token": token, "heartbeat": heartbeat, "entries": total, "due": due,
                "oldest_due_score": oldest[0][1] if oldest else None,
                "never_due": None if never is None else len(never) - parked,
                "parked": None if never is None else parked, "in_flight": in_flight}

    def write_imported(self, writes: Iterable[tuple[bytes, float, dict[bytes, bytes], bool]],
                       statics: Sequence[str] = ()) -> int:
        """Write imported entries as (key, score, fields, exact), in one transaction;
        returns how many keys were written.

        An exact entry (from an export) replaces the whole hash with ``fields``
        (none: only its score comes back, as an orphan member); the others
        write their definition and keep the meta of an entry that exists.
        ``statics`` are added to the set of static names.
        """
        pipe = self.client.pipeline()
        written = set()
        for key, score, fields, exact in writes:
            written.add(key)
            if exact:
                pipe.delete(key)
                if fields:
                    # redis-py's mapping type has invariant keys, which refuse a dict[bytes, bytes].
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.zadd(self.conf.schedule_key, {key: score})
            else:
                self._queue_save(pipe, key, fields[b"definition"], fields[b"meta"], score)
        if statics:
            pipe.sadd(self.conf.statics_key, *statics)
        pipe.execute()
        return len(written)

    # -- static entries -----------------------------------------------------

    def static_names(self) -> set[str]:
        """The names in the set of static entries; WrongTypeError if that key is no set."""
        try:
            return {text(name) for name in self.client.smembers(self.conf.statics_key)}
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            raise WrongTypeError(self.conf.statics_key, text(self.client.type(self.conf.statics_key)), "set") from exc

    def move_aside(self, key: str, now: float) -> str:
        """Rename one of RedBeat's own keys that holds the wrong type of value out
        of the way, keeping it for whoever wrote it; returns its new name."""
        aside = f"{key}:wrongtype:{round(now * 1000)}"
        self.client.rename(key, aside)
        return aside

    def load_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, bytes | None] | None]:
        """Each key's ``definition`` and ``meta``; None for a key that holds
        another type than a hash (someone else's data, never to be written)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "definition", "meta")
        return [None if isinstance(fields, ResponseError) else tuple(fields)
                for fields in pipe.execute(raise_on_error=False)]

    def write_entries(
        self,
        changed: Iterable[tuple[str, str, str, float]],
        unchanged: Iterable[tuple[str, float]],
        removed: Iterable[str] = (),
        statics: Iterable[str] | None = None,
    ) -> None:
        """Write entries by name in one transaction.

        ``changed`` holds (name, definition, meta, score) of new or edited
        entries: their definition and score are written and their meta kept if
        present. ``unchanged`` entries get their score back only if they had
        none. ``removed`` names are deleted. ``statics``, when given, becomes
        the set of static names.
        """
        pipe = self.client.pipeline()
        for name, definition, meta, score in changed:
            self._queue_save(pipe, self.key_for(name), definition, meta, score)
        for name, score in unchanged:
            pipe.zadd(self.conf.schedule_key, {self.key_for(name): score}, nx=True)
        for name in removed:
            pipe.zrem(self.conf.schedule_key, self.key_for(name))
            pipe.delete(self.key_for(name))
        if statics is not None:
            pipe.delete(self.conf.statics_key)
            statics = list(statics)
            if statics:
                pipe.sadd(self.conf.statics_key, *statics)
        pipe.execute()


def parked_reason(reason: str, now: float | None = None) -> str:
    """The JSON stored in an entry's ``parked`` field."""
    return Parked(reason, time.time() if now is None else now).to_json()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _glob_escape(prefix: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in prefix)
