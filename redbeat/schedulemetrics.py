"""The schedule-wide view as Prometheus gauges (the ``metrics`` extra): what
``redbeat metrics`` serves, and beat's own endpoint too.

Read from Redis when scraped, at most once per refresh interval: scrapes in
between get the last reading, so that several Prometheus servers scraping
every few seconds cost one read of the schedule per interval. When Redis
cannot be read, the scrape still answers, with ``redbeat_schedule_up 0``
and none of the other gauges (numbers of another moment would mislead).
The workers' counts of how runs ended (``outcomecounts.py``) come with the
same reading, as a counter and a histogram: Redis holds them, so any
exporter serves the same totals. docs/metrics.rst describes each metric.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from celery import Celery
from celery.utils.log import get_logger
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis.exceptions import RedisClusterException, RedisError

from .census import ScheduleSnapshot, snapshot
from .outcomecounts import DUPLICATE, ENDINGS, OutcomeCounts
from .printable import printable
from .storepart import WrongTypeError

__all__ = ["ScheduleCollector", "DEFAULT_REFRESH", "registry_for"]

logger = get_logger("celery.beat")

# Seconds a reading serves scrapes: Prometheus's usual scrape interval.
DEFAULT_REFRESH = 15.0


class ScheduleCollector(Collector):
    """The ``redbeat_schedule_*`` gauges of one app's schedule, read at most every ``refresh`` seconds."""

    def __init__(self, app: Celery, refresh: float = DEFAULT_REFRESH,
                 read: Callable[[Celery], ScheduleSnapshot] = snapshot) -> None:
        self.app = app
        self.refresh = refresh
        self._read = read
        self._lock = threading.Lock()  # one reading at a time, however many scrapes wait
        self._read_at: float | None = None  # time.monotonic() of the last reading
        self._last: ScheduleSnapshot | None = None  # None: the last reading failed
        self._failure: str | None = None

    def describe(self) -> Iterator[Metric]:
        # What the collector yields, without reading Redis (a registry asks on registration).
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.refresh:
                self._take_reading()
                self._read_at = time.monotonic()
            reading = self._last
        yield from self._families(reading)

    def _take_reading(self) -> None:
        try:
            self._last = self._read(self.app)
        except (RedisError, RedisClusterException, WrongTypeError) as exc:
            failure = printable(str(exc) or type(exc).__name__)
            if failure != self._failure:  # once per failure, not once per scrape
                logger.warning("redbeat metrics: cannot read the schedule: %s", failure)
            self._last, self._failure = None, failure
            return
        if self._failure is not None:
            logger.warning("redbeat metrics: the schedule can be read again")
        self._failure = None

    def _families(self, reading: ScheduleSnapshot | None) -> Iterator[Metric]:
        up = GaugeMetricFamily("redbeat_schedule_up", "1 if Redis answered the last reading of the schedule, "
                               "else 0 (and no other redbeat_schedule_ metric).")
        up.add_metric([], 1 if reading is not None else 0)
        yield up
        entries = GaugeMetricFamily("redbeat_schedule_entries", "Entries in the schedule, by state.",
                                    labels=["state"])
        if reading is not None:
            for state, count in reading.census.by_state().items():
                entries.add_metric([state.value], count)
        yield entries
        values = _values(reading) if reading is not None else {}
        for name, documentation in GAUGES.items():
            family = GaugeMetricFamily(f"redbeat_schedule_{name}", documentation)
            value = values.get(name)
            if value is not None:
                family.add_metric([], value)
            yield family
        yield from _outcome_families(reading)


# The gauges besides up and entries: the name after redbeat_schedule_, and what it says.
GAUGES = {
    "orphans": "Schedule members with no entry hash behind them (redbeat doctor explains).",
    "due": "Entries due now (score from 0 to now): 0 or a batch while beat keeps up.",
    "most_overdue_seconds": "How long the most overdue entry has been due (0 if none is due).",
    "runs_in_flight": "Runs claimed and not yet known to be published.",
    "runs_stuck_in_flight": "Runs in flight whose publish retry is over a minute overdue.",
    "runs_given_up": "Runs given up, summed over the entries' status: a gauge, since deleting an entry takes "
                     "its runs off.",
    "last_tick_timestamp_seconds": "When the active beat last completed a tick (UNIX seconds), from its "
                                   "heartbeat; absent without one.",
    "lock_held": "1 if a beat holds the lock, else 0.",
    "refresh_duration_seconds": "How long the last reading of the schedule took.",
}


def _values(reading: ScheduleSnapshot) -> dict[str, float | None]:
    """Each gauge's value (None: unknown, such as a key of the wrong type, or no heartbeat)."""
    status = reading.status
    return {
        "orphans": reading.census.orphans,
        "due": status.get("due"),
        "most_overdue_seconds": status.get("most_overdue_seconds"),
        "runs_in_flight": status.get("in_flight"),
        "runs_stuck_in_flight": status.get("stuck_in_flight"),
        "runs_given_up": reading.census.given_up,
        "last_tick_timestamp_seconds": reading.last_tick_at,
        "lock_held": 1 if reading.lock_held else 0,
        "refresh_duration_seconds": reading.took,
    }


def _outcome_families(reading: ScheduleSnapshot | None) -> Iterator[Metric]:
    """The workers' counts: outcomes, durations, entries failing (none without a reading,
    and the counter and histogram none when their key holds another type)."""
    failing = GaugeMetricFamily("redbeat_entries_failing", "Entries whose last run reported by a worker failed.")
    if reading is not None:
        failing.add_metric([], reading.census.failing)
    yield failing
    counts: OutcomeCounts | None = reading.outcomes if reading is not None else None
    outcomes = CounterMetricFamily("redbeat_run_outcomes_total", "Runs of RedBeat's entries that workers saw end, "
                                   "by how (duplicate: a repeated delivery not run again).", labels=["outcome"])
    if counts is not None:
        for outcome in (*ENDINGS, DUPLICATE):
            outcomes.add_metric([outcome], counts.outcomes.get(outcome, 0))
    yield outcomes
    if counts is None:
        yield HistogramMetricFamily("redbeat_run_duration_seconds", DURATION_HELP)
        return
    # Bounds written as prometheus-client writes its own histograms' (1.0, not 1): one le per bound.
    buckets = [(floatToGoString(bound), float(runs)) for bound, runs in counts.buckets]
    yield HistogramMetricFamily("redbeat_run_duration_seconds", DURATION_HELP,
                                buckets=[*buckets, ("+Inf", float(counts.duration_count))],
                                sum_value=counts.duration_sum)


DURATION_HELP = "How long runs of RedBeat's entries took, as the workers measured them."


def registry_for(app: Celery, refresh: float = DEFAULT_REFRESH) -> CollectorRegistry:
    """A registry of the schedule-wide gauges and this process's own (what ``redbeat metrics`` serves)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(ScheduleCollector(app, refresh))
    return registry

