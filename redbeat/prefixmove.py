"""Moving a schedule from one key prefix to another (``redbeat move-prefix``).

Made for Redis Cluster: celery-redbeat 2.x stored schedules under
``redbeat:``, whose keys fall in many hash slots, and RedBeat's scripts need
them in one (a hash-tag prefix such as ``{redbeat}:``). So the move runs one
single-key command at a time, never a script or a transaction over several
keys, and uses only commands of the ACL list of docs/configuration.rst.

It is safe to run again: each entry is written at the destination and read
back before its source keys are deleted, and the schedule member goes last,
so an interrupted move leaves every entry either whole at the source, whole
at both (the next run finishes it), or moved. The decision for one entry
(``decide_entry``) is a pure function of what both places hold.

Each entry's run history and worker events move with it; the workers'
schedule-wide keys (``outcomecounts.py``) move after the entries: the
failing set's members rewritten to the new prefix, and the outcome counts.
Entries that ``rollback-to-2`` holds out of the schedule do not move (the
move reads the schedule): the plan counts them, and says to undo the
rollback first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster

from .keys import KeyNames
from .lock import BeatLock
from .records import Heartbeat, InFlight
from .stages import text

__all__ = ["MoveAction", "EntryMove", "MovePlan", "PrefixMover", "MoveError", "decide_entry"]

# Beat writes its heartbeat at every tick and ticks at least every
# beat_max_loop_interval (300 s by default, written in the heartbeat): a
# heartbeat younger than two of those says a beat may still be ticking.
HEARTBEAT_FRESH_INTERVALS = 2
DEFAULT_MAX_INTERVAL = 300.0
# The source lock's time-to-live while the move holds it; renewed before each
# entry, so a move that is killed frees it for beat within this time.
MOVE_LOCK_TIMEOUT = 60.0

# A hash as the bytes client reads it (field names are bytes; Any: redis-py types mapping keys invariantly).
Fields = dict[Any, bytes]


class MoveError(RuntimeError):
    """The move cannot go on; the message says why, in one line."""


class MoveAction(str, Enum):
    COPY = "copy"          # not at the destination yet
    REPLACE = "replace"    # the destination's copy is older (or --force): written over
    DONE = "done"          # already at the destination: only the source is left to delete
    CONFLICT = "conflict"  # the destination holds another entry of that name: left alone
    SKIP = "skip"          # not an entry RedBeat can move: left where it is

    def __str__(self) -> str:
        return self.value


@dataclass
class EntryMove:
    """What becomes of one member of the source schedule."""

    member: str
    target: str
    score: float
    action: MoveAction
    reason: str = ""
    static: bool = False
    history: int = 0


@dataclass
class MovePlan:
    """Everything the move would do, read from both prefixes."""

    source: KeyNames
    target: KeyNames
    lock_key: str
    entries: list[EntryMove] = field(default_factory=list)
    statics: set[str] = field(default_factory=set)
    in_flight: list[InFlight] = field(default_factory=list)
    lock_holder: str | None = None
    heartbeat_age: float | None = None  # seconds since the last tick of a beat still running
    failing: int = 0  # members of the source's failing set
    outcome_counts: bool = False  # whether the source has the workers' outcome counts
    held_for_3: int = 0  # entries rollback-to-2 holds out of the source's schedule: not moved

    @property
    def beat_running(self) -> bool:
        return self.lock_holder is not None or self.heartbeat_age is not None

    def count(self, *actions: MoveAction) -> int:
        return sum(entry.action in actions for entry in self.entries)


def run_count(fields: Fields) -> int:
    """``meta.total_run_count`` (0 when there is none; -1 when meta cannot be read)."""
    raw = fields.get(b"meta")
    if raw is None:
        return 0
    try:
        count = json.loads(raw).get("total_run_count", 0)
    except (ValueError, AttributeError):
        return -1
    return count if isinstance(count, int) and not isinstance(count, bool) else -1


def decide_entry(source: Fields | None, target: Fields | None, target_type: str, force: bool) -> tuple[MoveAction, str]:
    """What to do with one entry, from its hash at the source and at the
    destination (None: absent) and the type of the destination key."""
    if target_type not in ("hash", "none"):
        return MoveAction.CONFLICT, f"the destination key holds a {target_type}, not an entry"
    if source is None:
        if target is not None:
            return MoveAction.DONE, "moved by an earlier run"
        return MoveAction.SKIP, "no hash at the source (an orphan member)"
    if b"definition" not in source:
        return MoveAction.SKIP, "the hash has no definition: not an entry"
    if target is None:
        return MoveAction.COPY, ""
    if target == source:
        return MoveAction.DONE, "already at the destination"
    if target.get(b"definition") == source[b"definition"]:
        # Moved before, then run by a beat at the destination (keep it), or
        # written there fresh by a beat's static entries (the source knows more).
        if run_count(target) >= run_count(source):
            return MoveAction.DONE, "at the destination with as many runs or more: kept"
        return MoveAction.REPLACE, "at the destination with fewer runs"
    if force:
        return MoveAction.REPLACE, "another entry of that name at the destination (--force)"
    return MoveAction.CONFLICT, "another entry of that name is at the destination (--force writes over it)"


MOVED = (MoveAction.COPY, MoveAction.REPLACE, MoveAction.DONE)


@dataclass
class MoveResult:
    """What an applied move did."""

    plan: MovePlan
    moved: int = 0
    in_flight: int = 0
    failing: int = 0


class PrefixMover:
    """Reads and moves one schedule from ``source`` to ``target``, key by key."""

    def __init__(self, client: Redis | RedisCluster, source: KeyNames, target: KeyNames, lock_key: str) -> None:
        self.client = client
        self.source = source
        self.target = target
        self.lock_key = lock_key

    # -- reading -----------------------------------------------------------------------------

    def plan(self, force: bool = False, own_token: str | None = None) -> MovePlan:
        """What a move would do now (``own_token``: the lock the move holds is
        not a beat's). Raises MoveError when a key of either schedule holds the
        wrong type (nothing could be moved safely)."""
        self._check_own_types()
        plan = MovePlan(self.source, self.target, self.lock_key)
        plan.statics = {text(name) for name in self.client.smembers(self.source.statics)}
        for raw_member, score in self.client.zscan_iter(self.source.schedule):
            plan.entries.append(self._entry_move(raw_member, score, plan.statics, force))
        plan.entries.sort(key=lambda entry: entry.member)
        plan.in_flight = self._in_flight()
        lock = self.client.get(self.lock_key)
        plan.lock_holder = text(lock) if lock is not None and text(lock) != own_token else None
        plan.heartbeat_age = self._heartbeat_age()
        plan.failing = self.client.zcard(self.source.failing)
        plan.outcome_counts = bool(self.client.exists(self.source.run_outcomes))
        plan.held_for_3 = self.client.zcard(self.source.held_for_3)
        return plan

    def _check_own_types(self) -> None:
        own = [(names.schedule, "zset") for names in (self.source, self.target)]
        own += [(names.statics, "set") for names in (self.source, self.target)]
        own += [(names.inflight, "hash") for names in (self.source, self.target)]
        own += [(names.run_outcomes, "hash") for names in (self.source, self.target)]
        own += [(names.failing, "zset") for names in (self.source, self.target)]
        own += [(self.source.held_for_3, "zset")]
        for key, expected in [*own, (self.lock_key, "string")]:
            found = text(self.client.type(key))
            if found not in (expected, "none"):
                raise MoveError(f"{key} holds a {found}, not a {expected}: fix it first (RENAME it aside, "
                                f"or DEL it if nothing in it matters)")

    def _entry_move(self, raw_member: bytes, score: float, statics: set[str], force: bool) -> EntryMove:
        try:
            member = raw_member.decode()
        except UnicodeDecodeError:
            return EntryMove(repr(raw_member), "", score, MoveAction.SKIP, "the member is not UTF-8 text")
        if not self.source.is_entry_key(member):
            return EntryMove(member, "", score, MoveAction.SKIP, "outside the source prefix: not RedBeat's")
        name = member[len(self.source.prefix):]
        target = self.target.entry(name)
        source_type, source_fields = self._read_hash(member)
        if source_type not in ("hash", "none"):
            return EntryMove(member, target, score, MoveAction.SKIP, f"holds a {source_type}, not an entry")
        target_type, target_fields = self._read_hash(target)
        action, reason = decide_entry(source_fields, target_fields, target_type, force)
        history = self.client.lrange(self.source.history(member), 0, -1) if source_fields else []
        return EntryMove(member, target, score, action, reason, static=name in statics, history=len(history))

    def _read_hash(self, key: str) -> tuple[str, Fields | None]:
        """The type of ``key`` and, if it is a hash, its fields."""
        kind = text(self.client.type(key))
        return kind, self._hgetall(key) if kind == "hash" else None

    def _hgetall(self, key: str) -> Fields:
        # The client answers bytes (decode_responses=False): values are copied exactly.
        return self.client.hgetall(key)  # type: ignore[return-value]

    def _in_flight(self) -> list[InFlight]:
        """The source's runs in flight whose entry is under the source prefix."""
        runs = []
        for raw in self.client.hgetall(self.source.inflight).values():
            try:
                run = InFlight.from_json(raw)
            except (ValueError, TypeError, KeyError):
                continue  # beat itself gives an unreadable record up; it is not moved
            if self.source.is_entry_key(run.key):
                runs.append(run)
        return sorted(runs, key=lambda run: run.task_id)

    def _heartbeat_age(self) -> float | None:
        """Seconds since the last tick, if a beat wrote its heartbeat lately and has not stopped."""
        raw = self.client.get(self.source.heartbeat)
        if raw is None:
            return None
        try:
            beat, _ = Heartbeat.from_json(raw)
        except ValueError:
            return None
        seconds, micros = self.client.time()
        age = seconds + micros / 1e6 - beat.last_tick
        fresh = HEARTBEAT_FRESH_INTERVALS * (beat.max_interval or DEFAULT_MAX_INTERVAL)
        return age if beat.stopped_at is None and age < fresh else None

    # -- moving ------------------------------------------------------------------------------

    def apply(self, force: bool = False) -> MoveResult:
        """Move the schedule, holding the source lock throughout. Raises
        MoveError, leaving everything whole, when a beat holds the lock or
        ticks (unless ``force``: its lock is taken from it, which fences it)."""
        lock = BeatLock(self.client, self.lock_key, MOVE_LOCK_TIMEOUT)
        if not lock.acquire():
            if not force:
                raise MoveError(f"a beat holds the lock {self.lock_key}: stop it first "
                                f"(or --force to take the lock from it, which stops it dispatching)")
            self.client.set(self.lock_key, lock.token, px=lock.ttl_ms)
        try:
            plan = self.plan(force, own_token=lock.token)
            conflicts = [entry.member for entry in plan.entries if entry.action is MoveAction.CONFLICT]
            if conflicts:
                raise MoveError(f"{len(conflicts)} conflicting entries, nothing moved: "
                                f"{', '.join(conflicts[:5])} (see the dry run)")
            if plan.heartbeat_age is not None and not force:
                raise MoveError(f"a beat ticked {plan.heartbeat_age:.0f}s ago under {self.source.prefix!r}: "
                                f"stop it first (or --force if it is stopped for good)")
            result = MoveResult(plan)
            for entry in plan.entries:
                if entry.action in MOVED:
                    if not lock.renew():
                        raise MoveError(f"lost the lock {self.lock_key} to a beat during the move: stop it, "
                                        f"then run the move again to finish")
                    self._move_entry(entry)
                    result.moved += 1
            result.in_flight = self._move_in_flight()
            self._move_statics(plan.statics)
            result.failing = self._move_failing()
            self._move_outcome_counts()
            return result
        finally:
            lock.release()

    def _move_entry(self, entry: EntryMove) -> None:
        """Write one entry at the destination, check it, then delete it at the source."""
        fields = self._hgetall(entry.member)
        if fields and entry.action is not MoveAction.DONE:
            if entry.action is MoveAction.REPLACE:
                self.client.delete(entry.target)
            self.client.hset(entry.target, mapping=fields)
            self._verify(self.client.hgetall(entry.target) == fields, entry.target)
        # Already there, its score may have been moved since by a beat at the destination.
        self.client.zadd(self.target.schedule, {entry.target: entry.score}, nx=entry.action is MoveAction.DONE)
        self._verify(self.client.zscore(self.target.schedule, entry.target) is not None, self.target.schedule)
        if entry.static:
            self.client.sadd(self.target.statics, entry.target[len(self.target.prefix):])
        self._move_list(self.source.history(entry.member), self.target.history(entry.target))
        self._move_list(self.source.worker_events(entry.member), self.target.worker_events(entry.target))
        # The member goes last: while it is there, a run of the move sees the entry.
        self.client.delete(entry.member)
        self.client.zrem(self.source.schedule, entry.member)

    def _move_list(self, source_key: str, target_key: str) -> None:
        """Copy an entry's run history or worker events unless the destination has a list of its own
        (newer: written there since), then delete the source's. A key of another type at either
        end is someone else's value: left where it is, the entry moves without its list."""
        if text(self.client.type(source_key)) != "list" or text(self.client.type(target_key)) not in ("list", "none"):
            return
        records = self.client.lrange(source_key, 0, -1)
        if records and not self.client.lrange(target_key, 0, 0):
            # LPUSH puts each record at the head: push the oldest first to keep newest-first order.
            self.client.lpush(target_key, *reversed(records))
            self._verify(self.client.lrange(target_key, 0, -1) == records, target_key)
        self.client.delete(source_key)

    def _move_in_flight(self) -> int:
        """Move the runs in flight of entries now at the destination, task ids kept (a
        beat there publishes them as it would its own); returns how many."""
        moved = 0
        for run in self._in_flight():
            target_key = self.target.entry(run.key[len(self.source.prefix):])
            if self.client.exists(run.key) or not self.client.exists(target_key):
                continue  # its entry was not moved: the run stays with it
            run.key = target_key
            self.client.hset(self.target.inflight, run.task_id, run.to_json())
            self._verify(self.client.hget(self.target.inflight, run.task_id) == run.to_json().encode(),
                         self.target.inflight)
            self.client.hdel(self.source.inflight, run.task_id)
            moved += 1
        return moved

    def _move_failing(self) -> int:
        """Move the failing set's members whose entry is no longer at the source (moved, or
        removed before: readers skip those), rewritten to the destination prefix; a member
        already there keeps its score (a failure reported there since). Returns how many."""
        moved = 0
        for raw_member, score in list(self.client.zscan_iter(self.source.failing)):
            try:
                member = raw_member.decode()
            except UnicodeDecodeError:
                continue  # no entry of the move's: its members are UTF-8 text
            if not self.source.is_entry_key(member) or self.client.exists(raw_member):
                continue  # not an entry key of the source, or its entry was not moved
            target_key = self.target.entry(member[len(self.source.prefix):])
            self.client.zadd(self.target.failing, {target_key: score}, nx=True)
            self._verify(self.client.zscore(self.target.failing, target_key) is not None, self.target.failing)
            self.client.zrem(self.source.failing, raw_member)
            moved += 1
        return moved

    def _move_outcome_counts(self) -> None:
        """Copy the workers' outcome counts unless the destination has counts of its own
        (workers there counted since: to Prometheus, a counter reset), then delete the source's."""
        fields = self._hgetall(self.source.run_outcomes)
        if fields and not self.client.exists(self.target.run_outcomes):
            self.client.hset(self.target.run_outcomes, mapping=fields)
            self._verify(self._hgetall(self.target.run_outcomes) == fields, self.target.run_outcomes)
        self.client.delete(self.source.run_outcomes)

    def _move_statics(self, names: Iterable[str]) -> None:
        """Delete the source's static names once none of their entries is left there."""
        if not any(self.client.exists(self.source.entry(name)) for name in names):
            self.client.delete(self.source.statics)

    def _verify(self, written: bool, key: str) -> None:
        if not written:
            raise MoveError(f"{key} does not read back as written (another program writing there?): "
                            f"the source is left in place; run the move again")

