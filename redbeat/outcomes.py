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
from dataclasses import dataclass

from celery.utils.log import get_logger

from .logfields import log_fields, runs_fields
from .metrics import BeatMetrics, MissedReason
from .printable import printable
from .records import GivenUpRun, LastFailure, Outcome, OutcomeKind, Status
from .store import ScheduleStore

__all__ = ["Outcomes", "Unpublished"]

logger = get_logger("celery.beat")


@dataclass
class Unpublished:
    """An entry's runs missed in flight or given up, not yet counted in its ``status``."""

    missed: int = 0
    last_missed_at: float = 0.0  # the newest slot missed
    given_up: int = 0
    last_failure: LastFailure | None = None

    def status_changes(self, old: Status) -> dict:
        """The fields of ``old`` with these runs counted in, for ``Status.to_json``."""
        changes: dict = {}
        if self.missed:
            changes.update(missed=old.missed + self.missed, missed_in_flight=old.missed_in_flight + self.missed,
                           last_missed_at=max(old.last_missed_at or 0.0, self.last_missed_at))
        if self.given_up:
            changes.update(given_up=old.given_up + self.given_up, last_failure=self.last_failure)
        return changes


class Outcomes:
    """Runs published, given up or missed, not yet recorded in Redis (``unrecorded``), and
    the runs missed in flight or given up not yet counted in their entries' status, by
    entry key (``uncounted``).

    Until a run is recorded, the next lock holder publishes it again, with the same task id.
    Each outcome is counted in ``metrics`` as it is added. The runs given up since the beat
    became active, and the last of them, go in its heartbeat.
    """

    def __init__(self, metrics: BeatMetrics | None = None) -> None:
        self.unrecorded: list[Outcome] = []
        self.uncounted: dict[str, Unpublished] = {}
        self.metrics = BeatMetrics() if metrics is None else metrics
        self.given_up = 0
        self.last_given_up: GivenUpRun | None = None

    def became_active(self) -> None:
        """The beat took the lock: the heartbeat counts runs given up from now on."""
        self.given_up, self.last_given_up = 0, None

    def add(self, outcomes: Iterable[Outcome]) -> None:
        """Runs published (or deleted with their entry: ``finishing``)."""
        added = list(outcomes)
        self.unrecorded += added
        self.metrics.published(o for o in added if o.outcome == OutcomeKind.PUBLISHED)

    def add_missed(self, missed: list[Outcome]) -> None:
        """Runs in flight that will not be published: recorded in their history (with the
        next read, as published runs are), counted in their entries' status (at the end of
        the tick), and logged in one line per entry and reason."""
        self.unrecorded += missed
        for (key, reason), count in Counter((o.run.key, o.reason) for o in missed).items():
            logger.warning("beat: %s missed %d run(s) that waited in flight: %s", printable(key), count, reason,
                           extra=log_fields(key=key, count=count))
            self.metrics.missed(MissedReason.of(reason), count, key)
        for outcome in missed:
            counts = self.uncounted.setdefault(outcome.run.key, Unpublished())
            counts.missed += 1
            counts.last_missed_at = max(counts.last_missed_at, outcome.run.scheduled)

    def add_skipped(self, store: ScheduleStore, skipped: list[Outcome]) -> None:
        """Slots an overlap policy skipped (counted in their entries' status by the claim):
        written in their history at once (they were never in flight), counted in metrics,
        and logged in one line per entry."""
        if not skipped:
            return
        store.record_skipped(skipped)
        groups: dict[str, list[Outcome]] = {}
        for outcome in skipped:
            groups.setdefault(outcome.run.key, []).append(outcome)
        for key, outcomes in groups.items():
            self.metrics.missed(MissedReason.OVERLAP, len(outcomes), key)
            logger.warning("beat: %s skipped %d slot(s): %s", printable(key), len(outcomes),
                           printable(outcomes[-1].reason or ""),
                           extra=runs_fields([outcome.run for outcome in outcomes], now=outcomes[-1].when))

    def add_given_up(self, given_up: list[tuple[Outcome, str]]) -> None:
        """Runs beat gave up publishing, each with the class of its failure: recorded in their
        history like missed runs, counted in their entries' status (``given_up``,
        ``last_failure``), and logged in one error line per entry and class: a run that can
        never be published must not fill the log with a line per run."""
        self.unrecorded += [outcome for outcome, _ in given_up]
        self.metrics.given_up(given_up)
        groups: dict[tuple[str, str], list[Outcome]] = {}
        for outcome, kind in given_up:
            groups.setdefault((outcome.run.key, kind), []).append(outcome)
            counts = self.uncounted.setdefault(outcome.run.key, Unpublished())
            counts.given_up += 1
            counts.last_failure = LastFailure(outcome.when, kind, outcome.reason or kind)
            self.last_given_up = GivenUpRun(outcome.when, outcome.run.key, kind, outcome.reason or kind)
        self.given_up += len(given_up)
        for (key, kind), outcomes in groups.items():
            logger.error("beat: gave up publishing %d run(s) of %s, not retried: %s", len(outcomes), printable(key),
                         outcomes[-1].reason, extra=runs_fields([outcome.run for outcome in outcomes],
                                                                now=outcomes[-1].when, failure_class=kind))

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

    def count_unpublished(self, store: ScheduleStore) -> None:
        """Add the runs missed in flight and given up to their entries' ``status``
        (``missed``, ``missed_in_flight``, ``last_missed_at``, ``given_up``, ``last_failure``).

        At the end of a tick, after its claims: a claim writes the status it
        read at the start of the tick, and would undo a count made in between.
        Two round trips however many runs, and none in a tick where every run
        went out: read the statuses, then write each only if it did not change
        meanwhile (another beat's claim); one that changed is read again, a few
        times at most.
        """
        keys = list(self.uncounted)
        for _ in range(3):
            if not keys:
                break
            writes = []
            for key, raw in zip(keys, store.statuses(keys)):
                old = Status.from_json(raw)
                writes.append((key, raw, old.to_json(**self.uncounted[key].status_changes(old))))
            changed = store.write_statuses(writes)
            for key in set(keys) - set(changed):
                del self.uncounted[key]  # counted: a failure after this must not count it again
            keys = changed
        self.uncounted = {}
