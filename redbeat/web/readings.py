"""What the overview shows, read from Redis with bounded work, and kept for a moment so
that many open tabs polling at once cost Redis one reading: beat's status for
``STATUS_TTL`` seconds, the census (a scan of the whole schedule) for ``CENSUS_TTL``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from celery import Celery

from ..admin import beat_status, degraded_reasons, key_bytes, key_text, unhealthy_reasons
from ..census import Census, census
from ..client import get_store
from ..config import ensure_conf
from ..store import ScheduleStore

__all__ = ["Reading", "Readings", "Health", "Dispatch", "health_of", "overview", "most_overdue",
           "recent_dispatches", "STATUS_TTL", "CENSUS_TTL"]

T = TypeVar("T")
STATUS_TTL = 1.5
# The census scans the schedule (about 0.4 s of Redis's time at 100,000 entries, in 1 ms
# chunks): read at most this often, as ``redbeat metrics`` reads it.
CENSUS_TTL = 15.0
# Beat is unhealthy when its last completed tick is older than this (as ``redbeat status``'s default).
MAX_TICK_AGE = 60.0
OVERDUE_SHOWN = 5
# The chart: the last CHART_RUNS runs of the CHART_ENTRIES entries due next (those that run
# often come due soonest), and of the most overdue: one pipelined read, bounded.
CHART_ENTRIES = 40
CHART_RUNS = 10
# The times the chart can draw (UNIX seconds, 1970 to the end of year 9999): a record of
# another program's may hold anything.
CHARTABLE = (0.0, 253402300799.0)


class Reading(Generic[T]):
    """A value read at most once every ``ttl`` seconds; callers meanwhile share the last
    reading, and callers arriving during a read wait for it rather than read again."""

    def __init__(self, read: Callable[[], T], ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value: tuple[float, T] | None = None

    def get(self) -> T:
        with self._lock:
            now = self._clock()
            if self._value is None or now - self._value[0] >= self._ttl:
                self._value = (now, self._read())
            return self._value[1]

    def forget(self) -> None:
        """Read afresh next time (after a change made through the dashboard)."""
        with self._lock:
            self._value = None


class Readings:
    """The cached readings of one app's schedule."""

    def __init__(self, app: Celery) -> None:
        self.status: Reading[dict[str, Any]] = Reading(lambda: beat_status(app), STATUS_TTL)
        self.census: Reading[Census] = Reading(lambda: census(app), CENSUS_TTL)
        self.overview: Reading[dict[str, Any]] = Reading(lambda: overview(app, self.status.get(), self.census.get()),
                                                         STATUS_TTL)

    def forget(self) -> None:
        for reading in (self.status, self.census, self.overview):
            reading.forget()


@dataclass(frozen=True)
class Health:
    """Beat's health in one word (``healthy``, ``degraded``, ``unhealthy``), and why:
    the verdict of ``redbeat status``."""

    word: str
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.word, "reason": "; ".join(self.reasons) or "beat ticks and runs go out"}


def health_of(status: dict[str, Any]) -> Health:
    problems = unhealthy_reasons(status, MAX_TICK_AGE)
    if problems:
        return Health("unhealthy", tuple(problems))
    degraded = degraded_reasons(status)
    return Health("degraded", tuple(degraded)) if degraded else Health("healthy")


@dataclass(frozen=True)
class Dispatch:
    """One recent run of an entry, from its history: for the lateness chart."""

    name: str
    scheduled: float
    dispatched: float
    lateness: float
    outcome: str


def overview(app: Celery, status: dict[str, Any], counted: Census) -> dict[str, Any]:
    """The overview as the API gives it (docs/web.rst, *API*)."""
    store = get_store(app)
    now = store.time()
    holder = status["lock_holder"]
    beat = status["beat"] or {}
    given_up = status["runs_given_up"]
    return {
        "read_at": now,
        "health": health_of(status).as_dict(),
        "beat": None if holder is None else {
            "host": holder["host"], "pid": holder["pid"], "since": holder.get("since"),
            "version": beat.get("version"),
        },
        "last_tick": status["last_tick"],
        "last_tick_age": status["last_tick_age"],
        "lock_timeout": beat.get("lock_timeout") or ensure_conf(app).lock_timeout,
        "standbys": status["standbys"],
        "counts": {**{state.value: count for state, count in counted.by_state().items()},
                   "orphans": counted.orphans, "entries": status["entries"], "due": status["due"],
                   "late": late_count(app, now), "failing": counted.failing,
                   "in_flight": status["in_flight"], "given_up_recently": given_up["count"] if given_up else 0},
        "given_up_recently": given_up,
        "most_overdue_seconds": status["most_overdue_seconds"],
        "most_overdue": most_overdue(app, now),
    }


def _name(store: ScheduleStore, key: bytes) -> str:
    return store.keys.name_of(key_text(key))


# An entry counts as late once it has been due this long: beat takes what is due at its next
# tick (every second or so), so a minute means runs are not going out.
LATE_AFTER = 60.0


def late_count(app: Celery, now: float) -> int:
    """How many entries have been due for more than ``LATE_AFTER`` seconds (score 0, due at
    beat's next tick whenever it was written, is not counted: it says no moment). One ZCOUNT."""
    store = get_store(app)
    return int(store.client.zcount(store.conf.schedule_key, "(0", now - LATE_AFTER))


def most_overdue(app: Celery, now: float, count: int = OVERDUE_SHOWN) -> list[dict[str, Any]]:
    """The entries longest due (lowest scores from 0 to now): one ranged read."""
    store = get_store(app)
    members = store.client.zrangebyscore(store.conf.schedule_key, 0, now, start=0, num=count, withscores=True)
    return [{"name": _name(store, key), "overdue_seconds": round(now - score, 3), "due_now": score == 0}
            for key, score in cast("list[tuple[bytes, float]]", members)]


def recent_dispatches(app: Celery, now: float) -> list[Dispatch]:
    """The recent runs of the entries due next and of the most overdue (``CHART_ENTRIES`` in
    all, ``CHART_RUNS`` each), oldest first: two bounded reads."""
    store = get_store(app)
    key = store.conf.schedule_key
    keys = cast("list[bytes]", store.client.zrangebyscore(key, now, "+inf", start=0, num=CHART_ENTRIES // 2)
                + store.client.zrangebyscore(key, 0, now, start=0, num=CHART_ENTRIES // 2))
    pipe = store.client.pipeline(transaction=False)
    for member in keys:
        pipe.lrange(key_bytes(store.history_key(key_text(member))), 0, CHART_RUNS - 1)
    runs = []
    for member, records in zip(keys, pipe.execute(raise_on_error=False)):
        if isinstance(records, Exception):
            continue  # a history of the wrong type: doctor says so
        runs += [run for run in (_dispatch(_name(store, member), raw) for raw in records) if run is not None]
    return sorted(runs, key=lambda run: run.dispatched)


def _dispatch(name: str, raw: bytes) -> Dispatch | None:
    try:
        record = json.loads(raw)
        scheduled, dispatched = float(record["scheduled"]), float(record["dispatched"])
        outcome = str(record.get("outcome", ""))
    except (ValueError, TypeError, KeyError, RecursionError):
        return None  # another program's record: not charted
    if not all(CHARTABLE[0] <= at <= CHARTABLE[1] for at in (scheduled, dispatched)):
        return None  # NaN, an infinity, or a time no axis can show: not charted either
    return Dispatch(name, scheduled, dispatched, dispatched - scheduled, outcome)
