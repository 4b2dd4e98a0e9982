"""Which slots of a due entry run now: catch-up, deadlines, windows, run limits, jitter.

Pure functions of an entry's schedule, its policy, what it last did and the
clock: the scheduler, ``RedBeatSchedulerEntry.preview`` and the tests all ask
here, so the preview is exactly what beat will do.

Terms: a *slot* is an instant the schedule names; its *fire time* is the slot
plus the entry's jitter delay for that slot (stable, so a restart does not
move it); a slot is *due* once its fire time has passed.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from celery.schedules import BaseSchedule, schedule

from .schedules import clocked
from .slots import next_slot

UTC = timezone.utc
CATCH_UP_POLICIES = ("skip", "once", "all")
ON_FINISH_ACTIONS = ("disable", "delete")
# Beyond this many due slots (an every-second entry after days away) the
# scan stops and jumps to the first slot after now.
MAX_SLOT_SCAN = 10_000

__all__ = ["Policy", "Plan", "Waiting", "plan_runs", "plan_waiting", "first_slot", "fire_time", "latest_start",
           "upcoming", "CATCH_UP_POLICIES", "ON_FINISH_ACTIONS"]


@dataclass(frozen=True)
class Policy:
    """How an entry treats its slots (definition fields, else the global settings)."""

    catch_up: str = "once"
    catch_up_max: int = 100
    starting_deadline: float | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int | None = None
    on_finish: str = "disable"
    jitter: float = 0.0


@dataclass
class Plan:
    """What happens to a due entry now."""

    runs: list[datetime] = field(default_factory=list)  # slots to dispatch, oldest first
    missed: int = 0  # slots skipped by the catch-up policy or the deadline
    last_missed: datetime | None = None
    next_slot: datetime | None = None  # None: the entry will not run again
    fire_at: datetime | None = None  # when beat looks at the entry next

    @property
    def finished(self) -> bool:
        return self.next_slot is None


def fire_time(key: str, slot: datetime, jitter: float) -> datetime:
    """``slot`` plus the entry's jitter delay for it, the same on every call."""
    if not jitter:
        return slot
    digest = hashlib.sha256(f"{key}@{slot.timestamp():.6f}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return slot + timedelta(seconds=fraction * jitter)


def latest_start(key: str, slot: datetime, policy: Policy) -> float | None:
    """UNIX seconds after which a run of ``slot`` is too late to start: its fire
    time plus the starting deadline (in seconds: a deadline may exceed what datetime holds)."""
    if policy.starting_deadline is None:
        return None
    return fire_time(key, slot, policy.jitter).timestamp() + policy.starting_deadline


def _past_deadline(key: str, slot: datetime, policy: Policy, now: datetime) -> bool:
    lateness = (now - fire_time(key, slot, policy.jitter)).total_seconds()
    return policy.starting_deadline is not None and lateness > policy.starting_deadline


def _within_window(sched: BaseSchedule, slot: datetime | None, policy: Policy) -> datetime | None:
    if slot is not None and policy.start_at is not None and slot < policy.start_at:
        if isinstance(sched, schedule) and not sched.relative:
            slot = policy.start_at  # an interval has no phase of its own: it starts with the window
        else:
            slot = next_slot(sched, policy.start_at - timedelta(microseconds=1))
    if slot is not None and policy.end_at is not None and slot > policy.end_at:
        return None
    return slot


def _following(sched: BaseSchedule, slot: datetime, policy: Policy) -> datetime | None:
    return _within_window(sched, next_slot(sched, slot), policy)


def first_slot(sched: BaseSchedule, policy: Policy, last_run_at: datetime | None,
               pointer: datetime | None, now: datetime) -> datetime | None:
    """The entry's next slot not yet dealt with.

    After ``last_run_at``, and never before ``pointer``, the slot beat
    recorded as next after skipping or finishing slots, so that a skipped slot
    is not reconsidered; a later ``last_run_at`` written by another program
    wins. An entry that never ran is due at ``pointer`` if there is one (the
    score another program gave it), a clocked one at its instant, others now,
    unless their schedule has no slot left at all.
    """
    if last_run_at is None:
        slot: datetime | None = pointer or (sched.at if isinstance(sched, clocked) else now)
        if slot is now and next_slot(sched, now) is None:
            return None  # over before it ever ran (an rrule past its until or count): nothing to run now
    else:
        slot = next_slot(sched, last_run_at)
        if slot is not None and pointer is not None and pointer > slot:
            slot = pointer
    return _within_window(sched, slot, policy)


def plan_runs(key: str, sched: BaseSchedule, policy: Policy, last_run_at: datetime | None,
              pointer: datetime | None, total_run_count: int, now: datetime) -> Plan:
    """Decide which slots run at ``now``; ``Plan.runs`` is empty when none is due."""
    remaining_runs = None if policy.max_runs is None else policy.max_runs - total_run_count
    slot = first_slot(sched, policy, last_run_at, pointer, now)
    if slot is None or (remaining_runs is not None and remaining_runs <= 0):
        return Plan()
    if fire_time(key, slot, policy.jitter) > now:
        return Plan(next_slot=slot, fire_at=fire_time(key, slot, policy.jitter))

    scan = _scan_due(key, sched, policy, slot, now)
    candidates, dropped, last_dropped, following = list(scan.due), scan.dropped, scan.last_dropped, scan.following
    if policy.catch_up == "skip" and (dropped or len(candidates) > 1):
        dropped += len(candidates)
        last_dropped = candidates[-1]
        candidates = []
    runs: list[datetime] = []
    late: list[datetime] = []
    for candidate in candidates:
        (late if _past_deadline(key, candidate, policy, now) else runs).append(candidate)
    if remaining_runs is not None:
        runs = runs[:remaining_runs]
        if len(runs) >= remaining_runs:
            following = None
    missed = dropped + len(late)
    last_missed = max((moment for moment in (last_dropped, *late) if moment is not None), default=None)
    plan = Plan(runs=runs, missed=missed, last_missed=last_missed, next_slot=following)
    if following is not None:
        plan.fire_at = fire_time(key, following, policy.jitter)
    return plan


class _Scan(NamedTuple):
    """The slots due at ``now``, from the first: those the catch-up policy may keep
    (the newest, oldest first), how many fell out before them, and the first not due."""

    due: deque[datetime]
    dropped: int
    last_dropped: datetime | None
    following: datetime | None


def _scan_due(key: str, sched: BaseSchedule, policy: Policy, slot: datetime, now: datetime) -> _Scan:
    keep = policy.catch_up_max if policy.catch_up == "all" else 1
    due: deque[datetime] = deque(maxlen=max(keep, 1))
    dropped = 0
    last_dropped = None
    scanned = 0
    if isinstance(sched, schedule) and not sched.relative and policy.jitter == 0 and policy.end_at is None:
        # An interval far behind: step straight to the last slots before now.
        period = sched.run_every.total_seconds()
        behind = int((now - slot).total_seconds() // period) - keep
        if behind > 0:
            slot += timedelta(seconds=behind * period)
            dropped = behind
            last_dropped = slot - timedelta(seconds=period)
    following: datetime | None = slot
    while following is not None and fire_time(key, following, policy.jitter) <= now:
        if len(due) == due.maxlen:
            dropped += 1
            last_dropped = due[0]  # about to fall out of the deque
        due.append(following)
        scanned += 1
        if scanned >= MAX_SLOT_SCAN:
            following = _within_window(sched, next_slot(sched, now), policy)
            dropped += 1  # at least one more slot was passed over
            break
        following = _following(sched, following, policy)
    return _Scan(due, dropped, last_dropped, following)


@dataclass
class Waiting:
    """What becomes of an entry's runs waiting in flight, by slot."""

    publish: list[datetime] = field(default_factory=list)  # oldest first
    late: list[datetime] = field(default_factory=list)  # past the starting deadline: missed
    superseded: list[datetime] = field(default_factory=list)  # newer runs stand for them: missed


def plan_waiting(key: str, policy: Policy, last_run_at: datetime | None, waiting: list[datetime],
                 now: datetime) -> Waiting:
    """Which of an entry's runs that wait in flight (claimed, their publishing failed or
    their beat died) may still be published at ``now``.

    Waiting for the broker must not make a run later than one planned at
    ``now`` could be: past its starting deadline it is missed, and of several
    slots the catch-up policy keeps the newest (``skip`` and ``once``: one,
    and none older than ``last_run_at``, the newest slot claimed, which may
    be published already; ``all``: the newest ``catch_up_max``). ``skip``
    keeps one, as it runs a slot that is merely late: each was on time when
    it was claimed. ``waiting`` holds slots, never run-now requests.
    """
    late: list[datetime] = []
    timely: list[datetime] = []
    for slot in sorted(waiting):
        (late if _past_deadline(key, slot, policy, now) else timely).append(slot)
    keep = max(policy.catch_up_max, 1) if policy.catch_up == "all" else 1
    publish, superseded = timely[-keep:], timely[:-keep]
    if policy.catch_up != "all" and last_run_at is not None:
        superseded += [slot for slot in publish if slot < last_run_at]
        publish = [slot for slot in publish if slot >= last_run_at]
    return Waiting(publish=publish, late=late, superseded=superseded)


def upcoming(key: str, sched: BaseSchedule, policy: Policy, last_run_at: datetime | None,
             pointer: datetime | None, total_run_count: int, now: datetime, count: int
             ) -> list[tuple[datetime, datetime]]:
    """The next ``count`` runs beat will dispatch from ``now`` on, as (slot, fire time).

    Slots due already are dispatched at beat's next tick: their fire time is ``now``.
    """
    plan = plan_runs(key, sched, policy, last_run_at, pointer, total_run_count, now)
    result = [(slot, now) for slot in plan.runs]
    runs_left = None if policy.max_runs is None else policy.max_runs - total_run_count - len(plan.runs)
    slot = plan.next_slot
    while slot is not None and len(result) < count and (runs_left is None or runs_left > 0):
        result.append((slot, fire_time(key, slot, policy.jitter)))
        if runs_left is not None:
            runs_left -= 1
        slot = _following(sched, slot, policy)
    return result[:count]
