"""``on_finish: delete`` on the scheduler's side.

The decide stage says when an entry is done (``decide.bounded``, and a
``DELETE`` decision for an entry looked at after its last run); here, an
entry is deleted only once none of its runs waits in flight, since a retry
of its last run needs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery.utils.log import get_logger

from .decide import bounded
from .entry import RedBeatSchedulerEntry
from .logfields import log_fields
from .outcomes import Outcomes
from .printable import printable
from .records import NEVER
from .stages import Action, Decision
from .store import ScheduleStore

__all__ = ["OnFinish", "last_runs"]

logger = get_logger("celery.beat")


def last_runs(claimed: Iterable[Decision]) -> list[tuple[str, RedBeatSchedulerEntry]]:
    """The entries, as (key, entry), that the claimed decisions ran for the last time."""
    return [(d.record.key_text, d.entry) for d in claimed if d.runs and d.score == NEVER]


class OnFinish:
    """Deletes the entries that asked for it once their last run is out of flight."""

    def __init__(self, store: ScheduleStore, outcomes: Outcomes) -> None:
        self.store = store
        self.outcomes = outcomes

    def hold_deletes(self, decisions: list[Decision]) -> list[Decision]:
        """``decisions``, with each deletion of an entry whose last run waits in flight
        for a retry turned into a move out of the due range: deleted once that is out."""
        deleting = [position for position, d in enumerate(decisions) if d.action == Action.DELETE]
        if deleting:
            waiting = self._keys_in_flight()
            for position in deleting:
                record = decisions[position].record
                if record.key_text in waiting:
                    decisions[position] = Decision(record, Action.MOVE, score=NEVER)
        return decisions

    def delete_finished(self, finished: list[tuple[str, RedBeatSchedulerEntry]], published: set[str]) -> None:
        """Delete the entries, given as (key, entry), that ran for the last time and asked for
        that (on_finish: delete), once none of their runs is left in flight."""
        finished = [(key, entry) for key, entry in finished
                    if bounded(entry) and entry.policy().on_finish == "delete"]
        if not finished:
            return
        waiting = self._keys_in_flight(published)
        for key, entry in finished:
            if key not in waiting:
                self.store.delete(key)
                logger.info("beat: deleted %s after its last run (on_finish: delete)", printable(entry.name),
                            extra=log_fields(entry, key=key))

    def _keys_in_flight(self, published: Iterable[str] = ()) -> set[str]:
        """Keys of the entries with runs in flight, leaving out the runs ``published``
        (their records are forgotten later). Read only when an entry is to be deleted."""
        # Runs given up or missed are forgotten later too.
        left_out = set(published) | self.outcomes.task_ids()
        return {run.key for run in self.store.in_flight()[1] if run.task_id not in left_out}
