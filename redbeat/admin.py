"""What operators ask of a schedule: list it, export and import it, check on
beat, find what is wrong. Plain functions over a ``ScheduleStore``, returning
plain data; ``cli`` prints them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Celery
from celery.schedules import crontab, schedule, solar

from .client import get_store
from .entry import RedBeatSchedulerEntry, decode_status
from .schedules import clocked, rrule
from .store import NEVER, ScheduleStore, text

UTC = timezone.utc
EXPORT_FORMAT = "redbeat-export"
ENTRY_FIELDS = ("definition", "meta", "status", "parked", "run_now")
SCAN_CHUNK = 1000

__all__ = ["EntryView", "entries", "describe_schedule", "export_schedule", "plan_import", "apply_import",
           "beat_status", "doctor", "Finding"]


@dataclass
class EntryView:
    """One entry as stored, decoded as far as it goes."""

    key: str
    name: str
    score: float | None
    fields: dict[str, bytes]
    entry: RedBeatSchedulerEntry | None = None
    error: str | None = None

    @property
    def parked(self) -> str | None:
        raw = self.fields.get("parked")
        if raw is None:
            return None
        try:
            return json.loads(raw).get("reason") or "parked"
        except ValueError:
            return text(raw)

    @property
    def next_run(self) -> datetime | None:
        if self.score is None or self.score < 0:
            return None
        return datetime.fromtimestamp(self.score, UTC)

    def summary(self) -> dict:
        """The entry for people and scripts: what ``list --json`` prints."""
        entry = self.entry
        status = decode_status(self.fields.get("status"))
        return {
            "name": self.name,
            "key": self.key,
            "task": entry.task if entry else None,
            "schedule": describe_schedule(entry.schedule) if entry else None,
            "enabled": entry.enabled if entry else None,
            "next_run": _iso(self.next_run),
            "last_run": _iso(entry.last_run_at) if entry else None,
            "last_dispatched": _iso_ts(status.last_dispatched_at),
            "total_run_count": entry.total_run_count if entry else None,
            "missed": status.missed,
            "parked": self.parked,
            "error": self.error,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _iso_ts(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def entries(app: Celery, keys: list[str] | None = None) -> Iterator[EntryView]:
    """Every entry in the schedule (or those of ``keys``), in order of next run."""
    store = get_store(app)
    if keys is None:
        start = 0
        while True:
            chunk = store.schedule_page(start, SCAN_CHUNK)
            if not chunk:
                return
            yield from _views(app, store, [(text(k), score) for k, score in chunk])
            start += SCAN_CHUNK
    else:
        yield from _views(app, store, list(zip(keys, store.scores(keys))))


def _views(app: Celery, store: ScheduleStore, keyed: list[tuple[str, float | None]]) -> Iterator[EntryView]:
    prefix = store.conf.key_prefix
    for (key, score), raw in zip(keyed, store.hashes([key for key, _ in keyed])):
        fields = {text(name): value for name, value in raw.items()}
        view = EntryView(key=key, name=key[len(prefix):] if key.startswith(prefix) else key, score=score,
                         fields=fields)
        if not fields:
            view.error = "no entry hash under this key (orphan member)"
        elif "definition" not in fields:
            view.error = "hash has no 'definition' field"
        else:
            try:
                view.entry = RedBeatSchedulerEntry.from_stored(
                    fields["definition"], fields.get("meta"), app=app, key=key, status=fields.get("status"))
            except Exception as exc:
                view.error = str(exc) or type(exc).__name__
        yield view


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


# -- export and import ------------------------------------------------------------------

def export_schedule(app: Celery) -> dict:
    """The whole schedule as JSON-ready data; ``apply_import`` writes it back exactly.

    Field values are kept as the text stored (bytes that are not UTF-8 are
    escaped), so parked and malformed entries round-trip too.
    """
    store = get_store(app)
    exported = []
    for view in entries(app):
        exported.append({
            "key": view.key,
            "score": view.score,
            "fields": {name: value.decode("utf-8", "surrogateescape") for name, value in view.fields.items()},
        })
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        "prefix": store.conf.key_prefix,
        "exported_at": time.time(),
        "statics": sorted(store.static_names()),
        "entries": exported,
    }


@dataclass
class ImportPlan:
    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)
    # Exported entries beat cannot run: imported as they are (a backup is
    # exact), and parked by beat when they come due.
    unrunnable: dict[str, str] = field(default_factory=dict)
    writes: list[tuple[str, float, dict[str, str], bool]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"create": self.create, "update": self.update, "unchanged": self.unchanged,
                "invalid": self.invalid, "unrunnable": self.unrunnable}


def plan_import(app: Celery, data: Any) -> ImportPlan:
    """What importing ``data`` (an export, or ``{name: beat_schedule spec}``) would change.

    An export is written back exactly. Specs are written like ``beat_schedule``
    entries: the definition only, keeping the run history of entries that exist.
    """
    if not isinstance(data, dict):
        raise ValueError("an import is a RedBeat export or a JSON object of {name: spec}")
    store = get_store(app)
    prefix = store.conf.key_prefix
    plan = ImportPlan()
    exact = data.get("format") == EXPORT_FORMAT
    if exact:
        items = [(prefix + item["key"][len(data.get("prefix", prefix)):], item.get("score"), item["fields"])
                 for item in data["entries"]]
    else:
        items = []
        for name, spec in data.items():
            try:
                entry = RedBeatSchedulerEntry(name=name, app=app, **_spec_from_json(spec))
                items.append((entry.key, None, {"definition": entry.definition_json(), "meta": entry.meta_json()}))
            except Exception as exc:
                plan.invalid[name] = str(exc)
    current = {view.key: view for view in entries(app, [key for key, _, _ in items])}
    for key, score, fields in items:
        name = key[len(prefix):]
        if fields and "parked" not in fields:
            try:
                RedBeatSchedulerEntry.decode_definition(fields.get("definition") or "")
            except Exception as exc:
                if not exact:
                    plan.invalid[name] = str(exc)
                    continue
                plan.unrunnable[name] = str(exc)
        existing = current.get(key)
        stored = {k: v.decode("utf-8", "surrogateescape") for k, v in existing.fields.items()} if existing else {}
        if exact:
            same = stored == fields and existing.score == score
        else:
            same = bool(stored) and _same_definition(stored.get("definition"), fields["definition"])
            if not same:
                score = _score_keeping_history(app, fields, existing)
        if same:
            plan.unchanged.append(name)
            continue
        (plan.update if stored else plan.create).append(name)
        plan.writes.append((key, NEVER if score is None else score, fields, exact))
    return plan


def _same_definition(stored: str | None, written: str) -> bool:
    try:
        return stored is not None and json.loads(stored) == json.loads(written)
    except ValueError:
        return False


def _score_keeping_history(app: Celery, fields: dict[str, str], existing: EntryView | None) -> float:
    """The score of an imported definition, counted from the stored run history if there is one."""
    meta = (existing.fields.get("meta") if existing else None) or fields["meta"]
    return RedBeatSchedulerEntry.from_stored(fields["definition"], meta, app=app).score


def _spec_from_json(spec: dict) -> dict:
    """A ``beat_schedule``-style spec given as JSON: its schedule decoded like a definition."""
    fields = RedBeatSchedulerEntry.decode_definition(json.dumps({"task": spec.get("task"), **spec}))
    fields.pop("name", None)
    return fields


def apply_import(app: Celery, plan: ImportPlan, statics: list[str] | None = None) -> None:
    """Write what ``plan`` says, in one transaction."""
    get_store(app).write_imported(
        [(key, score, {name: value.encode("utf-8", "surrogateescape") for name, value in fields.items()}, exact)
         for key, score, fields, exact in plan.writes],
        statics or ())


# -- status -------------------------------------------------------------------------------

def beat_status(app: Celery, now: float | None = None) -> dict:
    """Who holds the lock, when beat last ticked, how the schedule stands."""
    store = get_store(app)
    now = time.time() if now is None else now
    overview = store.overview(now)
    token, heartbeat, oldest = overview["lock_token"], overview["heartbeat"], overview["oldest_due_score"]
    holder = None
    if token is not None:
        host, _, rest = text(token).partition(":")
        pid = rest.partition(":")[0]
        holder = {"token": text(token), "host": host, "pid": int(pid) if pid.isdigit() else None}
    beat = json.loads(heartbeat) if heartbeat else None
    if beat and holder and beat.get("token") == holder["token"]:
        holder["since"] = _iso_ts(beat.get("active_since"))
    policy = store.eviction_policy()
    return {
        "lock_key": store.conf.lock_key,
        "lock_holder": holder,
        "last_tick": _iso_ts(beat["last_tick"]) if beat else None,
        "last_tick_age": round(now - beat["last_tick"], 3) if beat else None,
        "stopped_at": _iso_ts(beat["stopped_at"]) if beat and beat.get("stopped_at") else None,
        "beat": beat,
        "entries": overview["entries"],
        "due": overview["due"],
        "most_overdue_seconds": round(now - oldest, 3) if oldest is not None else 0.0,
        "never_due": overview["never_due"],
        "parked": overview["parked"],
        "in_flight": overview["in_flight"],
        "eviction_policy": policy,
        "eviction_warning": bool(policy and policy.startswith("allkeys")),
    }


# -- doctor -------------------------------------------------------------------------------

@dataclass
class Finding:
    kind: str
    key: str
    explanation: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "explanation": self.explanation}


def doctor(app: Celery, configured_statics: set[str] | None = None) -> list[Finding]:
    """Everything in the schedule that will not run as someone probably expects, explained."""
    store = get_store(app)
    conf = store.conf
    findings = []
    scheduled = set()
    for view in entries(app):
        scheduled.add(view.key)
        if not view.fields:
            findings.append(Finding("orphan", view.key, "member of the schedule with no entry hash: beat removes "
                                    "it at its next look (was the entry deleted, or evicted by Redis?)"))
        elif view.parked:
            findings.append(Finding("parked", view.key, f"set aside by beat: {view.parked}. Fix the definition "
                                    "and ZADD it back to the schedule"))
        elif view.error:
            findings.append(Finding("malformed", view.key, f"beat will park it when it comes due: {view.error}"))
        elif view.score is not None and view.score < 0:
            why = "it is disabled" if view.entry and not view.entry.enabled else "its schedule has no further runs"
            findings.append(Finding("never-due", view.key, f"score -1: beat will not look at it again ({why})"))
    for key in store.unscheduled_hashes(scheduled):
        findings.append(Finding("unscheduled", key, "entry hash not in the schedule: beat never looks at it. "
                                f"Add it with ZADD {conf.schedule_key} 0 {key}"))
    if configured_statics is not None:
        for name in sorted(store.static_names() - configured_statics):
            findings.append(Finding("stale-static", conf.key_prefix + name, "listed as static but no longer in "
                                    "beat_schedule: the next beat to start will delete it"))
    _, runs, unreadable = store.in_flight()
    for run in runs:
        if run.retry_at < time.time() - 60:
            findings.append(Finding("stuck-in-flight", run.key, f"run {run.task_id} claimed at "
                                    f"{_iso_ts(run.claimed_at)} is still not published"))
    for task_id in unreadable:
        findings.append(Finding("bad-in-flight", text(task_id), "unreadable in-flight record; beat removes it"))
    return findings
