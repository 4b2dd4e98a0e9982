"""Overlap policies (docs/scheduling.rst): what a due slot does while the entry's previous
run has not finished.

Pure functions of what the workers last reported of an entry (its newest
``records.RunEvent``, written by ``worker.py``), what beat last dispatched, and the
clock: the decide stage asks here, and so do ``show`` and the tests, with fixed clocks.

A run is *unfinished* while the entry's newest worker event is ``started`` or
``retried`` (a retried run runs again, under the same task id), or beat dispatched a
run after that event (published, not started yet), and the *bound* has not passed
since: a run whose worker died reports no end, and must not block its entry forever.
Without any worker event the policy cannot know, and the entry runs as ``allow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TypeGuard

from .records import RunEvent, RunEventKind
from .timeformat import iso

__all__ = ["Overlap", "OVERLAP_POLICIES", "BoundSource", "RunBound", "Blocker", "OverlapPlan", "run_bound",
           "blocker", "settle", "mentions_overlap", "readable_event", "current_event", "CURRENT_WINDOW",
           "MAX_RUN_TIME", "DEFAULT_MAX_RUN_TIME", "TIME_LIMIT_GRACE", "WAITING_POLL"]

# An entry's max_run_time: a bound beyond a month would block an entry as good as forever.
MAX_RUN_TIME = 30 * 86400.0
# redbeat_max_run_time's default: a run reported started an hour ago, with no end, counts as finished.
DEFAULT_MAX_RUN_TIME = 3600.0
# Added to a task's hard time limit: the worker kills the task at the limit, then reports
# its end; the bound must not pass before that report can arrive.
TIME_LIMIT_GRACE = 30.0
# How many of an entry's newest worker events are read to find the one that says where its
# runs stand (``current_event``): a late ``retried`` sits above at most the next attempt's
# start and end.
CURRENT_WINDOW = 4
# How often beat looks again at an entry whose run waits (buffer_one) for the previous one:
# the entry stays due this far ahead, so that beat neither busy-loops Redis nor starts it late.
WAITING_POLL = 1.0


class Overlap(str, Enum):
    """An entry's ``overlap`` field (the value is what is stored)."""

    ALLOW = "allow"  # every slot runs, whatever the previous run does (the default)
    SKIP = "skip"  # a slot whose previous run has not finished is skipped, and counted as missed
    BUFFER_ONE = "buffer_one"  # one such slot waits, and runs as soon as the previous run finished

    def __str__(self) -> str:
        return self.value


OVERLAP_POLICIES = tuple(policy.value for policy in Overlap)


class BoundSource(str, Enum):
    """Where the bound of a run's time came from, in words for ``show``."""

    ENTRY = "the entry's max_run_time"
    TASK = "the task's time_limit plus a grace"
    APP = "the app's task_time_limit plus a grace"
    SETTING = "redbeat_max_run_time"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunBound:
    """After ``seconds`` a started run with no end counts as finished; from ``source``."""

    seconds: float
    source: BoundSource


def run_bound(max_run_time: float | None, task_time_limit: float | None, app_time_limit: float | None,
              setting: float) -> RunBound:
    """The bound of an entry's runs: its own ``max_run_time``, else its task's hard time limit
    (the task's own, else the app's) plus ``TIME_LIMIT_GRACE``, else the setting."""
    if max_run_time:
        return RunBound(float(max_run_time), BoundSource.ENTRY)
    if _positive(task_time_limit):
        return RunBound(float(task_time_limit) + TIME_LIMIT_GRACE, BoundSource.TASK)
    if _positive(app_time_limit):
        return RunBound(float(app_time_limit) + TIME_LIMIT_GRACE, BoundSource.APP)
    return RunBound(float(setting), BoundSource.SETTING)


def _positive(value: object) -> TypeGuard[float]:
    """A time limit that is set: a number above 0 (Celery's are None when unset)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Blocker:
    """The run that keeps the next one from starting: its task id, what was last known of it
    (``started``, ``retried``, or ``published`` and not started yet), since when and until
    when it blocks (UNIX seconds: then it counts as finished)."""

    task_id: str
    state: str
    since: float
    until: float

    def reason(self) -> str:
        """Why a slot was skipped, in the entry's history."""
        return (f"overlap: the previous run {self.task_id} has not finished ({self.state} since "
                f"{iso(self.since)}; it counts as finished at {iso(self.until)})")


def blocker(newest: RunEvent | None, last_task_id: str | None, last_dispatched_at: float | None,
            bound: RunBound, now: float) -> Blocker | None:
    """The unfinished run of an entry at ``now``, or None: the previous run finished, its
    bound passed, or no worker reported anything (``newest`` is None: the policy cannot know).

    ``last_task_id`` and ``last_dispatched_at`` are beat's last run of the entry and when
    it was dispatched: a run dispatched after the newest event has not started yet."""
    if newest is None:
        return None
    found: list[Blocker] = []
    if newest.event in (RunEventKind.STARTED, RunEventKind.RETRIED):
        found.append(Blocker(newest.task_id, newest.event, newest.at, newest.at + bound.seconds))
    if last_dispatched_at is not None and last_dispatched_at > newest.at and last_task_id != newest.task_id:
        # Also after a started run whose bound passed (its worker was killed): the run published
        # since then waits in the queue, and blocks the next slot within its own bound.
        found.append(Blocker(last_task_id or "(unknown)", "published", last_dispatched_at,
                             last_dispatched_at + bound.seconds))
    return next((blocking for blocking in found if now < blocking.until), None)


@dataclass
class OverlapPlan:
    """What the overlap policy makes of an entry's due slots: those that run now (oldest
    first), those skipped (missed, for overlap), and the one left waiting (buffer_one)."""

    runs: list[datetime] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)
    waiting: datetime | None = None


def settle(policy: Overlap, busy: Blocker | None, waiting: datetime | None, due: list[datetime]) -> OverlapPlan:
    """Apply ``policy`` to the slot waiting (if any, the oldest) and the slots ``due`` now,
    oldest first, while ``busy`` runs (None: nothing runs).

    Each slot in turn: with nothing running it runs (and then runs: the slots after it
    overlap it); else under ``buffer_one`` the first waits, and every other is skipped.
    A slot left waiting by ``buffer_one`` runs now under another policy (it was changed).
    A due slot not after the one waiting is that one again (the entry was edited, and the
    slot it records as next no longer holds): it is not counted twice."""
    queue = due if waiting is None else [waiting] + [slot for slot in due if slot > waiting]
    if policy is Overlap.ALLOW:
        return OverlapPlan(runs=queue)
    plan = OverlapPlan()
    running = busy is not None
    for slot in queue:
        if not running:
            plan.runs.append(slot)
            running = True
        elif policy is Overlap.BUFFER_ONE and plan.waiting is None:
            plan.waiting = slot
        else:
            plan.skipped.append(slot)
    return plan


def mentions_overlap(definition: bytes | None) -> bool:
    """Whether a stored definition may set an overlap policy: a byte search, so that a tick
    reads worker events only for the due entries that may need them (never for most)."""
    return definition is not None and b'"overlap"' in definition


def readable_event(raw: bytes | None) -> RunEvent | None:
    """A worker event as read; one that cannot be read counts as none (a worker of a newer
    RedBeat, or another program, may have written it)."""
    if raw is None:
        return None
    try:
        return RunEvent.from_json(raw)
    except ValueError:
        return None


def current_event(raws: Sequence[bytes]) -> bytes | None:
    """Of an entry's newest raw worker events (newest first, ``CURRENT_WINDOW`` of them), the
    one that says where its runs stand: the newest, unless it is a ``retried`` of an attempt
    that a later attempt of the same run reported before it (Celery publishes the retry
    before the attempt that asked for it reports its end, so the next attempt can start and
    end first: the run is over, or goes on, as that later attempt says)."""
    events = [readable_event(raw) for raw in raws]
    for index, event in enumerate(events):
        if event is None or event.event != RunEventKind.RETRIED or not any(
                later is not None and later.task_id == event.task_id and later.retries > event.retries
                for later in events[index + 1:]):
            return raws[index]
    return None
