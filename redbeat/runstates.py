"""Where a run stands at the workers: its worker events (``records.RunEvent``) folded
into one ``RunState`` per task id, for ``show`` and ``list`` (docs/outcomes.rst).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .records import RunEvent, RunEventKind

__all__ = ["RunState", "run_states", "RUNNING", "STATE_FIELDS"]

# The state of a run a worker started and has not reported the end of (yet, or ever:
# a worker killed mid-task reports nothing more).
RUNNING = "running"

# The fields ``RunState.as_json_fields`` gives, each null when nothing was reported.
STATE_FIELDS = ("state", "exception", "started", "finished", "duration", "worker", "retries")


@dataclass(frozen=True)
class RunState:
    """What the workers reported of one run: ``state`` is ``running``, or the word of
    the event that ended it (``succeeded``, ``failed``, ``revoked``...) or that put it
    off (``retried``). Moments are UNIX seconds by the workers' clocks."""

    task_id: str
    state: str
    reported_at: float  # the newest event
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    worker: str = ""
    exception: str | None = None
    retries: int = 0
    attempt: int = 0  # the attempt (Celery's request.retries) that ``state`` is of

    def after(self, event: RunEvent) -> RunState:
        """This state with a newer ``event`` of the same run applied.

        A retry is sent before the attempt that asked for it reports its end: the next
        attempt may start and end, on another worker process, before that report is
        stored. So an event of an earlier attempt (fewer ``retries``) changes nothing
        but the count of retries."""
        retries = max(self.retries, event.retries + (event.event == RunEventKind.RETRIED))
        if event.retries < self.attempt:
            return replace(self, retries=retries)
        if event.event == RunEventKind.STARTED:
            # Started again (after a retry, or delivered again): what ended before is over.
            return replace(self, state=RUNNING, reported_at=event.at, started=event.at, finished=None,
                           duration=None, worker=event.worker, exception=None, retries=retries,
                           attempt=event.retries)
        return replace(self, state=event.event, reported_at=event.at, finished=event.at, duration=event.duration,
                       worker=event.worker or self.worker, exception=event.exception, retries=retries,
                       attempt=event.retries)

    def as_json_fields(self) -> dict[str, Any]:
        """The fields ``STATE_FIELDS`` (moments in UNIX seconds)."""
        return {"state": self.state, "exception": self.exception, "started": self.started,
                "finished": self.finished, "duration": self.duration, "worker": self.worker or None,
                "retries": self.retries}


def run_states(events: Iterable[RunEvent]) -> dict[str, RunState]:
    """The state of each run, by task id, from its events given newest first (as stored)."""
    states: dict[str, RunState] = {}
    for event in reversed(list(events)):
        known = states.get(event.task_id) or RunState(event.task_id, RUNNING, event.at)
        states[event.task_id] = known.after(event)
    return states
