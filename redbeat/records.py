"""What RedBeat stores, as types: each record with its JSON in and out.

- ``Meta``: an entry's ``meta`` field, its last run and run count (2.x's format);
- ``Status``: an entry's ``status`` field, what beat knows besides meta;
- ``Parked``: an entry's ``parked`` field, why beat set it aside;
- ``InFlight``: a record of ``<prefix>:inflight``, a run claimed and not yet published;
- ``HistoryRecord``: a record of ``<prefix>:history:<name>``, what became of a run;
- ``RunEvent``: a record of ``<prefix>:worker-events:<name>``, what a worker did with a run;
- ``Heartbeat``: ``<prefix>:heartbeat``, who ticks and how well;
- ``StandbyBeat``: a record of ``<prefix>:standbys``, a beat standing by and its last check.

An entry's definition is the entry itself (``entry.RedBeatSchedulerEntry``,
encoded by ``decoder``). See docs/format.rst for every field.

Beat writes these on its hot path, once per run dispatched: the writers build
the JSON text directly where ``json.dumps`` of a dict costs several times more.
Anyone can write to Redis: the readers check every field, and raise
ValueError (or return an empty record, where beat rewrites it) rather than
pass on a value of the wrong type.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any, NamedTuple

from .decoder import DecodeError, loads, meta_json, to_timestamp

__all__ = ["Meta", "Status", "LastFailure", "Parked", "InFlight", "HistoryRecord", "Outcome", "OutcomeKind",
           "RunEvent", "RunEventKind",
           "Heartbeat", "GivenUpRun", "StandbyBeat",
           "NEVER", "MAX_TIMESTAMP", "MAX_PUBLISH_ATTEMPTS", "unix_seconds", "decode_json", "same_json"]

# Score of an entry that will not run again (its schedule is over, or it is parked).
NEVER = -1.0
MAX_TIMESTAMP = 253402300800.0  # 10000-01-01: past it, datetime cannot follow
# A run whose publishing keeps failing (the broker is down) is retried this
# many times, backing off from 1 s to 30 s, then given up with an error log.
MAX_PUBLISH_ATTEMPTS = 10
RETRY_BACKOFF_MAX = 30.0
# JSON string literal of a str, as json.dumps writes it (ASCII only).
_string = json.encoder.encode_basestring_ascii


def unix_seconds(value: Any) -> float | None:
    """``value`` if it is a JSON number of UNIX seconds a datetime can hold, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < MAX_TIMESTAMP:
        return None
    return float(value)


def _json_object(raw: bytes | str, what: str) -> dict:
    """The JSON object in ``raw``; ValueError if it is none (``what`` names it in the message)."""
    try:
        fields = json.loads(raw)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if not isinstance(fields, dict):
        raise ValueError(f"{what} is a JSON object")
    return fields


def _json_scalar(value: Any) -> str:
    """``json.dumps(value)``, sooner for what records hold most: finite floats, ints and text."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    if kind is str:
        return _string(value)
    return json.dumps(value)


def same_json(stored: bytes | str | None, written: bytes | str) -> bool:
    """Whether a stored JSON text holds the same value as ``written`` (key order and 60
    vs 60.0 aside); nothing stored, or text that is no JSON, is not the same."""
    try:
        return stored is not None and json.loads(stored) == json.loads(written)
    except (ValueError, RecursionError):
        return False


def _checked_seconds(value: Any) -> float | None:
    """None stays None; anything else must be UNIX seconds (ValueError otherwise)."""
    if value is None:
        return None
    seconds = float(value)
    if not 0 <= seconds < MAX_TIMESTAMP:
        raise ValueError("not UNIX seconds")
    return seconds


def decode_json(raw: bytes | str, what: str) -> Any:
    """JSON of a stored field, with the codec's objects; DecodeError naming ``what`` if it is none."""
    try:
        return loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not valid UTF-8") from exc
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # also integers past Python's digit limit, deep nesting
        raise DecodeError(f"{what} is not valid JSON: {type(exc).__name__}: {exc}") from exc


# -- an entry's hash ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Meta:
    """An entry's ``meta``: when it last ran (None: never) and how many runs it had."""

    last_run_at: datetime | None = None
    total_run_count: int = 0

    def to_json(self) -> str:
        return meta_json(self.last_run_at, self.total_run_count)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Meta:
        """Read ``meta`` (none stored: never run); DecodeError naming the field that is wrong."""
        if not raw:
            return cls()
        decoded = decode_json(raw, "meta")
        if not isinstance(decoded, dict):
            raise DecodeError("meta must be a JSON object")
        last_run_at = decoded.get("last_run_at")
        if last_run_at is not None and not isinstance(last_run_at, datetime):
            raise DecodeError("meta field 'last_run_at' must be a datetime object or null")
        count = decoded.get("total_run_count") or 0
        if not isinstance(count, int) or isinstance(count, bool):
            raise DecodeError("meta field 'total_run_count' must be an integer")
        return cls(last_run_at, count)


@dataclass(frozen=True, slots=True)
class LastFailure:
    """The last run of an entry that beat gave up publishing: when (UNIX seconds), the
    class of the failure (a ``failures.FailureKind`` value) and why, in words."""

    at: float
    kind: str
    reason: str

    def as_json_object(self) -> dict[str, Any]:
        return {"at": self.at, "class": self.kind, "reason": self.reason}

    @classmethod
    def from_json_object(cls, value: Any) -> LastFailure | None:
        """Read the ``last_failure`` object of a status; None if it is not one."""
        if not isinstance(value, dict):
            return None
        at, kind, reason = unix_seconds(value.get("at")), value.get("class"), value.get("reason")
        if at is None or not isinstance(kind, str) or not isinstance(reason, str):
            return None
        return cls(at, kind, reason)


@dataclass(frozen=True)
class Status:
    """What beat records about an entry besides ``meta`` (the ``status`` field)."""

    next_slot: datetime | None = None
    last_dispatched_at: float | None = None
    missed: int = 0
    last_missed_at: float | None = None
    definition: str | None = None  # digest of the definition next_slot was computed from
    # Runs claimed (counted in meta's total_run_count) that never reached the broker:
    # those given up, the last of them, and those missed in flight (also in ``missed``).
    given_up: int = 0
    last_failure: LastFailure | None = None
    missed_in_flight: int = 0
    # The slot of a run waiting for the entry's previous run to finish (overlap buffer_one).
    waiting_slot: float | None = None

    def to_json(self, **changes: Any) -> str:
        """The record, with ``changes`` (field names and new values) applied; None fields are left out,
        and so are the counts of runs not published while they are 0."""
        fields: dict[str, Any] = {"next_slot": self.next_slot, "last_dispatched_at": self.last_dispatched_at,
                                  "missed": self.missed, "last_missed_at": self.last_missed_at,
                                  "definition": self.definition, "given_up": self.given_up,
                                  "last_failure": self.last_failure, "missed_in_flight": self.missed_in_flight,
                                  "waiting_slot": self.waiting_slot}
        fields.update(changes)
        if fields["next_slot"] is not None:
            fields["next_slot"] = to_timestamp(fields["next_slot"])
        fields["given_up"] = fields["given_up"] or None
        fields["missed_in_flight"] = fields["missed_in_flight"] or None
        if fields["last_failure"] is not None:
            fields["last_failure"] = fields["last_failure"].as_json_object()
        # The text json.dumps writes, built directly: beat writes a status per entry it decides.
        return "{" + ", ".join([f"{_string(name)}: {_json_scalar(value)}"
                                for name, value in fields.items() if value is not None]) + "}"

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Status:
        """Read ``status``; an unreadable one counts as empty (beat rewrites it)."""
        if not raw:
            return cls()
        try:
            fields = json.loads(raw)
            slot = fields.get("next_slot")
            return cls(
                next_slot=None if slot is None else datetime.fromtimestamp(float(slot), timezone.utc),
                last_dispatched_at=_checked_seconds(fields.get("last_dispatched_at")),
                missed=int(fields.get("missed") or 0),
                last_missed_at=_checked_seconds(fields.get("last_missed_at")),
                definition=fields.get("definition") if isinstance(fields.get("definition"), str) else None,
                given_up=int(fields.get("given_up") or 0),
                last_failure=LastFailure.from_json_object(fields.get("last_failure")),
                missed_in_flight=int(fields.get("missed_in_flight") or 0),
                waiting_slot=_checked_seconds(fields.get("waiting_slot")),
            )
        except (ValueError, TypeError, AttributeError, OverflowError, OSError, RecursionError):
            return cls()


@dataclass(frozen=True, slots=True)
class Parked:
    """An entry's ``parked`` field: why beat set it aside, and when (UNIX seconds)."""

    reason: str
    parked_at: float | None = None

    def to_json(self) -> str:
        return json.dumps({"reason": self.reason, "parked_at": self.parked_at})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Parked:
        """Read ``parked`` as written by anyone: any text is a reason ("parked" if it gives none)."""
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            return cls(text or "parked")
        reason = record.get("reason") if isinstance(record, dict) else record
        parked_at = unix_seconds(record.get("parked_at")) if isinstance(record, dict) else None
        return cls("parked" if reason is None or reason == "" else str(reason), parked_at)


# -- runs ------------------------------------------------------------------------------------

@dataclass
class InFlight:
    """A run claimed for publishing, kept in ``<prefix>:inflight`` until published.

    Whoever holds the lock publishes a run whose record is still there at
    ``retry_at``: the beat that claimed it died, paused, or met a broker error.
    """

    task_id: str
    key: str
    scheduled: float
    claimed_at: float
    token: str
    retry_at: float
    attempts: int = 0
    # Asked for with run_now, not a slot of the schedule: no deadline or catch-up applies.
    run_now: bool = False
    # UNIX seconds after which the run must not reach the broker (its entry's
    # starting deadline); set by beat before publishing, not stored.
    publish_by: float | None = field(default=None, compare=False)

    def to_json(self) -> str:
        # ``run_now`` only when true, so that the records of slots read as before.
        return (f'{{"task_id": {_string(self.task_id)}, "key": {_string(self.key)}, "scheduled": {self.scheduled!r}, '
                f'"claimed_at": {self.claimed_at!r}, "token": {_string(self.token)}, '
                f'"retry_at": {self.retry_at!r}, "attempts": {int(self.attempts)}'
                + (', "run_now": true}' if self.run_now else "}"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> InFlight:
        """Read a record; unknown fields are ignored, wrong types raise ValueError or TypeError."""
        fields = json.loads(raw)
        run = cls(
            task_id=str(fields["task_id"]), key=str(fields["key"]), scheduled=float(fields["scheduled"]),
            claimed_at=float(fields["claimed_at"]), token=str(fields.get("token", "")),
            retry_at=float(fields["retry_at"]), attempts=int(fields.get("attempts", 0)),
            run_now=fields.get("run_now") is True,
        )
        if not all(0 <= moment < MAX_TIMESTAMP for moment in (run.scheduled, run.claimed_at, run.retry_at)):
            raise ValueError("times in an in-flight record must be UNIX seconds")
        return run

    def failed_at(self, now: float) -> bool:
        """Count a failed publish; True if the run has had all its attempts."""
        self.attempts += 1
        self.retry_at = now + min(2.0 ** (self.attempts - 1), RETRY_BACKOFF_MAX)
        return self.attempts >= MAX_PUBLISH_ATTEMPTS

    def late_at(self, now: float) -> bool:
        """Whether ``now`` is past the moment the run had to reach the broker by."""
        return self.publish_by is not None and now > self.publish_by


class OutcomeKind(str, Enum):
    """What became of a run, as its history record says (the value is what is stored)."""

    PUBLISHED = "published"
    GIVEN_UP = "given-up"  # it cannot be published, or the broker did not take it in all its attempts
    MISSED = "missed"  # not published: its starting deadline passed, or catch-up superseded it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One record of an entry's run history, newest first in ``<prefix>:history:<name>``."""

    task_id: str
    scheduled: float  # the slot (UNIX seconds), or when a run-now was asked for
    dispatched: float  # when it was published, given up or found missed
    outcome: str  # an OutcomeKind's value; a record written by a newer RedBeat may hold another word
    reason: str | None = None  # why it was not published

    @property
    def lateness(self) -> float:
        return round(self.dispatched - self.scheduled, 6)

    def to_json(self) -> str:
        return (f'{{"task_id": {json.dumps(self.task_id)}, "scheduled": {self.scheduled!r}, '
                f'"dispatched": {self.dispatched!r}, "lateness": {self.lateness!r}, '
                f'"outcome": {json.dumps(str(self.outcome))}'
                + (f', "reason": {json.dumps(self.reason)}}}' if self.reason else "}"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> HistoryRecord:
        """Read a record; ValueError if it is not one (wrong JSON, a field missing or of another type)."""
        fields = _json_object(raw, "a history record")
        scheduled, dispatched = unix_seconds(fields.get("scheduled")), unix_seconds(fields.get("dispatched"))
        task_id, outcome, reason = fields.get("task_id"), fields.get("outcome"), fields.get("reason")
        if scheduled is None or dispatched is None or not isinstance(task_id, str) or not isinstance(outcome, str):
            raise ValueError("a history record has task_id, scheduled, dispatched and outcome")
        return cls(task_id, scheduled, dispatched, outcome, reason if isinstance(reason, str) else None)


class Outcome(NamedTuple):
    """What became of a run in flight, to be recorded in its entry's history (a plain
    (run, outcome, when[, reason]) tuple serves too)."""

    run: InFlight
    outcome: OutcomeKind | str
    when: float  # UNIX seconds
    reason: str | None = None  # why it was not published

    def history_record(self) -> HistoryRecord:
        return HistoryRecord(self.run.task_id, self.run.scheduled, self.when, str(self.outcome), self.reason)


class RunEventKind(str, Enum):
    """What a worker reported of a run (the value is what is stored): it started, or it
    ended one way (the Celery state it ended in, in words)."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"  # it raised Retry: the same task id runs again later
    REVOKED = "revoked"
    IGNORED = "ignored"  # the task raised celery.exceptions.Ignore
    REJECTED = "rejected"  # the task raised celery.exceptions.Reject

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One record of ``<prefix>:worker-events:<name>``, newest first: what a worker
    reported of a run of the entry (written by ``worker.py``, when a worker enables it).

    ``at`` is the worker host's clock (UNIX seconds), ``duration`` the seconds the task
    ran, for the events that end a run, ``exception`` the type name of what it raised.
    """

    task_id: str
    event: str  # a RunEventKind's value; a record written by a newer RedBeat may hold another word
    at: float
    worker: str = ""  # the worker's node name (celery@host)
    pid: int | None = None
    scheduled: float | None = None  # the slot, from the message's redbeat_scheduled header
    exception: str | None = None
    duration: float | None = None
    retries: int = 0  # Celery's count of the run's retries when it happened (request.retries)

    def to_json(self) -> str:
        """What ``json.dumps`` of its set fields writes (the claim reads the start of it:
        ``workerevents.task_id_prefix``), written field by field: a worker writes one per event."""
        written = []
        for name in _RUN_EVENT_FIELDS:
            value = getattr(self, name)
            if value is not None and (value or name != "retries"):
                written.append(f'"{name}": {_json_scalar(value)}')
        return "{" + ", ".join(written) + "}"

    @classmethod
    def from_json(cls, raw: bytes | str) -> RunEvent:
        """Read a record; ValueError if it is not one (anyone can write to Redis: the
        optional fields of the wrong type read as unset)."""
        fields = _json_object(raw, "a worker event")
        task_id, event, at = fields.get("task_id"), fields.get("event"), unix_seconds(fields.get("at"))
        if not isinstance(task_id, str) or not isinstance(event, str) or at is None:
            raise ValueError("a worker event has task_id, event and at")
        worker, pid, exception = fields.get("worker"), fields.get("pid"), fields.get("exception")
        duration, retries = fields.get("duration"), fields.get("retries")
        return cls(task_id, event, at, worker if isinstance(worker, str) else "",
                   pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                   unix_seconds(fields.get("scheduled")), exception if isinstance(exception, str) else None,
                   float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool)
                   and 0 <= duration < MAX_TIMESTAMP else None,
                   retries if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0 else 0)

    @property
    def ends_run(self) -> bool:
        """Whether the run is over with this event (a retried run runs again, under the same id)."""
        return self.event not in (RunEventKind.STARTED, RunEventKind.RETRIED)


_RUN_EVENT_FIELDS = tuple(field.name for field in fields(RunEvent))


# -- the active beat -------------------------------------------------------------------------

@dataclass
class Heartbeat:
    """Who ticks, and how well: written by the active beat as each tick starts.

    Health means ticks complete, not that they start: ``last_tick`` is the
    last tick that completed, ``failing_since`` and ``error`` say since when
    and why the ticks after it fail. ``stopped_at`` is set as beat stops.
    """

    token: str
    last_tick: float
    host: str = ""
    pid: int | None = None
    version: str = ""
    active_since: float | None = None
    lock_timeout: float | None = None
    max_interval: float | None = None
    clock_offset: float = 0.0  # Redis's clock minus the beat host's, seconds
    failing_since: float | None = None
    error: str | None = None
    claiming_paused: str | None = None  # why claiming is paused (too many runs in flight)
    claiming_paused_since: float | None = None
    stopped_at: float | None = None
    # Runs given up since this beat became active (unset while none), and the last of them.
    given_up: int | None = None
    last_given_up: GivenUpRun | None = None

    def to_json(self) -> str:
        # Fields that are unset are left out: readers of 3.0's heartbeat expect no others.
        fields = {name: value for name, value in asdict(self).items()
                  if value is not None and not (name == "error" and self.failing_since is None)}
        if self.last_given_up is not None:
            fields["last_given_up"] = self.last_given_up.as_json_object()
        return json.dumps(fields)

    @classmethod
    def from_json(cls, raw: bytes | str) -> tuple[Heartbeat, dict]:
        """Read a heartbeat: the record, with each field of the wrong type as unset, and
        the JSON object as written. ValueError if it is none (no JSON object with last_tick)."""
        try:
            fields = json.loads(raw)
        except (ValueError, RecursionError):
            fields = None
        last_tick = unix_seconds(fields.get("last_tick")) if isinstance(fields, dict) else None
        if not isinstance(fields, dict) or last_tick is None:
            raise ValueError("no JSON object with last_tick")

        def text(name: str) -> str | None:
            return fields[name] if isinstance(fields.get(name), str) else None

        def number(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        def whole(name: str) -> int | None:
            value = fields.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        beat = cls(token=text("token") or "", last_tick=last_tick, host=text("host") or "",
                   pid=whole("pid"), version=text("version") or "",
                   active_since=unix_seconds(fields.get("active_since")),
                   lock_timeout=number("lock_timeout"), max_interval=number("max_interval"),
                   clock_offset=number("clock_offset") or 0.0,
                   failing_since=unix_seconds(fields.get("failing_since")), error=text("error"),
                   claiming_paused=text("claiming_paused"),
                   claiming_paused_since=unix_seconds(fields.get("claiming_paused_since")),
                   stopped_at=unix_seconds(fields.get("stopped_at")),
                   given_up=whole("given_up"),
                   last_given_up=GivenUpRun.from_json_object(fields.get("last_given_up")))
        return beat, fields


@dataclass(frozen=True, slots=True)
class GivenUpRun:
    """The last run the active beat gave up publishing: when (UNIX seconds, Redis's
    clock), its entry's key, the class of the failure and why, in words."""

    at: float
    key: str
    kind: str
    reason: str

    def as_json_object(self) -> dict[str, Any]:
        return {"at": self.at, "key": self.key, "class": self.kind, "reason": self.reason}

    @classmethod
    def from_json_object(cls, value: Any) -> GivenUpRun | None:
        """Read the heartbeat's ``last_given_up``; None if it is not one."""
        if not isinstance(value, dict):
            return None
        at, key, kind, reason = unix_seconds(value.get("at")), value.get("key"), value.get("class"), value.get("reason")
        if at is None or not all(isinstance(word, str) for word in (key, kind, reason)):
            return None
        return cls(at, str(key), str(kind), str(reason))


# -- beats standing by -----------------------------------------------------------------------

# A reader ignores a standby's record once its last check is older than this
# many of its poll intervals, plus STANDBY_GRACE seconds: the beat was killed.
STANDBY_MISSED_CHECKS = 3
STANDBY_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class StandbyBeat:
    """A beat standing by (another holds the lock), as it checks in at each poll of the
    lock: a record of ``<prefix>:standbys``, by its token. Times are Redis's clock."""

    token: str
    host: str
    pid: int | None
    version: str
    last_check: float
    next_check_within: float  # seconds: its poll interval
    since: float  # when it began standing by

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> StandbyBeat:
        """Read a record; ValueError if it is not one."""
        fields = _json_object(raw, "a standby record")
        last_check, since = unix_seconds(fields.get("last_check")), unix_seconds(fields.get("since"))
        within, pid = fields.get("next_check_within"), fields.get("pid")
        token, host, version = fields.get("token"), fields.get("host"), fields.get("version")
        if (last_check is None or since is None or not isinstance(within, (int, float)) or isinstance(within, bool)
                or not 0 <= within < MAX_TIMESTAMP or not all(isinstance(t, str) for t in (token, host, version))):
            raise ValueError("a standby record has token, host, version, last_check, next_check_within and since")
        return cls(str(token), str(host), pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                   str(version), last_check, float(within), since)

    def stale_after(self) -> float:
        """Seconds after its last check at which the record no longer counts (the beat died)."""
        return STANDBY_MISSED_CHECKS * self.next_check_within + STANDBY_GRACE

    def fresh(self, now: float) -> bool:
        return now - self.last_check <= self.stale_after()
