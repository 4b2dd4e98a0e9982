"""Which beat processes are alive, from what each writes about itself: the active
beat's heartbeat (``<prefix>:heartbeat``) and the standbys' check-ins
(``<prefix>:standbys``). Read by ``redbeat status`` (the standbys) and
``redbeat liveness`` (one host's or one process's beats, active or standby).

Times are Redis's clock, as the beats write them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from celery import Celery

from .client import get_store
from .records import STANDBY_GRACE, Heartbeat, StandbyBeat
from .timeformat import iso

__all__ = ["BeatSeen", "LivenessReport", "fresh_standbys", "liveness", "ACTIVE_MISSED_TICKS"]

# The active beat's heartbeat is stale once its last completed tick is older than
# this many lock timeouts (plus STANDBY_GRACE): it ticks at least thrice per lock
# timeout to renew the lock, and lost it long before then.
ACTIVE_MISSED_TICKS = 3
# Without a lock (redbeat_lock_key = None): as many of beat's longest sleeps.
FALLBACK_INTERVAL = 60.0


def standby_records(raw: Mapping[bytes, bytes] | None) -> list[StandbyBeat]:
    """The readable records of the standbys' hash, by host and pid (a record anyone
    mangled is left out: its beat writes it again at its next poll)."""
    records = []
    for value in (raw or {}).values():
        try:
            records.append(StandbyBeat.from_json(value))
        except ValueError:
            continue
    return sorted(records, key=lambda record: (record.host, record.pid or 0))


def fresh_standbys(raw: Mapping[bytes, bytes] | None, now: float, active_token: str | None = None) -> list[dict]:
    """The standbys still checking in at ``now``, for ``redbeat status``: a record older
    than a few of its polls is a beat that was killed, and is left out."""
    return [{"host": record.host, "pid": record.pid, "version": record.version,
             "last_check": iso(record.last_check), "last_check_age": round(now - record.last_check, 3),
             "since": iso(record.since), "next_check_within": record.next_check_within}
            for record in standby_records(raw) if record.fresh(now) and record.token != active_token]


@dataclass(frozen=True)
class BeatSeen:
    """One beat process as its last record tells: active or standby, how old the record
    is at the time read, and how old it may be while the beat lives."""

    role: str  # "active beat" or "standby"
    token: str
    host: str
    pid: int | None
    age: float  # seconds since its last completed tick (active) or last check (standby)
    limit: float
    stopped_at: float | None = None
    failing: str | None = None  # why its ticks fail, since when

    @property
    def alive(self) -> bool:
        return self.stopped_at is None and self.age <= self.limit

    def line(self) -> str:
        """What the liveness check says about it, in one line."""
        who = f"{self.role} on {self.host} pid {self.pid}"
        if self.stopped_at is not None:
            return f"{who}: stopped at {iso(self.stopped_at)}"
        what = "last tick" if self.role == "active beat" else "last check"
        said = f"{who}: {what} {self.age:.1f}s ago"
        if not self.alive:
            said += f", over {self.limit:g}s: stale (hung or killed)"
        return said + (f"; ticks failing {self.failing}" if self.failing else "")

    @classmethod
    def from_heartbeat(cls, beat: Heartbeat, now: float, max_age: float | None) -> BeatSeen:
        interval = beat.lock_timeout or beat.max_interval or FALLBACK_INTERVAL
        limit = max_age if max_age is not None else ACTIVE_MISSED_TICKS * interval + STANDBY_GRACE
        failing = (f"since {iso(beat.failing_since)}: {beat.error or '(no reason given)'}"
                   if beat.failing_since is not None else None)
        return cls("active beat", beat.token, beat.host, beat.pid, round(now - beat.last_tick, 3), limit,
                   beat.stopped_at, failing)

    @classmethod
    def from_standby(cls, record: StandbyBeat, now: float, max_age: float | None) -> BeatSeen:
        limit = max_age if max_age is not None else record.stale_after()
        return cls("standby", record.token, record.host, record.pid, round(now - record.last_check, 3), limit)


@dataclass(frozen=True)
class LivenessReport:
    """What ``redbeat liveness`` found for a host (or one process of it)."""

    alive: bool
    lines: list[str]


def liveness(app: Celery, host: str, pid: int | None = None, max_age: float | None = None) -> LivenessReport:
    """Whether the beat processes on ``host`` (only ``pid``, if given) are alive, by their
    own records; two round trips.

    Alive: its record is younger than ``max_age`` (default: the record's own limit,
    ``ACTIVE_MISSED_TICKS`` lock timeouts for the active beat, a few polls for a
    standby), and the active beat did not stop. A process seen both as the last
    active beat and as a standby is whichever it wrote last. Without ``pid``, the host
    is alive if any of its beats is (a restarted pod's earlier beat, killed, leaves a
    stale record behind): only the live ones are said then.
    """
    records = get_store(app).beat_records()
    seen = _seen(records.heartbeat, records.standbys, records.now, max_age)
    mine = [beat for beat in seen if beat.host == host and (pid is None or beat.pid == pid)]
    if not mine:
        whom = f"{host} pid {pid}" if pid is not None else host
        return LivenessReport(False, [f"no beat on {whom}: not the active beat, nor checking in as a standby"])
    alive = [beat for beat in mine if beat.alive]
    return LivenessReport(bool(alive), [beat.line() for beat in alive or mine])


def _seen(heartbeat: bytes | None, standbys: Mapping[bytes, bytes] | None, now: float,
          max_age: float | None) -> list[BeatSeen]:
    """Each beat process once, by token, as its newest record tells."""
    by_token = {record.token: BeatSeen.from_standby(record, now, max_age) for record in standby_records(standbys)}
    if heartbeat is not None:
        try:
            beat, _ = Heartbeat.from_json(heartbeat)
        except ValueError:
            return list(by_token.values())
        active = BeatSeen.from_heartbeat(beat, now, max_age)
        standby = by_token.get(active.token)
        # A beat that lost the lock checks in as a standby after its last tick.
        if standby is None or standby.age > active.age:
            by_token[active.token] = active
    return list(by_token.values())
