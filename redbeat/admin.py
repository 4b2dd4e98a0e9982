"""What operators ask of a schedule: list it, export and import it, check on
beat, find what is wrong. Plain functions over a ``ScheduleStore``, returning
plain data; ``cli`` prints them."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Celery
from celery.schedules import crontab, schedule, solar
from redis.exceptions import ResponseError

from . import rollback
from .client import get_store
from .entry import RedBeatSchedulerEntry, overlap_policy
from .keys import key_bytes
from .liveness import fresh_standbys
from .overlap import Overlap
from .records import MAX_TIMESTAMP, Heartbeat, InFlight, Parked, RunEvent, RunEventKind, Status, unix_seconds
from .runstates import STATE_FIELDS, RunState, run_states
from .schedules import clocked, rrule
from .store import ScheduleStore
from .timeformat import iso
from .validation import WRITABLE_FIELDS, is_misplaced, unknown_field_words

UTC = timezone.utc
SCAN_CHUNK = 1000
# A run in flight whose retry is this many seconds overdue is stuck: beat retries
# a publish every few seconds while it holds the lock.
STUCK_AFTER = 60.0
# `redbeat status` reports beat degraded while its last run given up is younger than this (seconds).
GIVEN_UP_WINDOW = 15 * 60.0
# The first UNIX second datetime cannot hold (year 10000): later scores are never due in practice.
END_OF_TIME = MAX_TIMESTAMP

__all__ = ["EntryView", "entries", "describe_schedule", "beat_status", "doctor", "Finding", "WrongType",
           "wrong_types", "history", "history_dict", "key_text", "key_bytes", "in_flight_counts", "run_states_of",
           "unhealthy_reasons", "degraded_reasons"]


def key_text(raw: bytes | str) -> str:
    """A key or field name as text that gives back its exact bytes (``key_bytes``):
    bytes that are not UTF-8 become surrogates, which ``printable`` shows as ``\\xNN``."""
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


@dataclass
class EntryView:
    """One entry as stored, decoded as far as it goes.

    ``kind`` is the Redis type of the key ("hash" for an entry, "none" for an
    orphan member), or "foreign" for a member outside the prefix, which is no
    RedBeat entry and is not read.
    """

    key: str
    name: str
    score: float | None
    fields: dict[str, bytes]
    kind: str = "hash"
    entry: RedBeatSchedulerEntry | None = None
    error: str | None = None
    # What the workers reported last of its runs (read only when asked: ``entries(worker_events=True)``).
    last_worker_event: RunEvent | None = None

    @property
    def parked(self) -> str | None:
        """Why beat parked it (any text a parked field holds), None if it is not parked."""
        raw = self.fields.get("parked")
        return None if raw is None else Parked.from_json(raw).reason

    @property
    def next_run(self) -> datetime | None:
        """When beat next looks at it; None for none, and for a score of 0 (``due_now``)."""
        if self.score is None or not 0 < self.score < END_OF_TIME:
            return None
        return datetime.fromtimestamp(self.score, UTC)

    def matches(self, text: str) -> bool:
        """Whether its name, task or description holds ``text``, in any case (``list --search``)."""
        entry = self.entry
        said = [self.name, entry.task or "", entry.description or ""] if entry else [self.name]
        return any(text.casefold() in str(words).casefold() for words in said)

    def summary(self, in_flight: int = 0) -> dict:
        """The entry for people and scripts: what ``list --json`` prints; ``in_flight``
        is how many of its runs wait in flight (``in_flight_counts``)."""
        entry = self.entry
        status = Status.from_json(self.fields.get("status"))
        failure = status.last_failure
        last = None if self.last_worker_event is None else run_states([self.last_worker_event]).popitem()[1]
        return {
            "name": self.name,
            "key": self.key,
            "task": entry.task if entry else None,
            "description": entry.description if entry else None,
            "schedule": describe_schedule(entry.schedule) if entry else None,
            "enabled": entry.enabled if entry else None,
            "next_run": _iso(self.next_run),
            # Score 0: due at beat's next tick (how other programs add an entry), no moment to say.
            "due_now": self.score == 0,
            "last_run": _iso(entry.last_run_at) if entry else None,
            "last_dispatched": iso(status.last_dispatched_at),
            "total_run_count": entry.total_run_count if entry else None,
            "published": _published(entry.total_run_count, status, in_flight) if entry else None,
            "given_up": status.given_up,
            "in_flight": in_flight,
            "last_failure": None if failure is None else {"at": iso(failure.at), "class": failure.kind,
                                                          "reason": failure.reason},
            "missed": status.missed,
            "parked": self.parked,
            "error": self.error,
            # The run the workers reported last (docs/outcomes.rst), if they record runs.
            "last_run_state": None if last is None else last.state,
            "last_run_exception": None if last is None else last.exception,
            "last_run_duration": None if last is None else last.duration,
            "last_run_reported": None if last is None else iso(last.reported_at),
            # The run an overlap policy of buffer_one holds back (scheduling.rst).
            "waiting_run": iso(status.waiting_slot),
        }


def _published(total_run_count: int, status: Status, in_flight: int) -> int:
    """How many runs reached the broker: meta counts every run claimed, like celery-redbeat
    2.x, so the runs never published (given up, missed in flight: counted in status) and
    those still waiting in flight are taken off. Derived rather than counted, because
    counting would add a status write for every run published."""
    return max(total_run_count - status.given_up - status.missed_in_flight - in_flight, 0)


def in_flight_counts(app: Celery) -> Counter[str]:
    """How many runs of each entry (by key) wait in flight; one read of the in-flight hash
    (none counted if that key holds another type: ``doctor`` says so)."""
    try:
        return Counter(run.key for run in get_store(app).in_flight()[1])
    except ResponseError:
        return Counter()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def entries(app: Celery, keys: Sequence[str] | None = None, match: str | None = None,
            worker_events: bool = False) -> Iterator[EntryView]:
    """Every entry in the schedule, each once, in no particular order, or those whose name
    matches the Redis glob ``match`` (filtered by Redis); or those of ``keys`` (given as
    ``key_text``), scheduled or not. With ``worker_events``, each view has the last event
    the workers reported of its runs (one more round trip per chunk of entries)."""
    store = get_store(app)
    if keys is None:
        for chunk in store.schedule_members(SCAN_CHUNK, match):
            # A member gone by the time it is read left the schedule during the scan.
            yield from (view for view in _views(app, store, chunk, worker_events) if view.score is not None)
    else:
        yield from _views(app, store, [key_bytes(key) for key in keys], worker_events)


def _last_worker_events(store: ScheduleStore, keys: list[bytes]) -> dict[bytes, RunEvent]:
    """The last readable event of each entry key (those outside the prefix are no entries)."""
    prefix = store.conf.key_prefix.encode()
    entry_keys = [key for key in keys if key.startswith(prefix)]
    events: dict[bytes, RunEvent] = {}
    for key, raw in zip(entry_keys, store.last_worker_events([key_text(key) for key in entry_keys])):
        if raw is None:
            continue
        try:
            events[key] = RunEvent.from_json(raw)
        except ValueError:
            continue  # another program's junk: as if nothing were reported
    return events


def _views(app: Celery, store: ScheduleStore, keys: list[bytes], worker_events: bool = False) -> Iterator[EntryView]:
    last_events = _last_worker_events(store, keys) if worker_events else {}
    for raw_key, (score, raw) in zip(keys, store.read_entries(keys)):
        key = key_text(raw_key)
        view = EntryView(key=key, name=store.keys.name_of(key), score=score,
                         fields={}, last_worker_event=last_events.get(raw_key))
        if raw is None:
            view.kind = "foreign"
            view.error = f"member outside the prefix {store.conf.key_prefix!r}: no RedBeat entry (beat drops it)"
        elif isinstance(raw, str):
            view.kind = raw
            view.error = f"the key is a {raw}, not an entry hash (beat drops the member)"
        elif not raw:
            view.kind = "none"
            view.error = "no entry hash under this key (orphan member)"
        else:
            view.fields = {key_text(name): value for name, value in raw.items()}
            _decode(app, view)
        yield view


def _decode(app: Celery, view: EntryView) -> None:
    """Decode the view's entry, or say why it cannot be: whatever is wrong with
    one entry shows on its own row and never stops a command."""
    if "definition" not in view.fields:
        view.error = "hash has no 'definition' field"
        return
    try:
        view.entry = RedBeatSchedulerEntry.from_stored(
            view.fields["definition"], view.fields.get("meta"), app=app, key=view.key,
            status=view.fields.get("status"))
        view.summary()
    except Exception as exc:
        view.entry = None
        view.error = str(exc) or type(exc).__name__


def describe_schedule(sched: Any) -> str:
    """A schedule in words: ``every 30s``, ``at 02:05 Mon in Europe/Paris``."""
    if isinstance(sched, clocked):
        return f"once at {sched.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(sched, crontab):
        return _describe_cron(sched)
    if isinstance(sched, rrule):
        zone = f" in {sched.timezone}" if sched.timezone else ""
        return str(sched.rrule).replace("\n", " ") + zone
    if isinstance(sched, solar):
        return f"at {sched.event.replace('_', ' ')} at {sched.lat}, {sched.lon}"
    if isinstance(sched, schedule):
        words = f"every {_duration(sched.run_every)}"
        return words + " (relative)" if sched.relative else words
    return repr(sched)


WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def _describe_cron(cron: crontab) -> str:
    zone = f" in {cron.timezone}" if getattr(cron, "timezone", None) else ""
    simple_time = len(cron.minute) == 1 and len(cron.hour) == 1
    every_day = len(cron.day_of_month) == 31 and len(cron.month_of_year) == 12
    if simple_time and every_day:
        days = "" if len(cron.day_of_week) == 7 else " " + ",".join(WEEKDAYS[d] for d in sorted(cron.day_of_week))
        return f"at {min(cron.hour):02d}:{min(cron.minute):02d}{days}{zone}"
    fields = (cron._orig_minute, cron._orig_hour, cron._orig_day_of_month, cron._orig_month_of_year,
              cron._orig_day_of_week)
    return "cron '" + " ".join(str(f) for f in fields) + "'" + zone


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# -- RedBeat's own keys --------------------------------------------------------------------

TYPE_WORDS = {"zset": "sorted set", "set": "set", "string": "string", "hash": "hash", "list": "list"}

# What to do about each of RedBeat's own keys when it holds another type.
FIXES = {
    "schedule": "beat cannot read the schedule. Move it aside (RENAME {key} {key}.bad); `redbeat doctor` "
                "then lists the entries to ZADD back",
    "statics": "the active beat moves it aside and writes the names again when it next writes its static "
               "entries (as it takes the lock)",
    "lock": "the next beat to take the lock replaces it; if none does, DEL {key}",
    "inflight": "the active beat moves it aside at its next tick; if none does, no run can be recorded in flight",
    "heartbeat": "DEL {key}; beat writes it again at its next tick",
    "standbys": "DEL {key}; the beats standing by check in there again at their next poll",
    "history": "DEL {key}; beat starts the entry's history again",
    "worker-events": "DEL {key}; the workers that record runs start the entry's list again",
    "run-outcomes": "DEL {key}; the workers that record runs count again from 0 (Prometheus reads a counter "
                    "reset)",
    "failing": "DEL {key}; the workers that record runs add each entry again when its next run fails",
}


@dataclass
class WrongType:
    """One of RedBeat's own keys holding another Redis type than it must."""

    role: str
    key: str
    found: str
    expected: str

    @property
    def stops_beat(self) -> bool:
        """Whether beat cannot dispatch while the key is wrong."""
        return self.role in ("schedule", "inflight", "lock")

    def explanation(self) -> str:
        return (f"{self.key} is a {TYPE_WORDS.get(self.found, self.found)}, not a {TYPE_WORDS[self.expected]}: "
                + FIXES[self.role].format(key=self.key))

    def as_dict(self) -> dict:
        return {"key": self.key, "found": self.found, "expected": self.expected, "stops_beat": self.stops_beat,
                "explanation": self.explanation()}


def wrong_types(app: Celery) -> list[WrongType]:
    """RedBeat's own keys (schedule, statics, lock, inflight, heartbeat, standbys, the workers' outcome
    counts and failing set) that hold another type."""
    store = get_store(app)
    keys = store.own_keys()
    return [WrongType(role, keys[role], found, store.OWN_KEY_TYPES[role])
            for role, found in store.own_key_types().items() if found not in ("none", store.OWN_KEY_TYPES[role])]


def history(app: Celery, key: str) -> tuple[list[Any], WrongType | None]:
    """An entry's recent runs, newest first: each a dict as beat wrote it, or
    ``{"unreadable": text}``; or the history key when it is of another type."""
    store = get_store(app)
    history_key = store.history_key(key)
    try:
        raw = store.history_records(key)
    except ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        [found] = store.key_types([key_bytes(history_key)])
        return [], WrongType("history", history_key, found, "list")
    records: list[Any] = []
    for record in raw:
        decoded = history_dict(record)
        records.append(decoded if decoded is not None else {"unreadable": key_text(record)})
    return records, None


def history_dict(raw: bytes) -> dict | None:
    """A history record as beat wrote it; None for one that is no JSON object (another program's)."""
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def run_states_of(app: Celery, key: str) -> tuple[dict[str, RunState], WrongType | None]:
    """What the workers reported of the entry's runs, by task id (records that are no
    worker events are skipped); or its worker-events key when it is of another type."""
    store = get_store(app)
    try:
        raw = store.worker_events(key)
    except ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        events_key = store.worker_events_key(key)
        [found] = store.key_types([events_key])
        return {}, WrongType("worker-events", key_text(events_key), found, "list")
    events = []
    for record in raw:
        try:
            events.append(RunEvent.from_json(record))
        except ValueError:
            continue
    return run_states(events), None


def with_run_states(history: list[Any], states: dict[str, RunState]) -> list[Any]:
    """Beat's history records, each readable one with the fields of what the workers
    reported of its run (``STATE_FIELDS``, null when nothing was)."""
    unreported = dict.fromkeys(STATE_FIELDS)
    joined = []
    for record in history:
        if "unreadable" in record and len(record) == 1:
            joined.append(record)
            continue
        state = states.get(record.get("task_id")) if isinstance(record.get("task_id"), str) else None
        joined.append({**record, **(unreported if state is None else state.as_json_fields())})
    return joined


# -- status -------------------------------------------------------------------------------

def beat_status(app: Celery, now: float | None = None) -> dict:
    """Who holds the lock, when beat last ticked, how the schedule stands.

    Keys of the wrong type are listed in ``wrong_types``; what they hold counts as unknown (None).
    ``failing_since`` and ``error`` come from a beat whose ticks fail: it
    still writes its heartbeat, but no tick completes.
    """
    store = get_store(app)
    now = store.time() if now is None else now  # the heartbeat's times are by Redis's clock
    wrong = wrong_types(app)
    overview = store.overview(now)
    token, oldest = overview["lock_token"], overview["oldest_due_score"]
    holder = None
    if token is not None:
        host, _, rest = key_text(token).partition(":")
        pid = rest.partition(":")[0]
        holder = {"token": key_text(token), "host": host, "pid": int(pid) if pid.isdigit() else None}
    beat, fields, heartbeat_error = _heartbeat(overview["heartbeat"])
    if beat and holder and beat.token == holder["token"]:
        holder["since"] = iso(beat.active_since)
    last_tick = beat.last_tick if beat else None
    stopped_at = beat.stopped_at if beat else None
    failing_since = beat.failing_since if beat else None
    # Set while the active beat claims nothing because too many runs wait in flight.
    paused = beat.claiming_paused if beat else None
    policy = store.eviction_policy()
    return {
        "lock_key": store.conf.lock_key,
        "lock_holder": holder,
        "standbys": fresh_standbys(overview["standbys"], now, key_text(token) if token is not None else None),
        "last_tick": iso(last_tick),
        "last_tick_age": None if last_tick is None else round(now - last_tick, 3),
        "stopped_at": iso(stopped_at),
        "failing_since": iso(failing_since),
        "failing_for": None if failing_since is None else round(now - failing_since, 3),
        "error": (beat.error or "(no reason given)") if beat and failing_since is not None else None,
        "beat": fields,
        "heartbeat_error": heartbeat_error,
        "wrong_types": [w.as_dict() for w in wrong],
        "entries": overview["entries"],
        "due": overview["due"],
        "most_overdue_seconds": round(now - oldest, 3) if oldest is not None else 0.0,
        "never_due": overview["never_due"],
        "parked": overview["parked"],
        "in_flight": overview["in_flight"],
        "stuck_in_flight": _stuck_in_flight(store, now, overview["in_flight"]),
        "claiming_paused": paused,
        "claiming_paused_since": iso(beat.claiming_paused_since) if beat and paused else None,
        "runs_given_up": _given_up_recently(beat, now),
        "eviction_policy": policy,
        "eviction_warning": bool(policy and policy.startswith("allkeys")),
    }


def unhealthy_reasons(report: dict, max_age: float) -> list[str]:
    """Why no beat dispatches the schedule, if none does: what makes ``status`` and the
    dashboard say unhealthy (a tick older than ``max_age`` seconds counts as none)."""
    problems = []
    if report["stopped_at"]:
        problems.append("beat stopped")
    elif report["failing_since"]:
        # Failing now, however young its last completed tick: the next ones fail too, most likely.
        problems.append(f"ticks failing for {max(report['failing_for'], 0):.0f}s: {report['error']}")
    elif report["last_tick_age"] is None or report["last_tick_age"] > max_age:
        problems.append(f"no tick within {max_age:g}s")
    return problems + [w["explanation"] for w in report["wrong_types"] if w["stops_beat"]]


def degraded_reasons(report: dict) -> list[str]:
    """Why runs do not go out while beat ticks: a broker that is down or slower than the
    schedule, most likely, which restarting beat would not mend."""
    reasons = []
    if report["claiming_paused"]:
        reasons.append(f"claiming paused: {report['claiming_paused']}")
    given_up = report["runs_given_up"]
    if given_up:
        reasons.append(f"{given_up['count']} run(s) given up since beat became active, the last of {given_up['key']} "
                       f"{given_up['age']:.0f}s ago ({given_up['class']}: {given_up['reason']}); `redbeat doctor` "
                       f"explains each entry")
    if report["stuck_in_flight"]:
        reasons.append(f"{report['stuck_in_flight']} runs in flight not published for over "
                       f"{STUCK_AFTER:g}s")
    return reasons


def _given_up_recently(beat: Heartbeat | None, now: float) -> dict | None:
    """The runs the active beat gave up publishing, while the last of them is younger than
    ``GIVEN_UP_WINDOW`` (None otherwise): how many since it became active, and the last."""
    last = beat.last_given_up if beat else None
    if beat is None or last is None or last.at < now - GIVEN_UP_WINDOW:
        return None
    return {"count": beat.given_up or 1, "key": last.key, "class": last.kind, "reason": last.reason,
            "at": iso(last.at), "age": round(now - last.at, 3)}


def is_stuck(run: InFlight, now: float) -> bool:
    """Whether a run in flight is still not published long after its retry was due."""
    return run.retry_at < now - STUCK_AFTER


def _stuck_in_flight(store: ScheduleStore, now: float, in_flight: int | None) -> int | None:
    """How many runs in flight are stuck (None: the in-flight hash cannot be read)."""
    if not in_flight:
        return in_flight
    return sum(is_stuck(run, now) for run in store.in_flight()[1])


def _heartbeat(raw: bytes | None) -> tuple[Heartbeat | None, dict | None, str | None]:
    """The heartbeat beat wrote (as read, and its JSON as written), or why it cannot be read."""
    if raw is None:
        return None, None, None
    try:
        beat, fields = Heartbeat.from_json(raw)
    except ValueError:
        return None, None, ("the heartbeat is unreadable (no JSON object with last_tick): beat rewrites it at its "
                            "next tick")
    return beat, fields, None


# -- doctor -------------------------------------------------------------------------------

@dataclass
class Finding:
    kind: str
    key: str
    explanation: str
    # Worth knowing, nothing wrong: doctor still exits 0 (docs/cli.rst lists which kinds are notices).
    notice: bool = False

    def as_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "explanation": self.explanation, "notice": self.notice}


def doctor(app: Celery, configured_statics: set[str] | None = None) -> list[Finding]:
    """Everything in the schedule that will not run as someone probably expects, explained.

    A key of RedBeat's own of the wrong type is a finding, and the checks that
    need it are left out.
    """
    store = get_store(app)
    wrong = wrong_types(app)
    findings = [Finding("wrong-type", w.key, w.explanation()) for w in wrong]
    broken = {w.role for w in wrong}
    if "schedule" not in broken:
        findings += _schedule_findings(app, store)
    if configured_statics is not None and "statics" not in broken:
        for name in sorted(store.static_names() - configured_statics):
            findings.append(Finding("stale-static", store.key_for(name), "listed as static but no longer "
                                    "in beat_schedule: the next beat to start will delete it", notice=True))
    if "inflight" not in broken:
        _, runs, unreadable = store.in_flight()
        now = store.time()
        for run in runs:
            if is_stuck(run, now):
                findings.append(Finding("stuck-in-flight", run.key, f"run {run.task_id} claimed at "
                                        f"{iso(unix_seconds(run.claimed_at))} is still not published"))
        for task_id in unreadable:
            findings.append(Finding("bad-in-flight", key_text(task_id), "unreadable in-flight record; beat removes it"))
    for key, found in store.misfiled_histories():
        findings.append(Finding("wrong-type", key_text(key), WrongType("history", key_text(key), found,
                                                                        "list").explanation()))
    return findings


def _schedule_findings(app: Celery, store: ScheduleStore) -> list[Finding]:
    findings = []
    scheduled = set()
    risk = rollback.Survey()
    for view in entries(app, worker_events=True):
        scheduled.add(key_bytes(view.key))
        finding = _finding(view)
        if finding is not None:
            findings.append(finding)
        if view.kind == "hash":
            findings += _field_findings(view) + _last_run_findings(view) + _overlap_findings(view)
            risk.add(view.key, view.name, view.score, view.fields)
    findings += _rollback_findings(store, risk, rollback.held(app))
    for key in store.unscheduled_hashes(scheduled):
        findings.append(Finding("unscheduled", key_text(key), "entry hash not in the schedule: beat never looks "
                                f"at it. Add it with ZADD {store.conf.schedule_key} 0 {key_text(key)}"))
    return findings


def _last_run_findings(view: EntryView) -> list[Finding]:
    """A notice when the last run a worker reported of the entry failed (``docs/outcomes.rst``):
    the task's own failure, not the schedule's, so it leaves doctor's exit code as it is."""
    event = view.last_worker_event
    if event is None or event.event != RunEventKind.FAILED:
        return []
    raised = f" raising {event.exception}" if event.exception else ""
    where = f" on {event.worker}" if event.worker else ""
    return [Finding("last-run-failed", view.key, f"its last run (task id {event.task_id}) failed{raised}{where} at "
                    f"{iso(unix_seconds(event.at))}: see redbeat show {view.name}", notice=True)]


def _overlap_findings(view: EntryView) -> list[Finding]:
    """A notice when the entry sets an overlap policy but no worker reported any run of it
    (docs/scheduling.rst): beat cannot tell a run goes on, and runs every slot as ``allow``."""
    entry = view.entry
    if entry is None or view.last_worker_event is not None or overlap_policy(entry) is Overlap.ALLOW:
        return []
    return [Finding("overlap-inactive", view.key, f"overlap is {overlap_policy(entry)}, but no worker reported "
                    "a run of it: beat cannot tell whether a run goes on, so every slot runs (as with allow). "
                    "Enable imports = ['redbeat.worker'] in the workers (docs/outcomes.rst)", notice=True)]


def _field_findings(view: EntryView) -> list[Finding]:
    """The top-level fields of an entry's definition that no entry has, which beat ignores: a
    task option or a schedule word is a problem (the entry does not run as written: a 'queue'
    there sends its task to the default queue); another is a notice (another program's field)."""
    try:
        definition = json.loads(view.fields.get("definition") or b"{}")
    except (ValueError, RecursionError):
        return []  # an unreadable definition is a finding of its own
    if not isinstance(definition, dict):
        return []
    unknown = [str(name) for name in definition if name not in WRITABLE_FIELDS]
    misplaced = [unknown_field_words(name) for name in unknown if is_misplaced(name)]
    others = [repr(name) for name in unknown if not is_misplaced(name)]
    findings = []
    if misplaced:
        findings.append(Finding("misplaced-field", view.key, f"beat ignores the top-level {', '.join(misplaced)}: "
                                f"the entry does not run as written. Move it where it belongs (redbeat edit)"))
    if others:
        findings.append(Finding("unknown-field", view.key, f"fields no entry has, which RedBeat ignores (another "
                                f"program's?): {', '.join(others)}; celery-redbeat 2.x refuses a definition "
                                "with them, so rollback-to-2 drops them", notice=True))
    return findings


def _rollback_findings(store: ScheduleStore, risk: rollback.Survey, held: list[str]) -> list[Finding]:
    """How far celery-redbeat 2.x could run this schedule (docs/migrating.rst)."""
    findings = []
    if risk.unreadable:
        first = "; ".join(f"{plan.key}: {plan.reasons[0]}" for plan in risk.unreadable[:3])
        findings.append(Finding("2x-unreadable", store.conf.schedule_key, f"{len(risk.unreadable)} entries "
                                "celery-redbeat 2.4.2 cannot run as they are (its beat stops at its first tick, or "
                                f"drops or misruns them), such as {first}. Before rolling back run: "
                                "redbeat rollback-to-2", notice=True))
    rolled_back = risk.rolled_back + held
    if rolled_back:
        findings.append(Finding("rolled-back", store.conf.schedule_key, f"{len(rolled_back)} entries still as "
                                f"rollback-to-2 left them (plain semantics, or held out of the schedule), such as "
                                f"{', '.join(rolled_back[:3])}. Run: redbeat rollback-to-2 --undo --apply"))
    return findings


def _finding(view: EntryView) -> Finding | None:
    if view.kind == "none":
        return Finding("orphan", view.key, "member of the schedule with no entry hash: beat removes it at its next "
                       "look (was the entry deleted, or evicted by Redis?)")
    if view.kind == "foreign":
        return Finding("foreign", view.key, f"{view.error}; ZREM it from the schedule")
    if view.kind != "hash":
        return Finding("not-a-hash", view.key, f"{view.error}; the key itself is left alone")
    if view.parked:
        return Finding("parked", view.key, f"set aside by beat: {view.parked}. Fix the definition and ZADD it back "
                       "to the schedule")
    if view.error:
        return Finding("malformed", view.key, f"beat will park it when it comes due: {view.error}")
    if view.score is not None and view.next_run is None and view.score != 0:
        return _never_due_finding(view)
    return _given_up_finding(view)


def _never_due_finding(view: EntryView) -> Finding:
    """An entry beat will not look at again: a notice when it is disabled or its schedule
    has run its course (a one-off that ran), a finding when its schedule has runs to come."""
    entry = view.entry
    said = f"score {view.score:g}: beat will not look at it again"
    try:  # the runs to come, whether it is enabled or not (a one-off that ran may be disabled too)
        finished = entry is not None and not entry.preview(1)
    except Exception:  # a schedule that cannot say its next run: beat parks it when it comes due
        finished = False
    if finished:
        return Finding("finished", view.key, f"{said}: its schedule has no further runs", notice=True)
    if entry is not None and not entry.enabled:
        return Finding("disabled", view.key, f"{said} until it is resumed", notice=True)
    return Finding("never-due", view.key, f"{said}, though its schedule has runs to come: save the entry again "
                   "(redbeat edit, or its definition written again) to give it its score")


def _given_up_finding(view: EntryView) -> Finding | None:
    """Runs beat gave up publishing: a finding while the last run claimed was one of them
    (it will fail again until the entry is fixed), a notice once a later run went out."""
    status = Status.from_json(view.fields.get("status"))
    failure = status.last_failure
    if failure is None:
        return None
    still = status.last_dispatched_at is None or failure.at >= status.last_dispatched_at
    explanation = (f"{status.given_up} run(s) given up, the last at {iso(failure.at)}: {failure.reason}"
                   + ("; fix the entry (its arguments, options or task) and beat publishes its next run"
                      if still else "; runs since then were published"))
    return Finding("given-up", view.key, explanation, notice=not still)
