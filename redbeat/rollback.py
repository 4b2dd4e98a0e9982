"""Rolling a schedule back to celery-redbeat 2.x, and forward again (docs/migrating.rst).

celery-redbeat 2.4.2 builds an entry by passing the stored JSON's fields
straight to constructors. A field it does not know (``jitter``, a crontab's
``timezone``), a schedule type it lacks (``clocked``, ``solar``) or a null
where it wants a value raises in the middle of its tick, which its beat does
not catch: the process ends and sends nothing. An interval without
``relative``, or a ``meta`` without ``last_run_at``, makes it take the entry
out of its schedule for good; a ``name`` other than the key's makes it run
the entry at every tick.

So before a rollback each such entry is rewritten in place for 2.x, keeping
RedBeat's original definition in the hash field ``redbeat3``, which 2.x
never reads; an entry no 2.x definition can stand for is held out of the
schedule in ``<prefix>:held-for-3``. ``undo`` puts everything back. The
plans are pure functions of the stored text; ``RollbackSteps`` writes them,
one entry per script call, each only if the entry is still what was read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from celery import Celery

from .client import get_store
from .decoder import DecodeError, get_utcoffset_minutes, loads, to_timestamp
from .records import Meta
from .schedules import rrule
from .storepart import StorePart

__all__ = ["SIDE_FIELD", "Action", "Plan", "UndoPlan", "Survey", "plan_definition", "plan_meta", "plan_entry",
           "plan_undo", "plans", "undo_plans", "apply", "undo", "held", "RollbackSteps"]

# The hash field holding RedBeat's own definition while 2.x runs the entry.
SIDE_FIELD = "redbeat3"
# What 2.x's ScheduleEntry takes from a definition (it fails on any other field).
ENTRY_FIELDS = ("name", "task", "schedule", "args", "kwargs", "options", "enabled")
# RedBeat's scheduling options, with what 2.x does instead once they are dropped.
REDBEAT_OPTIONS = {
    "catch_up": "after downtime 2.x runs it once",
    "catch_up_max": "after downtime 2.x runs it once",
    "starting_deadline": "2.x runs it however late",
    "start_at": "2.x runs it before its window too",
    "end_at": "2.x runs it after its window too",
    "max_runs": "2.x runs it without a limit",
    "on_finish": "2.x runs it without a limit",
    "jitter": "2.x runs it on its exact slots",
    "overlap": "2.x runs every slot, even while the previous run goes on",
    "max_run_time": "2.x does not wait for runs to finish",
    "description": "2.x has no description (kept for RedBeat)",
}
SCHEDULES_2X = ("interval", "crontab", "rrule")
DATETIME_FIELDS = {"year", "month", "day", "hour", "minute", "second", "microsecond", "fold", "timezone"}
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
RRULE_FIELDS = {"freq", "dtstart", "until", "dtstart_tz", "until_tz", *rrule.RULE_FIELDS}


class Action(str, Enum):
    KEEP = "keep"  # 2.x reads it as it is
    REWRITE = "rewrite"  # a 2.x-readable definition (and meta) in place, RedBeat's kept in SIDE_FIELD
    HOLD = "hold"  # no 2.x definition stands for it: out of the schedule until undo
    SKIP = "skip"  # 2.x's beat never reads it (negative score, no definition)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Plan:
    """What a rollback does to one entry, and why."""

    key: str
    action: Action
    reasons: tuple[str, ...] = ()
    definition: str | None = None  # the 2.x-readable definition written by REWRITE
    meta: str | None = None  # the 2.x-readable meta, when the stored one is not
    read: tuple[bytes, bytes] = (b"", b"")  # definition and meta as read, to write only over them


# -- what 2.x can read: pure functions of the stored JSON ------------------------------------

def _only(fields: dict, allowed: set[str] | tuple[str, ...], what: str, reasons: list[str]) -> dict:
    extra = sorted(name for name in fields if name not in allowed and name != "__type__")
    if extra:
        reasons.append(f"{what} field {', '.join(extra)} unknown to 2.x: dropped")
    return {name: value for name, value in fields.items() if name not in extra}


def _datetime_2x(fields: dict, reasons: list[str]) -> dict:
    fields = _only(fields, DATETIME_FIELDS, "datetime", reasons)
    if "timezone" in fields and fields["timezone"] is None:
        reasons.append('a datetime with a null timezone: written as "UTC" (2.x fails on null)')
        fields["timezone"] = "UTC"
    return fields


def _interval_2x(fields: dict, reasons: list[str]) -> dict:
    if "relative" not in fields:
        reasons.append("interval without 'relative': written as false (2.x would take the entry out of its "
                       "schedule for good)")
        fields = {**fields, "relative": False}
    return fields


def _crontab_2x(fields: dict, reasons: list[str]) -> dict:
    if fields.get("timezone") is not None:
        reasons.append(f"crontab timezone {fields['timezone']!r} dropped: 2.x runs it in the app's timezone")
    nulls = [name for name in CRONTAB_FIELDS if name in fields and fields[name] is None]
    if nulls:
        reasons.append(f"crontab field {', '.join(nulls)} null: left out, same meaning (2.x fails on null)")
    fields = _only({k: v for k, v in fields.items() if k != "timezone"}, CRONTAB_FIELDS, "crontab", reasons)
    return {name: value for name, value in fields.items() if value is not None}


def _rrule_2x(fields: dict, reasons: list[str]) -> dict:
    if fields.get("timezone") is not None:
        reasons.append(f"rrule timezone {fields['timezone']!r} dropped: 2.x runs it at dtstart's UTC offset")
    fields = _only({k: v for k, v in fields.items() if k != "timezone"}, RRULE_FIELDS, "rrule", reasons)
    for name in ("dtstart", "until"):
        value = fields.get(name)
        if isinstance(value, dict) and value.get("__type__") == "datetime":
            moment = loads(json.dumps(value))
            fields[name], fields[f"{name}_tz"] = to_timestamp(moment), get_utcoffset_minutes(moment)
            reasons.append(f"rrule {name} as a datetime object: written as UNIX seconds, as 2.x reads it")
    return fields


_TYPED = {
    "datetime": _datetime_2x,
    "interval": _interval_2x,
    "crontab": _crontab_2x,
    "rrule": _rrule_2x,
    "weekday": lambda fields, reasons: _only(fields, ("wkday", "n"), "weekday", reasons),
}


def _readable_by_2x(value: Any, reasons: list[str]) -> Any:
    """``value`` with every typed object in a form 2.x's decoder builds (it decodes
    them wherever they are, innermost first); what changed is added to ``reasons``."""
    if isinstance(value, list):
        return [_readable_by_2x(item, reasons) for item in value]
    if not isinstance(value, dict):
        return value
    fields = {name: _readable_by_2x(item, reasons) for name, item in value.items()}
    fix = _TYPED.get(fields.get("__type__"))  # type: ignore[arg-type]
    return fix(fields, reasons) if fix else fields


def _schedule_kind(value: Any) -> str | None:
    """What a stored schedule is, if 2.x cannot build it; None if it can."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None  # Celery takes a number of seconds as an interval
    kind = value.get("__type__") if isinstance(value, dict) else None
    if kind in SCHEDULES_2X:
        return None
    return f"a {kind} schedule" if isinstance(kind, str) else f"a schedule that is no typed object ({value!r:.40})"


def plan_definition(raw: bytes | str, name: str) -> tuple[Action, tuple[str, ...], str | None]:
    """What to do with a stored definition for 2.x: the action, why, and the
    2.x-readable definition when it must be rewritten."""
    try:
        definition = json.loads(raw)
    except (ValueError, RecursionError):
        return Action.HOLD, ("definition is not valid JSON: 2.x's tick would fail on it (RedBeat parks it)",), None
    if not isinstance(definition, dict):
        return Action.HOLD, ("definition is no JSON object: 2.x's tick would fail on it",), None
    kind = _schedule_kind(definition.get("schedule"))
    if kind is not None:
        return Action.HOLD, (f"{kind}: 2.x has no such schedule, it will not run under 2.x",), None
    reasons: list[str] = []
    for option in definition:
        if option in REDBEAT_OPTIONS:
            reasons.append(f"{option} dropped: {REDBEAT_OPTIONS[option]}")
        elif option not in ENTRY_FIELDS:
            reasons.append(f"field {option!r} unknown to 2.x: dropped")
    written = {option: value for option, value in definition.items() if option in ENTRY_FIELDS}
    if written.get("name") != name:
        reasons.append(f"name {written.get('name')!r} is not the key's: written as {name!r} (2.x would run it at "
                       "every tick)")
        written["name"] = name
    try:
        written = _readable_by_2x(written, reasons)
    except DecodeError as exc:  # a datetime RedBeat cannot read either
        return Action.HOLD, (f"{exc}: 2.x's tick would fail on it (RedBeat parks it)",), None
    return (Action.REWRITE, tuple(reasons), json.dumps(written)) if reasons else (Action.KEEP, (), None)


def plan_meta(raw: bytes | None) -> tuple[tuple[str, ...], str | None]:
    """Why a stored meta is not readable by 2.x, and the meta to write instead (None: keep it)."""
    if not raw:
        return (), None
    try:
        meta = json.loads(raw)
        reasons: list[str] = []
        fixed = _readable_by_2x(meta, reasons)
        rewritten = Meta.from_json(json.dumps(fixed)).to_json()
    except (ValueError, RecursionError):
        return (), None  # unreadable by RedBeat too: it parks the entry, which 2.x never reads then
    if "last_run_at" not in meta:
        reasons.append("meta without last_run_at: written with null (2.x would take the entry out of its schedule)")
    extra = sorted(set(meta) - {"last_run_at", "total_run_count"})
    if extra:
        reasons.append(f"meta field {', '.join(extra)} unknown to 2.x: dropped")
    return (tuple(reasons), rewritten) if reasons else ((), None)


def plan_entry(key: str, name: str, score: float | None, fields: Mapping[str, bytes]) -> Plan:
    """The rollback of one stored entry (``fields`` as HGETALL gives them)."""
    definition, meta = fields.get("definition"), fields.get("meta")
    if SIDE_FIELD in fields:
        return Plan(key, Action.KEEP, ("already rolled back",))
    if definition is None or score is None or score < 0:
        return Plan(key, Action.SKIP, ("2.x's beat never reads it (negative score or no definition)",))
    if not _is_utf8(key):
        return Plan(key, Action.HOLD, ("key is not valid UTF-8: 2.x's tick fails reading the schedule with it",),
                    read=(definition, meta or b""))
    action, reasons, rewritten = plan_definition(definition, name)
    read = (definition, meta or b"")
    if action is Action.HOLD:
        return Plan(key, action, reasons, read=read)
    meta_reasons, new_meta = plan_meta(meta)
    if new_meta is None and action is Action.KEEP:
        return Plan(key, Action.KEEP)
    return Plan(key, Action.REWRITE, reasons + meta_reasons,
                rewritten or (definition.decode() if isinstance(definition, bytes) else definition), new_meta, read)


def _is_utf8(key: str) -> bool:
    """Whether a key read with surrogateescape was valid UTF-8."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raw(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class UndoPlan:
    key: str
    restore: str | None  # RedBeat's definition to write back; None: keep the current one
    note: str
    read: tuple[bytes, bytes] = (b"", b"")  # side record and definition as read


def plan_undo(key: str, side: bytes, definition: bytes | None) -> UndoPlan:
    """Undo one rewrite: RedBeat's definition goes back unless the entry was
    edited under 2.x since (its current definition is then kept)."""
    read = (side, definition or b"")
    try:
        record = json.loads(side)
        original, written = record["definition"], record["written"]
        edited = definition is None or json.loads(definition) != json.loads(written)
    except (ValueError, TypeError, KeyError, RecursionError):
        return UndoPlan(key, None, f"unreadable {SIDE_FIELD} field: left as it is", read)
    if edited:
        return UndoPlan(key, None, f"edited since the rollback: its current definition stays (RedBeat's was "
                        f"{original})", read)
    return UndoPlan(key, original, "RedBeat's definition restored; the runs 2.x recorded are kept", read)


# -- reading and writing the schedule --------------------------------------------------------

class RollbackSteps(StorePart):
    """The writes of a rollback and of its undo, one entry per script call."""

    def __init__(self, client: Any, conf: Any) -> None:
        super().__init__(client, conf)
        self.held_key = self.keys.held_for_3
        self._rewrite = self.client.register_script(self.REWRITE_LUA)
        self._hold = self.client.register_script(self.HOLD_LUA)
        self._restore = self.client.register_script(self.RESTORE_LUA)
        self._unhold = self.client.register_script(self.UNHOLD_LUA)

    # Writes a 2.x-readable definition (and meta), keeping RedBeat's in SIDE_FIELD.
    # KEYS: the entry   ARGV: definition and meta as read, side record, new definition, new meta ('' = keep)
    # Returns: 1 if written, 0 if the entry changed since it was read (nothing written)
    REWRITE_LUA = f"""
    local meta = redis.call('HGET', KEYS[1], 'meta') or ''
    if redis.call('HGET', KEYS[1], 'definition') ~= ARGV[1] or meta ~= ARGV[2]
            or redis.call('HEXISTS', KEYS[1], '{SIDE_FIELD}') == 1 then
        return 0
    end
    redis.call('HSET', KEYS[1], '{SIDE_FIELD}', ARGV[3], 'definition', ARGV[4])
    if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[5]) end
    return 1
    """

    def rewrite(self, plan: Plan, side: str) -> bool:
        args: list[bytes | str] = [*plan.read, side, plan.definition or "", plan.meta or ""]
        return bool(self._rewrite(keys=[_raw(plan.key)], args=args))

    # Moves an entry, with its score, from the schedule to the held set.
    # KEYS: the entry, the schedule, the held set   ARGV: definition as read
    # Returns: 1 if moved, 0 if the entry changed or left the schedule since it was read
    HOLD_LUA = """
    local score = redis.call('ZSCORE', KEYS[2], KEYS[1])
    if not score or redis.call('HGET', KEYS[1], 'definition') ~= ARGV[1] then return 0 end
    redis.call('ZADD', KEYS[3], score, KEYS[1])
    redis.call('ZREM', KEYS[2], KEYS[1])
    return 1
    """

    def hold(self, plan: Plan) -> bool:
        return bool(self._hold(keys=[_raw(plan.key), self.conf.schedule_key, self.held_key], args=[plan.read[0]]))

    # Drops SIDE_FIELD, writing RedBeat's definition back if given; a restored
    # entry in the schedule is scored 0, so that beat looks at it at its next tick.
    # KEYS: the entry, the schedule   ARGV: side record and definition as read, definition ('' = keep)
    # Returns: 1 if done, 0 if the entry changed since it was read
    RESTORE_LUA = f"""
    if redis.call('HGET', KEYS[1], '{SIDE_FIELD}') ~= ARGV[1]
            or (redis.call('HGET', KEYS[1], 'definition') or '') ~= ARGV[2] then
        return 0
    end
    if ARGV[3] ~= '' then
        redis.call('HSET', KEYS[1], 'definition', ARGV[3])
        if redis.call('ZSCORE', KEYS[2], KEYS[1]) then redis.call('ZADD', KEYS[2], 0, KEYS[1]) end
    end
    redis.call('HDEL', KEYS[1], '{SIDE_FIELD}')
    return 1
    """

    def restore(self, plan: UndoPlan) -> bool:
        return bool(self._restore(keys=[_raw(plan.key), self.conf.schedule_key], args=[*plan.read, plan.restore or ""]))

    # Puts a held entry back in the schedule at its score (unless it is there
    # already, or its hash is gone) and out of the held set.
    # KEYS: the entry, the schedule, the held set
    # Returns: 1 if put back, 0 if it was not held or its hash is gone
    UNHOLD_LUA = """
    local score = redis.call('ZSCORE', KEYS[3], KEYS[1])
    if not score then return 0 end
    redis.call('ZREM', KEYS[3], KEYS[1])
    if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
    redis.call('ZADD', KEYS[2], 'NX', score, KEYS[1])
    return 1
    """

    def unhold(self, key: str) -> bool:
        return bool(self._unhold(keys=[_raw(key), self.conf.schedule_key, self.held_key]))

    def held(self) -> list[str]:
        return [member.decode("utf-8", "surrogateescape") for member, _ in self.client.zscan_iter(self.held_key)]


def _steps(app: Celery) -> RollbackSteps:
    store = get_store(app)
    return RollbackSteps(store.client, store.conf)


def _stored(app: Celery) -> Iterator[tuple[str, str, float | None, dict[str, bytes]]]:
    """(key, name, score, fields) of every entry hash in the schedule; members outside the prefix are no
    entries and are never read."""
    store = get_store(app)
    prefix = store.conf.key_prefix
    for chunk in store.schedule_members():
        for raw_key, (score, raw) in zip(chunk, store.read_entries(chunk)):
            key = raw_key.decode("utf-8", "surrogateescape")
            if isinstance(raw, dict) and raw and store.is_entry_key(key):
                fields = {name.decode("utf-8", "surrogateescape"): value for name, value in raw.items()}
                yield key, key[len(prefix):], score, fields


def plans(app: Celery) -> list[Plan]:
    """The rollback of every entry in the schedule (entries 2.x reads as they are left out)."""
    every = (plan_entry(key, name, score, fields) for key, name, score, fields in _stored(app))
    return sorted((plan for plan in every if plan.action in (Action.REWRITE, Action.HOLD)), key=lambda p: p.key)


def apply(app: Celery, planned: list[Plan]) -> list[Plan]:
    """Write ``planned``; returns the plans not applied because their entry changed meanwhile."""
    steps = _steps(app)
    missed = []
    for plan in planned:
        if plan.action is Action.HOLD:
            done = steps.hold(plan)
        else:
            original = plan.read[0].decode()  # valid UTF-8: it was read as JSON
            done = steps.rewrite(plan, json.dumps({"definition": original, "written": plan.definition}))
        if not done:
            missed.append(plan)
    return missed


def undo_plans(app: Celery) -> tuple[list[UndoPlan], list[str]]:
    """What undoing a rollback does: the rewritten entries, and the held ones to put back."""
    rewritten = [plan_undo(key, fields[SIDE_FIELD], fields.get("definition"))
                 for key, _, _, fields in _stored(app) if SIDE_FIELD in fields]
    return sorted(rewritten, key=lambda p: p.key), sorted(_steps(app).held())


def undo(app: Celery, rewritten: list[UndoPlan], held: list[str]) -> list[str]:
    """Undo a rollback; returns the keys left as they were because they changed meanwhile or are gone."""
    steps = _steps(app)
    missed = [plan.key for plan in rewritten if not steps.restore(plan)]
    return missed + [key for key in held if not steps.unhold(key)]


@dataclass
class Survey:
    """Rollback risk of a schedule, for ``doctor``: entries 2.x cannot read, and entries
    still as a rollback left them."""

    unreadable: list[Plan] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)

    def add(self, key: str, name: str, score: float | None, fields: Mapping[str, bytes]) -> None:
        if SIDE_FIELD in fields:
            self.rolled_back.append(key)
            return
        plan = plan_entry(key, name, score, fields)
        if plan.action in (Action.REWRITE, Action.HOLD):
            self.unreadable.append(plan)


def held(app: Celery) -> list[str]:
    """The keys of the entries a rollback holds out of the schedule."""
    return _steps(app).held()
