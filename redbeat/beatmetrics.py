"""A beat's metrics in Prometheus's terms (the ``metrics`` extra: ``prometheus-client``).

Each beat process has a registry of its own, served on ``redbeat_metrics_port``
with the process's CPU and memory: two beats in one process (a test) never
clash. Labels stay few by default: a failure class, a reason; a label per entry
only with ``redbeat_metrics_entry_labels``, since a schedule of 100,000 entries
would make 100,000 series. docs/metrics.rst describes each metric.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from .failures import FailureKind
from .metrics import BeatMetrics, MissedReason
from .metricsserver import MetricsServer
from .printable import printable
from .records import Outcome

__all__ = ["PrometheusBeatMetrics", "LATENESS_BUCKETS", "TICK_BUCKETS"]

# Scheduled slot to broker acknowledgement: most runs go out within a tick of
# their slot (tens of milliseconds); minutes late means beat was down or behind.
LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PrometheusBeatMetrics(BeatMetrics):
    """Counts a beat's events into a registry of its own (``registry``)."""

    def __init__(self, entry_labels: bool = False) -> None:
        self.entry_labels = entry_labels
        self.server: MetricsServer | None = None  # set once served
        registry = self.registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        per_entry = ("entry",) if entry_labels else ()
        self._published = Counter("redbeat_runs_published", "Runs the broker took.", per_entry, registry=registry)
        self._failed = Counter("redbeat_publish_failures", "Attempts to publish a run that failed, by failure "
                               "class; a transient one is retried with the same task id.", ("class",),
                               registry=registry)
        self._given_up = Counter("redbeat_runs_given_up", "Runs beat gave up publishing, by failure class.",
                                 ("class",) + per_entry, registry=registry)
        self._missed = Counter("redbeat_runs_missed", "Runs missed: slots the catch-up policy skipped, runs "
                               "whose starting deadline passed while they waited in flight, and slots the overlap "
                               "policy skipped.",
                               ("reason",) + per_entry, registry=registry)
        self._refused = Counter("redbeat_claims_refused", "Claims refused because the entry or run changed since "
                                "it was read (another beat claimed it, or it was edited): duplicates avoided.",
                                registry=registry)
        self._lateness = Histogram("redbeat_dispatch_lateness_seconds", "From a run's scheduled slot (or its "
                                   "run-now request) to the broker taking it.", buckets=LATENESS_BUCKETS,
                                   registry=registry)
        self._tick = Histogram("redbeat_tick_duration_seconds", "How long ticks take, standby ticks included.",
                               buckets=TICK_BUCKETS, registry=registry)
        self._last_tick = Gauge("redbeat_last_tick_timestamp_seconds", "When the last tick completed (UNIX "
                                "seconds).", registry=registry)
        self._due = Gauge("redbeat_due_backlog", "Entries due at the latest read of the schedule beyond "
                          "the batch it read: 0 while beat keeps up.", registry=registry)
        self._in_flight = Gauge("redbeat_runs_in_flight", "Runs claimed and not yet known to be published, at "
                                "the latest read.", registry=registry)
        self._lock_held = Gauge("redbeat_lock_held", "1 while this beat holds the lock (it is active), else 0.",
                                registry=registry)
        self._acquired = Counter("redbeat_lock_acquisitions", "Times this beat took the lock.", registry=registry)
        self._lost = Counter("redbeat_lock_losses", "Times this beat lost the lock it held.", registry=registry)
        # Every failure class and reason shows from the start, at 0: an alert on a rate
        # needs the series to exist before the first failure.
        for kind in FailureKind:
            self._failed.labels(kind.value)
            if not entry_labels:
                self._given_up.labels(kind.value)
        if not entry_labels:
            for reason in MissedReason.ALL:
                self._missed.labels(reason)
            self._published.inc(0)

    def published(self, outcomes: Iterable[Outcome]) -> None:
        lateness = self._lateness
        count = 0
        for outcome in outcomes:
            count += 1
            lateness.observe(max(outcome.when - outcome.run.scheduled, 0.0))
            if self.entry_labels:
                self._published.labels(_entry(outcome.run.key)).inc()
        if count and not self.entry_labels:
            self._published.inc(count)

    def publish_failed(self, kind: str, count: int = 1) -> None:
        self._failed.labels(kind).inc(count)

    def given_up(self, outcomes: Iterable[tuple[Outcome, str]]) -> None:
        for outcome, kind in outcomes:
            labels = (kind, _entry(outcome.run.key)) if self.entry_labels else (kind,)
            self._given_up.labels(*labels).inc()

    def missed(self, reason: str, count: int, key: str = "") -> None:
        if count:
            labels = (reason, _entry(key)) if self.entry_labels else (reason,)
            self._missed.labels(*labels).inc(count)

    def claims_refused(self, count: int) -> None:
        if count:
            self._refused.inc(count)

    def read_due(self, backlog: int, in_flight: int) -> None:
        self._due.set(backlog)
        self._in_flight.set(in_flight)

    def tick_finished(self, seconds: float, at: float) -> None:
        self._tick.observe(seconds)
        self._last_tick.set(at)

    def lock_held(self, held: bool) -> None:
        self._lock_held.set(1 if held else 0)
        if not held:
            self._standing_by()

    def lock_acquired(self) -> None:
        self._acquired.inc()
        self._lock_held.set(1)

    def lock_lost(self) -> None:
        self._lost.inc()
        self._lock_held.set(0)
        self._standing_by()

    def _standing_by(self) -> None:
        # The backlog and the runs in flight are the active beat's to report: a standby
        # serving those of its last read would count them twice, and for ever.
        self._due.set(0)
        self._in_flight.set(0)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def _entry(key: str) -> str:
    return printable(key)
