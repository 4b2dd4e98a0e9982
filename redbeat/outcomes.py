"""What became of runs in flight that Redis does not know yet.

The publisher and the recovery of runs in flight add to one ``Outcomes``;
the ticker hands it to the store: the outcomes ride along with the next
read (``store.read_due(published=...)``) or are recorded after each batch
published and at the end of the tick (``store.record``), and the runs missed
are counted in their entries' status at the end of the tick.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from celery.utils.log import get_logger

from .printable import printable
from .records import Outcome, Status
from .store import ScheduleStore

__all__ = ["Outcomes"]

logger = get_logger("celery.beat")


class Outcomes:
    """Runs published, given up or missed, not yet recorded in Redis (``unrecorded``), and
    the runs missed in flight not yet counted in their entries' status, by entry key:
    (how many, newest slot) (``uncounted``).

    Until a run is recorded, the next lock holder publishes it again, with the same task id.
    """

    def __init__(self) -> None:
        self.unrecorded: list[Outcome] = []
        self.uncounted: dict[str, tuple[int, float]] = {}

    def add(self, outcomes: Iterable[Outcome]) -> None:
        self.unrecorded += outcomes

    def add_missed(self, missed: list[Outcome]) -> None:
        """Runs in flight that will not be published: recorded in their history (with the
        next read, as published runs are), counted in their entries' status (at the end of
        the tick), and logged in one line per entry and reason."""
        self.unrecorded += missed
        for (key, reason), count in Counter((o.run.key, o.reason) for o in missed).items():
            logger.warning("beat: %s missed %d run(s) that waited in flight: %s", printable(key), count, reason)
        for outcome in missed:
            count, newest = self.uncounted.get(outcome.run.key, (0, 0.0))
            self.uncounted[outcome.run.key] = (count + 1, max(newest, outcome.run.scheduled))

    def task_ids(self) -> set[str]:
        """The task ids of the runs not yet recorded (their records are still in flight)."""
        return {outcome[0].task_id for outcome in self.unrecorded}

    def forget_recorded(self) -> None:
        """The store recorded every outcome pending (a read took them along)."""
        self.unrecorded = []

    def record(self, store: ScheduleStore) -> None:
        """Forget the runs published or given up in Redis, and write their history."""
        if self.unrecorded:
            store.record(self.unrecorded)
            self.unrecorded = []

    def count_missed(self, store: ScheduleStore) -> None:
        """Add the runs missed in flight to their entries' ``status`` (``missed``, ``last_missed_at``).

        At the end of a tick, after its claims: a claim writes the status it
        read at the start of the tick, and would undo a count made in between.
        Two round trips however many runs: read the statuses, then write each
        only if it did not change meanwhile (another beat's claim); one that
        changed is read again, a few times at most.
        """
        keys = list(self.uncounted)
        for _ in range(3):
            if not keys:
                break
            writes = []
            for key, raw in zip(keys, store.statuses(keys)):
                old, (count, newest) = Status.from_json(raw), self.uncounted[key]
                writes.append((key, raw, old.to_json(missed=old.missed + count,
                                                     last_missed_at=max(old.last_missed_at or 0.0, newest))))
            changed = store.write_statuses(writes)
            for key in set(keys) - set(changed):
                del self.uncounted[key]  # counted: a failure after this must not count it again
            keys = changed
        self.uncounted = {}
