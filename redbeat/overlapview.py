"""What ``show`` says of an entry's overlap policy (docs/cli.rst): the policy, the bound of
its runs and where it came from, and whether a run goes on or waits, worked out by the same
pure functions beat decides with (``overlap``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .entry import RedBeatSchedulerEntry, entry_run_bound, overlap_policy
from .overlap import Overlap, blocker
from .records import RunEvent, Status
from .runs import task_id_for
from .timeformat import iso

__all__ = ["OverlapView", "overlap_view", "RUNNING_WORDS"]

# How ``show`` says what was last known of the run that blocks the next (``overlap.Blocker.state``).
RUNNING_WORDS = {"started": "running since", "retried": "retried (it runs again) since",
                 "published": "published, not started yet, since"}


@dataclass(frozen=True)
class OverlapView:
    """An entry's overlap policy as ``show`` gives it (moments in UNIX seconds)."""

    policy: str
    max_run_time: float
    bound_source: str
    running_task_id: str | None = None
    running_state: str | None = None  # started, retried, or published (not started yet)
    running_since: float | None = None
    counts_as_finished_at: float | None = None
    waiting_slot: float | None = None  # the slot of the run that waits (buffer_one)
    reported: bool = True  # whether any worker reported a run of it: without, the policy cannot act

    def as_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_run_time": self.max_run_time, "bound_source": self.bound_source,
                "running": None if self.running_task_id is None else {
                    "task_id": self.running_task_id, "state": self.running_state, "since": iso(self.running_since),
                    "counts_as_finished_at": iso(self.counts_as_finished_at)},
                "waiting": None if self.waiting_slot is None else {"slot": iso(self.waiting_slot)},
                "worker_reports": self.reported}

    def lines(self) -> list[str]:
        """The policy in words, a line each."""
        said = [f"{self.policy}; a started run counts as finished after {self.max_run_time:g}s "
                f"({self.bound_source})"]
        if self.running_task_id is not None:
            said.append(f"{RUNNING_WORDS.get(self.running_state or '', 'running since')} {iso(self.running_since)}, "
                        f"counts as finished at {iso(self.counts_as_finished_at)} (task {self.running_task_id})")
        if self.waiting_slot is not None:
            said.append(f"1 run waiting (slot {iso(self.waiting_slot)})")
        if not self.reported:
            said.append("no worker reports runs of this entry: the policy cannot tell a run goes on, and every "
                        "slot runs (enable redbeat.worker in the workers: docs/outcomes.rst)")
        return said


def overlap_view(entry: RedBeatSchedulerEntry, status: Status, newest: RunEvent | None,
                 now: float) -> OverlapView | None:
    """``entry``'s overlap policy at ``now``, None for ``allow`` with no run waiting (nothing to say)."""
    policy = overlap_policy(entry)
    if policy is Overlap.ALLOW and status.waiting_slot is None:
        return None
    bound = entry_run_bound(entry)
    last_task_id = None if entry.last_run_at is None else task_id_for(entry.key, entry.last_run_at.timestamp())
    busy = blocker(newest, last_task_id, status.last_dispatched_at, bound, now)
    return OverlapView(str(policy), bound.seconds, str(bound.source),
                       running_task_id=None if busy is None else busy.task_id,
                       running_state=None if busy is None else busy.state,
                       running_since=None if busy is None else busy.since,
                       counts_as_finished_at=None if busy is None else busy.until,
                       waiting_slot=status.waiting_slot, reported=newest is not None)
