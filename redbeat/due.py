"""The tick's read of what is due, the record of what it published, and its heartbeat.

A tick reads with ``read_due`` (which also records the runs the last batch
published and stores the heartbeat), then claims (``claims``); ``record``
forgets published runs on its own when no read follows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis import Redis
from redis.cluster import RedisCluster

from .config import RedBeatConfig
from .lock import FENCE_LUA, LOCK_LOST, BeatLock
from .lua import READ_ENTRY_LUA, RECORD_PUBLISHED_LUA, RUN_RECORD, WRONG_TYPE, ArgLayout
from .records import Outcome
from .stages import DueBatch, DueRecord, text
from .storepart import StorePart, WrongTypeError, fenced_layout

__all__ = ["DueReads", "ON_TIME_WINDOW"]

# Entries due within this many seconds are on time: each batch read gives
# them at least half its room, ahead of a backlog of entries due long ago.
ON_TIME_WINDOW = 5.0

READ_DUE_ARGS = fenced_layout("now", "limit", "heartbeat", "history_size", "prefix", "set_aside", "on_time_window")
# READ_DUE_LUA's reply: a header, then a group of DUE_RECORD per entry due.
DUE_HEADER = ArgLayout("HEAD_", ("status", "next_key", "next_score", "in_flight", "moved", "now", "due"), first=1)
DUE_RECORD = ArgLayout("REC_", ("key", "score", "kind", "definition", "meta", "status", "run_now"), first=1)
RECORD_ARGS = ArgLayout("ARG_", ("history_size",), first=1)
STOP_HEARTBEAT_ARGS = ArgLayout("ARG_", ("token", "stopped_at"), first=1)


class DueReads(StorePart):
    """Reading what is due, and recording what was published (runs' history, heartbeat)."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._read_due = self.client.register_script(self.READ_DUE_LUA)
        self._record = self.client.register_script(self.RECORD_LUA)
        self._stop_heartbeat = self.client.register_script(self.STOP_HEARTBEAT_LUA)

    # Records the runs published since the last call (RECORD_PUBLISHED_LUA),
    # renews the lock (FENCE_LUA), then returns what is due.
    # KEYS: lock, schedule, inflight, heartbeat
    # ARGV: READ_DUE_ARGS (now '' = Redis's clock; heartbeat '' = none; set_aside
    #       '' = do not move), then RUN_RECORD for each run to record
    # Returns: LOCK_LOST; {WRONG_TYPE, the schedule's type}; or DUE_HEADER
    #   (1, key and score of the first entry not due yet, runs in flight, the
    #   type of a wrong-typed in-flight key moved aside or '', the time it read
    #   at, how many entries are due then), then DUE_RECORD for each entry due (at most ARGV[ARG_LIMIT]).
    # "Now" is Redis's clock (TIME) unless given: every beat then decides by
    # the same clock, however far its own host's clock is off.
    # Fairness: a backlog (entries due long ago, such as thousands written
    # at once with score 0) must not delay the entries that come due on time.
    # Entries due within the last ARG_ON_TIME_WINDOW seconds get at least half
    # of a batch, the backlog the rest (at least half too, so that it drains),
    # each oldest first; either takes what the other leaves.
    # Reading in the script keeps the batch consistent with the fence check
    # and costs one round trip however many are due; the record of the
    # previous batch rides along, so a batch costs two round trips (this and
    # the claim). The heartbeat rides along too, so that status tools know
    # who ticks and when, at no extra round trip.
    # RedBeat's own keys of the wrong type (someone wrote a string there)
    # must not stop every tick with WRONGTYPE: an in-flight key that is no
    # hash holds none of our runs, and is moved aside (kept, under
    # ARG_SET_ASIDE) so that dispatching goes on; a schedule that is no sorted
    # set is the schedule itself, and is only reported.
    READ_DUE_LUA = (RECORD_PUBLISHED_LUA + READ_ENTRY_LUA + READ_DUE_ARGS.lua() + DUE_HEADER.lua() + DUE_RECORD.lua()
                    + f"local WRONG_TYPE = {WRONG_TYPE}\n") + """
    local moved = ''
    local in_flight_readable = true
    local in_flight = redis.pcall('HLEN', KEYS[3])
    if type(in_flight) == 'table' and in_flight['err'] then
        -- Only the lock holder moves it, and only when asked to (ARG_SET_ASIDE set).
        -- pcall: the lock key itself may hold another type.
        if ARGV[ARG_SET_ASIDE] ~= '' and (ARGV[ARG_TOKEN] == '' or redis.pcall('GET', KEYS[1]) == ARGV[ARG_TOKEN]) then
            moved = redis.call('TYPE', KEYS[3])['ok']
            redis.call('RENAME', KEYS[3], ARGV[ARG_SET_ASIDE])
        else
            in_flight_readable = false
        end
    end
    if in_flight_readable then
        record_published(KEYS[3], tonumber(ARGV[ARG_HISTORY_SIZE]), ARG_SIZE + 1)
    end
    """ + FENCE_LUA + """
    if ARGV[ARG_HEARTBEAT] ~= '' then
        redis.call('SET', KEYS[4], ARGV[ARG_HEARTBEAT], 'EX', 86400)
    end
    local now = ARGV[ARG_NOW]
    if now == '' then
        local clock = redis.call('TIME')
        now = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
    end
    local limit = tonumber(ARGV[ARG_LIMIT])
    local on_time_from = '(' .. string.format('%.6f', tonumber(now) - tonumber(ARGV[ARG_ON_TIME_WINDOW]))
    local on_time = redis.pcall('ZRANGEBYSCORE', KEYS[2], on_time_from, now, 'WITHSCORES', 'LIMIT', 0, limit)
    if on_time['err'] then
        return {WRONG_TYPE, redis.call('TYPE', KEYS[2])['ok']}
    end
    local backlog = redis.call('ZRANGEBYSCORE', KEYS[2], 0, string.sub(on_time_from, 2), 'WITHSCORES',
                               'LIMIT', 0, limit)
    -- At least half a batch for the backlog, and at least one entry once a batch holds two.
    local backlog_room = limit >= 2 and math.max(1, math.floor(limit / 2)) or 0
    local backlog_taken = math.min(#backlog / 2, math.max(limit - #on_time / 2, backlog_room))
    local on_time_taken = math.min(#on_time / 2, limit - backlog_taken)
    local after = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    local reply = {}
    reply[HEAD_STATUS] = 1
    reply[HEAD_NEXT_KEY] = after[1] or false
    reply[HEAD_NEXT_SCORE] = after[2] or false
    reply[HEAD_IN_FLIGHT] = in_flight_readable and redis.call('HLEN', KEYS[3]) or 0
    reply[HEAD_MOVED] = moved
    reply[HEAD_NOW] = now
    reply[HEAD_DUE] = redis.call('ZCOUNT', KEYS[2], 0, now)  -- the backlog, for metrics: O(log N)
    local n = HEAD_SIZE
    local function add(members, count)
        for i = 1, 2 * count, 2 do
            local key = members[i]
            local kind, fields = read_entry(ARGV[ARG_PREFIX], key, 'definition', 'meta', 'status', 'run_now')
            reply[n + REC_KEY] = key
            reply[n + REC_SCORE] = members[i + 1]
            reply[n + REC_KIND] = kind
            reply[n + REC_DEFINITION] = fields[1]
            reply[n + REC_META] = fields[2]
            reply[n + REC_STATUS] = fields[3]
            reply[n + REC_RUN_NOW] = fields[4]
            n = n + REC_SIZE
        end
    end
    add(on_time, on_time_taken)
    add(backlog, backlog_taken)
    return reply
    """

    def read_due(self, now: float | None, limit: int, lock: BeatLock | None = None, heartbeat: str = "",
                 published: Sequence[Outcome] = (), repair: bool = False) -> DueBatch:
        """Entries due at ``now`` (at most ``limit``; None: by Redis's clock), renewing
        and checking ``lock``; records ``published`` first, as ``record`` does, even if
        the lock was lost. With ``repair`` (the ticking beat), an in-flight key of
        another type is moved aside."""
        keys, fence = self._fence(lock)
        set_aside = self.keys.set_aside(self.inflight_key, time.time()) if repair else ""
        args = READ_DUE_ARGS.pack(**fence, now="" if now is None else repr(now), limit=limit, heartbeat=heartbeat,
                                  history_size=self.conf.history_size, prefix=self.conf.key_prefix,
                                  set_aside=set_aside, on_time_window=ON_TIME_WINDOW)
        reply = self._read_due(keys=keys + [self.heartbeat_key], args=self._outcome_args(args, published))
        if reply == LOCK_LOST:
            return DueBatch([], lock_lost=True)
        if reply[0] == WRONG_TYPE:  # {WRONG_TYPE, the schedule's type}
            raise WrongTypeError(self.conf.schedule_key, text(reply[1]), "sorted set")
        head = dict(zip(DUE_HEADER.names, reply))
        next_score = float(head["next_score"]) if head["next_score"] is not None else None
        moved = (text(head["moved"]), set_aside) if head["moved"] else None
        return DueBatch(_due_records(reply[len(DUE_HEADER):]), head["next_key"], next_score,
                        in_flight=head["in_flight"], moved_in_flight=moved, now=float(head["now"]),
                        due=head["due"])

    # Records published runs without reading what is due (RECORD_PUBLISHED_LUA).
    # KEYS: inflight   ARGV: RECORD_ARGS, then RUN_RECORD for each run   Returns: 1
    RECORD_LUA = RECORD_PUBLISHED_LUA + RECORD_ARGS.lua() + """
    record_published(KEYS[1], tonumber(ARGV[ARG_HISTORY_SIZE]), ARG_SIZE + 1)
    return 1
    """

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Forget runs in flight and add each, as (run, outcome, when), to its entry's
        history, capped at ``redbeat_history_size``; one round trip."""
        if outcomes:
            args = RECORD_ARGS.pack(history_size=self.conf.history_size)
            self._record(keys=[self.inflight_key], args=self._outcome_args(args, outcomes))

    def _outcome_args(self, args: list, outcomes: Sequence[Outcome]) -> list:
        for outcome in outcomes:
            run = outcome[0]
            args += RUN_RECORD.pack(task_id=run.task_id, history_key=self.history_key(run.key),
                                    record=Outcome(*outcome).history_record().to_json())
        return args

    # Marks the heartbeat as stopped, but only the caller's own: a beat that
    # lost its lock must not mark the new holder's heartbeat.
    # KEYS: heartbeat   ARGV: STOP_HEARTBEAT_ARGS   Returns: 1 if it was the caller's, else 0
    STOP_HEARTBEAT_LUA = STOP_HEARTBEAT_ARGS.lua() + """
    local raw = redis.call('GET', KEYS[1])
    if not raw then return 0 end
    local ok, beat = pcall(cjson.decode, raw)
    if not ok or type(beat) ~= 'table' or beat['token'] ~= ARGV[ARG_TOKEN] then return 0 end
    beat['stopped_at'] = tonumber(ARGV[ARG_STOPPED_AT])
    redis.call('SET', KEYS[1], cjson.encode(beat), 'EX', 86400)  -- as a tick writes it
    return 1
    """

    def stop_heartbeat(self, token: str, now: float) -> bool:
        """Record in the heartbeat that the beat with ``token`` stopped; True if it was its heartbeat."""
        args = STOP_HEARTBEAT_ARGS.pack(token=token, stopped_at=repr(now))
        return bool(self._stop_heartbeat(keys=[self.heartbeat_key], args=args))


def _due_records(body: list) -> list[DueRecord]:
    """The DueRecords of READ_DUE_LUA's reply after its header."""
    at = DUE_RECORD.index
    key, score, kind = at("key"), at("score"), at("kind")
    definition, meta, status, run_now = at("definition"), at("meta"), at("status"), at("run_now")
    return [DueRecord(body[i + key], float(body[i + score]), body[i + definition], body[i + meta], body[i + status],
                      body[i + run_now], kind=text(body[i + kind]))
            for i in range(0, len(body), len(DUE_RECORD))]
