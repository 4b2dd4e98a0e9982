"""The decide stage of a tick: what to do with one due entry, from what was read alone.

A ``DueRecord`` goes in, a ``Decision`` comes out (see ``stages``):
no Redis, no broker, so every action can be tested with a fixed clock, as
``planning.plan_runs`` is. The scheduler claims the decisions in one script.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from celery.utils.log import get_logger

from .decoder import meta_json
from .entry import RedBeatSchedulerEntry, bounded, definition_digest, entry_run_bound, overlap_policy, score_of
from .keys import KeyNames
from .logfields import log_fields
from .overlap import WAITING_POLL, Overlap, OverlapPlan, blocker, readable_event, settle
from .planning import Plan, Policy, latest_start
from .printable import printable
from .records import MAX_TIMESTAMP, NEVER, InFlight, Outcome, OutcomeKind, Parked, Status
from .runs import task_id_for
from .schedules import crontab
from .stages import Action, Decision, DueRecord

__all__ = ["Decider", "Definitions", "bounded", "requested_at", "DEFINITION_CACHE_SIZE"]

logger = get_logger("celery.beat")


# Decoded crontab definitions kept by a beat's decider: an entry's definition rarely
# changes between its runs, and expanding a crontab's five fields is most of deciding it.
# Keyed by the definition's bytes, so an edit is always seen. Bounded in number
# and in size: a definition longer than MAX_CACHED_DEFINITION (large args or
# kwargs) is decoded each time, so a schedule of any size costs at most about
# 8 MB here (a crontab definition decoded is about 5.5 kB, plus its bytes).
DEFINITION_CACHE_SIZE = 1024
MAX_CACHED_DEFINITION = 2048
# Only crontabs: other schedules decode in a few microseconds, less than keeping
# a copy costs on a miss (a drain of distinct entries misses every time), and an
# rrule without dtstart starts when it is decoded, so it must be decoded each time.
_CACHED_SCHEDULES = (crontab,)


class Definitions:
    """Decoded definitions by (entry class, definition bytes), each given out as a fresh
    copy; the least recently used goes first when it is full."""

    def __init__(self, size: int = DEFINITION_CACHE_SIZE) -> None:
        self.size = size
        self._decoded: dict[tuple[Any, bytes], tuple[dict, str]] = {}

    def decode(self, entry_class: Any, definition: bytes) -> tuple[dict, str]:
        """``entry_class.decode_definition`` of ``definition``, and its digest."""
        cached = self._decoded.pop((entry_class, definition), None)
        if cached is not None:
            self._decoded[(entry_class, definition)] = cached  # the most recently used now (a dict keeps order)
            fields, digest = cached
            # The entry and whoever publishes it may change its containers: never the cached ones.
            return {name: _fresh(value) for name, value in fields.items()}, digest
        fields = entry_class.decode_definition(definition)
        digest = definition_digest(definition)
        if isinstance(fields["schedule"], _CACHED_SCHEDULES) and self.size and len(definition) <= MAX_CACHED_DEFINITION:
            if len(self._decoded) >= self.size:
                self._decoded.pop(next(iter(self._decoded)), None)  # the least recently used
            self._decoded[(entry_class, definition)] = ({name: _fresh(value) for name, value in fields.items()},
                                                        digest)
        return fields, digest


def _fresh(value: Any) -> Any:
    """A copy of the JSON arrays and objects in ``value``; what else JSON decodes to
    (numbers, text, datetimes, schedules) beat and Celery leave as it is (Celery sets
    a schedule's app: the decider's, every time)."""
    if isinstance(value, dict):
        return {name: _fresh(item) for name, item in value.items()} if value else {}
    if isinstance(value, list):
        return [_fresh(item) for item in value] if value else []
    return value


@dataclass(slots=True)
class _DecodedEntry:
    """A due entry as decoded, with what deciding it needs more than once."""

    key: str
    entry: RedBeatSchedulerEntry
    old: Status  # its status as read
    digest: str  # of its definition as read
    policy: Policy
    plan: Plan


class Decider:
    """Decides for one beat: its app and entry class, its token (written into
    the runs it claims) and its lock timeout (when a claimed run may be retried).
    It keeps the crontab definitions it decoded (``definitions``) for the next ticks."""

    def __init__(self, app: Celery, entry_class: Any, keys: KeyNames, token: str, lock_timeout: float,
                 definitions: Definitions | None = None) -> None:
        self.app = app
        self.entry_class = entry_class
        self.keys = keys
        self.token = token
        self.lock_timeout = lock_timeout
        self.definitions = Definitions() if definitions is None else definitions

    def decide(self, record: DueRecord, now: datetime, newest_event: bytes | None = None) -> Decision:
        """What to do with one due entry, from its stored state alone (and the newest event the
        workers reported of its runs, read only for entries that may set an overlap policy)."""
        if record.kind != "hash":
            return self.drop(record)
        if record.definition is None:
            return self.park(record, "hash has no 'definition' field")
        try:
            key = record.key.decode()
        except UnicodeDecodeError:
            # Its task ids, history and runs in flight are keyed by its name as
            # text: two such names could share them. Renamed, it runs.
            return self.park(record, "its key is not valid UTF-8: rename it (RENAME, then ZADD the new name)")
        try:
            due = self.load(record, key, now)
        except Exception as exc:  # any bad input must cost one entry, never the beat
            return self.park(record, str(exc) or type(exc).__name__)
        plan = due.plan
        if not due.entry.enabled:
            # Paused: it wakes at its regular slots and runs nothing, so that
            # resuming it keeps its cadence (missed slots follow its catch-up policy).
            return Decision(record, Action.MOVE, score=score_of(plan.fire_at))
        # A run-now request is served by the run that is due anyway, if there is one.
        requested = requested_at(record.run_now, now) if record.run_now is not None and not plan.runs else None
        ending = plan.finished and bounded(due.entry)
        if not plan.runs and requested is None and not plan.missed and not ending and due.old.waiting_slot is None:
            return self.wait(record, due)
        return self.dispatch(record, due, requested, ending, now, newest_event)

    def load(self, record: DueRecord, key: str, now: datetime) -> _DecodedEntry:
        """The entry of ``record`` and its plan at ``now``; raises on bad input."""
        assert record.definition is not None  # checked by decide
        old = Status.from_json(record.status)
        fields, digest = self.definitions.decode(self.entry_class, record.definition)
        entry = self.entry_class.from_stored(record.definition, record.meta, app=self.app, key=key, status=old,
                                             fields=fields)
        if entry.last_run_at is None and entry.next_slot is None and record.score > 0:
            # Never run: due at the score its writer gave it (0 means now).
            entry.next_slot = datetime.fromtimestamp(record.score, timezone.utc)
        policy = entry.policy()
        return _DecodedEntry(key, entry, old, digest, policy, entry.plan(now, policy))

    def wait(self, record: DueRecord, due: _DecodedEntry) -> Decision:
        """Not due yet. Record the slot it waits for: the score is a fire time
        (jitter included), and must not be taken for a slot again."""
        status = None
        if due.plan.next_slot is not None and due.plan.next_slot != due.entry.next_slot:
            status = due.old.to_json(next_slot=due.plan.next_slot, definition=due.digest)
        return Decision(record, Action.MOVE, score=score_of(due.plan.fire_at), status=status)

    def dispatch(self, record: DueRecord, due: _DecodedEntry, requested: float | None, ending: bool,
                 now: datetime, newest_event: bytes | None = None) -> Decision:
        """Claim the runs due (or asked for) that the overlap policy lets start, record the
        slots missed, and apply ``on_finish`` if the entry is ending."""
        entry, plan, old = due.entry, due.plan, due.old
        now_ts = now.timestamp()
        settled, skipped = self.overlap(due, newest_event, now_ts)
        runs = self.runs_to_claim(due.key, due.policy, settled.runs, requested, now_ts)
        last_missed = max([moment.timestamp() for moment in ([plan.last_missed] if plan.last_missed else [])]
                          + [outcome.run.scheduled for outcome in skipped], default=old.last_missed_at)
        status = old.to_json(
            next_slot=plan.next_slot,
            definition=due.digest,
            last_dispatched_at=now_ts if runs else old.last_dispatched_at,
            missed=old.missed + plan.missed + len(skipped),
            last_missed_at=last_missed,
            waiting_slot=settled.waiting.timestamp() if settled.waiting is not None else None,
        )
        if plan.missed:
            logger.warning("beat: %s missed %d slot(s) (catch-up %s)", printable(entry.name), plan.missed,
                           printable(due.policy.catch_up),
                           extra=log_fields(entry, key=due.key, now=now_ts, count=plan.missed,
                                            slot=plan.last_missed.timestamp() if plan.last_missed else None))
        meta = meta_json(max(settled.runs) if settled.runs else entry.last_run_at, entry.total_run_count + len(runs))
        score = score_of(plan.fire_at)
        if settled.waiting is not None:
            score = now_ts + WAITING_POLL if score < 0 else min(score, now_ts + WAITING_POLL)
        definition = None
        if ending and settled.waiting is None:
            # Its last slot ran now, or it ended without one (a run-now took
            # its last run, its end_at passed): on_finish applies either way.
            if due.policy.on_finish == "delete" and not runs:
                # (unless a run is still in flight: see finishing.OnFinish.hold_deletes)
                return Decision(record, Action.DELETE)
            if due.policy.on_finish == "disable":
                entry.enabled = False  # done: kept, with its history, for people to see
                definition = entry.definition_json()
        return Decision(record, Action.RUN if runs else Action.MOVE, score=score, meta=meta,
                        status=status, definition=definition, runs=runs, missed=plan.missed, entry=entry,
                        skipped=skipped)

    def overlap(self, due: _DecodedEntry, newest_event: bytes | None, now: float) -> tuple[OverlapPlan,
                                                                                         tuple[Outcome, ...]]:
        """The slots due (and the one waiting, if any) as the entry's overlap policy settles
        them, with the history records of those it skipped."""
        entry, old = due.entry, due.old
        waiting = None if old.waiting_slot is None else datetime.fromtimestamp(old.waiting_slot, timezone.utc)
        policy = overlap_policy(entry)
        if policy is Overlap.ALLOW:
            return settle(policy, None, waiting, due.plan.runs), ()
        busy = blocker(readable_event(newest_event), None if entry.last_run_at is None else task_id_for(
            due.key, entry.last_run_at.timestamp()), old.last_dispatched_at, entry_run_bound(entry), now)
        settled = settle(policy, busy, waiting, due.plan.runs)
        reason = busy.reason() if busy is not None else ""
        return settled, tuple(
            Outcome(InFlight(task_id_for(due.key, at), due.key, at, now, self.token, now), OutcomeKind.MISSED, now,
                    reason)
            for at in (slot.timestamp() for slot in settled.skipped))

    def runs_to_claim(self, key: str, policy: Policy, slots: list[datetime], requested: float | None,
                      now: float) -> tuple[InFlight, ...]:
        """Runs of ``slots``, each to reach the broker by its starting deadline, and of a
        run-now request made at ``requested`` (no slot, so no deadline)."""
        planned = [(slot.timestamp(), latest_start(key, slot, policy), False) for slot in slots]
        if requested is not None:
            planned.append((requested, None, True))
        return tuple(
            InFlight(task_id=task_id_for(key, at), key=key, scheduled=at, claimed_at=now, token=self.token,
                     retry_at=now + self.lock_timeout, run_now=run_now, publish_by=deadline)
            for at, deadline, run_now in planned
        )

    def drop(self, record: DueRecord) -> Decision:
        """Remove a member that is no entry of ours from the schedule (its key, if any, stays)."""
        if record.kind == "outside":
            logger.warning(
                "beat: removing %s from the schedule: it is not an entry key under the prefix %s "
                "(beat never reads, writes or runs keys of other applications, nor its own %s keys)",
                printable(record.key_text), printable(self.keys.prefix),
                printable(self.keys.own + "..."), extra=log_fields(key=record.key_text),
            )
        else:
            what = "no key" if record.kind == "none" else f"a {record.kind}, not an entry hash,"
            logger.warning(
                "beat: removing %s from the schedule: there is %s under that key "
                "(members must be full keys such as %s; the key itself is left alone)",
                printable(record.key_text), what, printable(self.keys.entry("<name>")),
                extra=log_fields(key=record.key_text),
            )
        return Decision(record, Action.DROP)

    def park(self, record: DueRecord, reason: str) -> Decision:
        """Set the entry aside with ``reason``, and say so in one error line."""
        logger.error(
            "beat: parked entry %s, it will not run until fixed: %s "
            "(write a correct definition and ZADD it back to the schedule)",
            printable(record.key_text), printable(reason), extra=log_fields(key=record.key_text),
        )
        return Decision(record, Action.PARK, score=NEVER, reason=Parked(reason, time.time()).to_json())


def requested_at(raw: bytes, now: datetime) -> float:
    """When a run-now request was made (its task id derives from it): the field's
    value if it is UNIX seconds, else now (``HSET key run_now 1`` is fine)."""
    try:
        requested = float(raw)
    except ValueError:
        return now.timestamp()
    return requested if 1e9 <= requested < MAX_TIMESTAMP else now.timestamp()
