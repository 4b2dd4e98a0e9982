"""What a beat reports as it ticks, for metrics: the events, and a sink that ignores them.

The tick's stages call a ``BeatMetrics``; this one does nothing, so that a
beat without ``redbeat_metrics_port`` pays one method call per event and
imports no metrics library. ``beatmetrics.PrometheusBeatMetrics`` counts them
(docs/metrics.rst lists the metrics). Every method is cheap and never raises
into the tick: the sink is called where the event happens, on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable

from .records import Outcome

__all__ = ["BeatMetrics", "MissedReason"]


class MissedReason:
    """Why runs were missed: the label values of ``redbeat_runs_missed_total``."""

    CATCH_UP = "catch-up"  # slots the entry's catch-up policy skipped, or runs in flight it superseded
    DEADLINE = "deadline"  # runs whose starting deadline passed while they waited in flight
    UNREADABLE = "unreadable"  # runs in flight of an entry that can no longer be read
    OVERLAP = "overlap"  # slots the entry's overlap policy skipped: its previous run had not finished
    ALL = (CATCH_UP, DEADLINE, UNREADABLE, OVERLAP)

    @classmethod
    def of(cls, reason: str | None) -> str:
        """The label of a missed run's history reason (``publisher.DEADLINE_PASSED``, the
        catch-up texts of ``recovery``, why its entry cannot be read, ``overlap.Blocker.reason``)."""
        text = reason or ""
        if text.startswith("catch_up"):
            return cls.CATCH_UP
        if text.startswith("its entry cannot be read"):
            return cls.UNREADABLE
        if text.startswith("overlap"):
            return cls.OVERLAP
        return cls.DEADLINE


class BeatMetrics:
    """The events of a beat's ticks; each method a no-op here."""

    def published(self, outcomes: Iterable[Outcome]) -> None:
        """Runs the broker took: ``outcome.when`` is when, ``outcome.run.scheduled`` their slot."""

    def publish_failed(self, kind: str, count: int = 1) -> None:
        """Attempts to publish that failed, by failure class (``failures.FailureKind``)."""

    def given_up(self, outcomes: Iterable[tuple[Outcome, str]]) -> None:
        """Runs given up, each with its failure class."""

    def missed(self, reason: str, count: int, key: str = "") -> None:
        """Runs missed (``MissedReason``), of the entry ``key`` when known."""

    def claims_refused(self, count: int) -> None:
        """Decisions or take-overs the claim refused: the entry or the run changed since it was read
        (another beat claimed it, someone edited it): each a run that could have gone out twice."""

    def read_due(self, backlog: int, in_flight: int) -> None:
        """A read of the schedule: entries due at that moment beyond the batch it read (0 while
        beat keeps up), and runs waiting in flight."""

    def tick_finished(self, seconds: float, at: float) -> None:
        """A tick completed, taking ``seconds``, at ``at`` (UNIX seconds)."""

    def lock_held(self, held: bool) -> None:
        """Whether this beat holds the lock now."""

    def lock_acquired(self) -> None:
        """This beat took the lock."""

    def lock_lost(self) -> None:
        """This beat lost the lock it held."""

    def close(self) -> None:
        """Beat stops: stop serving."""
