"""What workers report of the runs they execute, at ``<prefix>:worker-events:<name>``
(docs/format.rst), and the schedule-wide counts of how runs ended
(``outcomecounts.py``): written by ``worker.py`` when a worker enables it, read by
``show`` and ``list`` (the counts by the metrics and ``status``).

Each entry's list holds ``RunEvent`` records, newest first, capped at
``WORKER_EVENTS_PER_RUN`` times ``redbeat_history_size``: a run has a
``started`` event and one that ends it (and two more per retry).

A worker writes twice per run, one script each: ``claim_run`` as the run
starts (the ``started`` event, unless the run already started: docs/reliability.rst,
"Exactly once per slot"), and ``record_run_end`` as it ends (the event, the
counts and the failing set together).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis.cluster import RedisCluster

from .config import RedBeatConfig
from .lua import ArgLayout
from .outcomecounts import DUPLICATE, DURATION_COUNT, DURATION_SUM, duration_bucket, outcome_field
from .overlap import CURRENT_WINDOW, current_event
from .records import RunEvent, RunEventKind
from .stages import text
from .storepart import StorePart, WrongTypeError

__all__ = ["WorkerEvents", "RunClaim", "WORKER_EVENTS_PER_RUN", "NEVER_RERUN", "task_id_prefix"]

WORKER_EVENTS_PER_RUN = 4
# ``rerun_after`` of a claim that never lets an interrupted run start again.
NEVER_RERUN = -1.0

# claim_run's ARGV (Lua locals C_...).
CLAIM_ARGS = ArgLayout("C_", ("task_id", "retries", "prefix", "event", "cap", "now", "rerun_after"), first=1)
# record_run_end's ARGV (Lua locals E_...).
END_ARGS = ArgLayout("E_", ("event", "cap", "outcome", "duration", "bucket", "entry", "failing", "at"), first=1)
# What record_run_end does with the entry in the failing set.
FAILING_ADD, FAILING_REMOVE, FAILING_KEEP = "add", "remove", ""


def task_id_prefix(task_id: str) -> str:
    """How ``RunEvent.to_json`` of a run of ``task_id`` starts (its first field): the claim
    decodes only the events that start so."""
    return '{"task_id": ' + json.dumps(task_id) + ","


@dataclass(frozen=True)
class RunClaim:
    """The answer to a claim: ``granted`` (execute the run), else ``earlier`` is the
    ``started`` event of the execution that makes this delivery a duplicate."""

    granted: bool
    earlier: RunEvent | None = None


class WorkerEvents(StorePart):
    """The worker-events lists of a schedule's entries, and the workers' counts."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._claim_run = self.client.register_script(self.CLAIM_RUN_LUA)
        self._record_run_end = self.client.register_script(self.RECORD_RUN_END_LUA)

    # Claims the start of a run: a ``started`` event of this task id and
    # retry count in the entry's list makes it a duplicate (counted, nothing
    # pushed: a flood of duplicates must not trim the start away), unless a
    # ``rejected`` event of it is newer (the task raised Reject: it did not
    # do its work, and requeue=True asks for this delivery). Only with
    # ``rerun_after`` >= 0 may a run start again: when no event ends its
    # newest start and that start is at least ``rerun_after`` seconds old (a
    # run whose worker died). Else the ``started`` event is pushed and the
    # list capped. The counts are pcall'ed: a count that cannot be written
    # (a key of another type) must not decide whether a run executes.
    # A list key of another type (someone else's value) claims nothing.
    # KEYS: worker events, run outcomes   ARGV: CLAIM_ARGS
    # Returns: 1 (claimed), the earlier ``started`` event (a duplicate), or
    # {type} of a worker-events key that is no list
    CLAIM_RUN_LUA = CLAIM_ARGS.lua() + f"""
    local kind = redis.call('TYPE', KEYS[1])['ok']
    if kind ~= 'list' and kind ~= 'none' then return {{kind}} end
    local prefix, retries = ARGV[C_PREFIX], tonumber(ARGV[C_RETRIES])
    local events = redis.call('LRANGE', KEYS[1], 0, -1)
    local earlier, earlier_at, ended = nil, 0, false
    for i = 1, #events do
        if string.sub(events[i], 1, #prefix) == prefix then
            local ok, event = pcall(cjson.decode, events[i])
            if ok and type(event) == 'table' and event['task_id'] == ARGV[C_TASK_ID]
                    and (tonumber(event['retries']) or 0) == retries then
                if event['event'] == '{RunEventKind.REJECTED.value}' then
                    break  -- it refused itself (Reject, requeue=True redelivers it): a delivery again is its own
                end
                if event['event'] == '{RunEventKind.STARTED.value}' then
                    earlier, earlier_at = events[i], tonumber(event['at']) or 0
                    break
                end
                ended = true  -- an end of this attempt newer than its newest start
            end
        end
    end
    local rerun_after = tonumber(ARGV[C_RERUN_AFTER])
    if earlier and (ended or rerun_after < 0 or tonumber(ARGV[C_NOW]) - earlier_at < rerun_after) then
        redis.pcall('HINCRBY', KEYS[2], '{outcome_field(DUPLICATE)}', 1)
        return earlier
    end
    local size = tonumber(ARGV[C_CAP])
    redis.call('LPUSH', KEYS[1], ARGV[C_EVENT])
    redis.call('LTRIM', KEYS[1], 0, size - 1)
    return 1
    """

    # Records the end of a run: its event pushed and the list capped (size
    # 0: no list), its outcome and duration counted, and the entry added to
    # or removed from the failing set. Each write is pcall'ed: one key of
    # another type (someone else's data) loses only its own write.
    # KEYS: worker events, run outcomes, failing   ARGV: END_ARGS
    # Returns: 1, or the type of the worker-events key when it is no list
    RECORD_RUN_END_LUA = END_ARGS.lua() + f"""
    local size, pushed = tonumber(ARGV[E_CAP]), true
    if size > 0 then
        pushed = type(redis.pcall('LPUSH', KEYS[1], ARGV[E_EVENT])) == 'number'
        if pushed then redis.call('LTRIM', KEYS[1], 0, size - 1) end
    end
    redis.pcall('HINCRBY', KEYS[2], ARGV[E_OUTCOME], 1)
    if ARGV[E_DURATION] ~= '' then
        redis.pcall('HINCRBY', KEYS[2], '{DURATION_COUNT}', 1)
        redis.pcall('HINCRBYFLOAT', KEYS[2], '{DURATION_SUM}', ARGV[E_DURATION])
        if ARGV[E_BUCKET] ~= '' then
            redis.pcall('HINCRBY', KEYS[2], ARGV[E_BUCKET], 1)
        end
    end
    if ARGV[E_FAILING] == '{FAILING_ADD}' then
        redis.pcall('ZADD', KEYS[3], ARGV[E_AT], ARGV[E_ENTRY])
    elseif ARGV[E_FAILING] == '{FAILING_REMOVE}' then
        redis.pcall('ZREM', KEYS[3], ARGV[E_ENTRY])
    end
    if not pushed then return redis.call('TYPE', KEYS[1])['ok'] end
    return 1
    """

    @property
    def worker_events_size(self) -> int:
        """How many events an entry's list keeps (0: none are recorded, as no history is)."""
        return WORKER_EVENTS_PER_RUN * self.conf.history_size

    def worker_events_key(self, key: str) -> bytes:
        """The list of the entry under ``key`` (given as ``admin.key_text``: any bytes name their key)."""
        return self.keys.worker_events(key).encode("utf-8", "surrogateescape")

    def claim_run(self, key: str, started: RunEvent) -> RunClaim:
        """Claim the start of the run ``started`` is the event of, for the entry under
        ``key``: one round trip. With no list kept (``redbeat_history_size = 0``) there is
        nothing to claim in: granted, without a call. ``redbeat_rerun_interrupted_after``
        says when a run whose worker died may start again. WrongTypeError if the entry's
        list is of another type (nothing claimed)."""
        size = self.worker_events_size
        if size <= 0:
            return RunClaim(True)
        rerun_after = self.conf.rerun_interrupted_after
        rerun_after = NEVER_RERUN if rerun_after is None else rerun_after
        reply = self._claim_run(keys=[self.worker_events_key(key), self.keys.run_outcomes], args=CLAIM_ARGS.pack(
            task_id=started.task_id, retries=started.retries, prefix=task_id_prefix(started.task_id),
            event=started.to_json(), cap=size, now=repr(started.at), rerun_after=repr(float(rerun_after))))
        if isinstance(reply, list):
            raise WrongTypeError(text(self.worker_events_key(key)), text(reply[0]), "list")
        if isinstance(reply, bytes):
            return RunClaim(False, RunEvent.from_json(reply))
        return RunClaim(True)

    def record_run_end(self, key: str, ended: RunEvent) -> None:
        """Record ``ended``, the event that ends (or puts off) a run of the entry under
        ``key``, with the counts and the failing set: one round trip. WrongTypeError if
        the entry's list is of another type (the counts are written all the same)."""
        duration = "" if ended.duration is None else repr(ended.duration)
        failing = {RunEventKind.FAILED.value: FAILING_ADD, RunEventKind.SUCCEEDED.value: FAILING_REMOVE}
        events_key = self.worker_events_key(key)
        reply = self._record_run_end(
            keys=[events_key, self.keys.run_outcomes, self.keys.failing],
            args=END_ARGS.pack(
                event=ended.to_json(), cap=self.worker_events_size, outcome=outcome_field(ended.event),
                duration=duration, bucket="" if ended.duration is None else duration_bucket(ended.duration) or "",
                entry=key.encode("utf-8", "surrogateescape"),
                failing=failing.get(ended.event, FAILING_KEEP), at=repr(ended.at)))
        if isinstance(reply, bytes):  # the event is lost, the counts are not
            raise WrongTypeError(text(events_key), text(reply), "list")

    def worker_events(self, key: str) -> list[bytes]:
        """The raw events of the entry under ``key``, newest first (ResponseError if its
        list is of another type)."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        return cast("list[bytes]", self.client.lrange(self.worker_events_key(key), 0, -1))

    def last_worker_events(self, keys: Sequence[str]) -> list[bytes | None]:
        """The current raw event of each entry (``overlap.current_event``: the newest, but for
        a late ``retried``; None: none, or a list of another type); one round trip however
        many keys."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(self.worker_events_key(key), 0, CURRENT_WINDOW - 1)
        return [current_event(reply) if isinstance(reply, list) and reply else None
                for reply in pipe.execute(raise_on_error=False)]
