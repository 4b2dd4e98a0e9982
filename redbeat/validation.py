"""What an entry's definition may hold, checked the same way wherever one is read or written.

Two levels. Reading (``check_decoded``, on beat's hot path): a stored
definition that beat cannot run is parked, naming the field; fields it does
not know are ignored, since a newer RedBeat or another program may have
written them. Writing (``check_for_write``: the command line, the Python API,
imports, the web dashboard): stricter, because a typo must fail where it is
made, not silently later; unknown fields are refused (celery-redbeat 2.x
refuses them at its first tick, so they would break a rollback), and the task
is checked against the app's registry where the app knows its tasks.
Messages name the field and say what would be right.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule

from .config import MAX_CATCH_UP, NO_LIMIT, number_problem
from .decoder import MAX_INTERVAL, MIN_INTERVAL, DecodeError, to_timestamp
from .overlap import MAX_RUN_TIME, OVERLAP_POLICIES
from .planning import CATCH_UP_POLICIES, ON_FINISH_ACTIONS
from .records import MAX_TIMESTAMP
from .suggestions import did_you_mean

__all__ = ["DEFINITION_FIELDS", "OPTION_FIELDS", "PROTOCOL_HEADERS", "RESERVED_HEADERS", "RESERVED_OPTIONS",
           "MAX_JITTER", "check_decoded", "check_options", "check_task_options", "reserved_options",
           "without_reserved", "WRITABLE_FIELDS", "TASK_OPTIONS", "DESCRIPTION_FIELD", "InvalidEntryError",
           "refuse_unknown_fields", "unknown_field_words", "is_misplaced", "check_description", "check_written",
           "task_problem", "OPTIONAL_FIELDS"]

# Scheduling options (RedBeat 3): optional definition fields, written only when
# set, because celery-redbeat 2.x refuses definitions with fields it does not know.
OPTION_FIELDS = ("catch_up", "catch_up_max", "starting_deadline", "start_at", "end_at", "max_runs",
                 "on_finish", "jitter", "overlap", "max_run_time")
# Free text about an entry, for people (shown and searched by the command line and the
# dashboard); RedBeat's own, so written only when set, like the options.
DESCRIPTION_FIELD = "description"
# Fields written only when set.
OPTIONAL_FIELDS = OPTION_FIELDS + (DESCRIPTION_FIELD,)
# Definition fields of the data format; other fields are ignored when reading.
DEFINITION_FIELDS = ("name", "task", "args", "kwargs", "options", "schedule", "enabled") + OPTIONAL_FIELDS

# Jitter spreads the runs of a slot; a delay of more than a day moves them to another day.
MAX_JITTER = 86400.0

# The message headers Celery's task protocol v2 sets (celery/app/amqp.py,
# as_task_v2), and ours: an entry's ``options.headers`` would override them,
# since Celery merges the caller's headers over its own. A ``task`` header
# makes the worker run another task than the entry shows, an ``id`` one fixes
# the task id of every run.
PROTOCOL_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
    "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "replaced_task_nesting",
    "stamped_headers", "stamps",
})
RESERVED_HEADERS = PROTOCOL_HEADERS | {"redbeat_key", "redbeat_scheduled"}
# apply_async options that set one of those headers, or the correlation id
# (the task id again): ``task_id`` would give every run the same id, which
# workers and result backends take for duplicates of one run.
RESERVED_OPTIONS = frozenset({
    "task_id", "root_id", "parent_id", "group_id", "group_index", "shadow", "retries", "argsrepr",
    "kwargsrepr", "origin", "stamped_headers", "replaced_task_nesting", "correlation_id",
})



def check_decoded(fields: dict) -> None:
    """Raise DecodeError naming the first field of a decoded definition beat would park:
    the read check, which every stored definition passes before beat runs it."""
    task = fields.get("task")
    if not isinstance(task, str) or not task:
        raise DecodeError("definition field 'task' is missing or not a string")
    sched = fields.get("schedule")
    if isinstance(sched, dict) and "__type__" in sched:
        raise DecodeError(f"definition field 'schedule' has unknown __type__ {sched['__type__']!r}")
    if not isinstance(sched, (BaseSchedule, int, float)) or isinstance(sched, bool):
        raise DecodeError("definition field 'schedule' is missing or not a schedule")
    if not isinstance(sched, BaseSchedule) and not MIN_INTERVAL <= sched < MAX_INTERVAL:
        raise DecodeError(f"definition field 'schedule' must be at least {MIN_INTERVAL} seconds "
                          f"and less than {MAX_INTERVAL:g}")
    _expect(fields, "args", (list, tuple), "a list")
    _expect(fields, "kwargs", dict, "an object")
    _expect(fields, "options", dict, "an object")
    _expect(fields, "enabled", bool, "true or false")
    if "name" in fields and not isinstance(fields["name"], str):
        raise DecodeError("definition field 'name' must be a string")
    if fields.get("options"):
        check_task_options(fields["options"])
    check_options(fields)


def _expect(fields: dict, name: str, kind: type | tuple, words: str) -> None:
    value = fields.get(name)
    if value is None:
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # JSON true is a Python int too: only a field meant to be boolean takes it.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise DecodeError(f"definition field {name!r} must be {words}")


def reserved_options(options: dict) -> list[str]:
    """What in an entry's ``options`` the task protocol or RedBeat owns: option
    names, and header names as ``headers.<name>``."""
    refused = sorted(name for name in options if name in RESERVED_OPTIONS)
    headers = options.get("headers")
    if isinstance(headers, dict):
        refused += sorted(f"headers.{name}" for name in headers if name in RESERVED_HEADERS)
    return refused


def without_reserved(options: dict) -> dict:
    """``options`` less what ``reserved_options`` names."""
    kept = {name: value for name, value in options.items() if name not in RESERVED_OPTIONS}
    if isinstance(kept.get("headers"), dict):
        kept["headers"] = {name: value for name, value in kept["headers"].items() if name not in RESERVED_HEADERS}
    return kept


def check_task_options(options: dict) -> None:
    """Raise DecodeError if ``options`` would override the task protocol (``reserved_options``)."""
    headers = options.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise DecodeError("definition field 'options.headers' must be an object")
    refused = reserved_options(options)
    if refused:
        raise DecodeError(
            f"definition field 'options' sets {', '.join(refused)}, which Celery's task protocol or RedBeat "
            f"sets for each run; refused: options {', '.join(sorted(RESERVED_OPTIONS))}; "
            f"headers {', '.join(sorted(RESERVED_HEADERS))}")


def check_options(fields: dict) -> None:
    """Raise DecodeError naming the first scheduling option that is not valid.

    Numbers must be finite JSON numbers (not booleans) within a range, so
    that no option is ambiguous and one entry's cost stays bounded. What a
    reasonable person writes for "none" is taken so (docs/format.rst): null
    everywhere (the setting, or no limit); -1 for ``catch_up_max``,
    ``max_runs`` and ``starting_deadline``; 0 for ``starting_deadline`` and
    ``jitter``. Refused as ambiguous: ``max_runs`` 0 (never, or no limit?),
    ``catch_up`` true or false (which policy?), a negative ``jitter``, a
    ``max_run_time`` of 0 (a run that counts as finished as it starts blocks nothing).
    """
    if fields.keys().isdisjoint(OPTION_FIELDS):
        return  # most entries set none: spare beat's hot path the checks
    _check_choice(fields, "catch_up", CATCH_UP_POLICIES)
    _check_choice(fields, "on_finish", ON_FINISH_ACTIONS)
    _check_number(fields, "catch_up_max", 0, MAX_CATCH_UP, whole=True,
                  words=f"a whole number from 0 to {MAX_CATCH_UP} (-1 or null: no limit of its own)", minus_one=True)
    if fields.get("max_runs") == 0 and not isinstance(fields["max_runs"], bool):
        raise DecodeError("definition field 'max_runs' is 0, which could mean never or no limit: "
                          "write -1 or null for no limit, or set 'enabled' to false for never")
    _check_number(fields, "max_runs", 1, None, whole=True, words="a whole number, at least 1 (-1 or null: no limit)",
                  minus_one=True)
    _check_number(fields, "starting_deadline", 0, None,
                  words="a number of seconds, at least 0 (-1, 0 or null: no deadline of its own)", minus_one=True)
    _check_number(fields, "jitter", 0, MAX_JITTER)
    _check_overlap(fields)
    for name in ("start_at", "end_at"):
        _expect(fields, name, datetime, "a datetime object")
        if fields.get(name) is not None and not 0 <= _seconds_of(fields[name]) < MAX_TIMESTAMP:
            raise DecodeError(f"definition field {name!r} must be between 1970 and 9999")
    start_at, end_at = fields.get("start_at"), fields.get("end_at")
    if start_at is not None and end_at is not None and end_at < start_at:
        raise DecodeError("definition field 'end_at' must not be before 'start_at'")


def _check_choice(fields: dict, name: str, choices: Sequence[str]) -> None:
    """Refuse a value of ``name`` that is none of ``choices`` (null: the setting's), saying
    what it was and, for a near miss, the choice meant."""
    value = fields.get(name)
    if value is None or (isinstance(value, str) and value in choices):
        return
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise DecodeError(f"definition field {name!r} must be one of {', '.join(choices)}, not "
                      f"{reprlib.repr(value)}{hint}")


def _check_overlap(fields: dict) -> None:
    """Refuse an ``overlap`` policy RedBeat does not know, and a ``max_run_time`` that is no
    number of seconds above 0 (a run that counts as finished as it starts would block nothing)."""
    _check_choice(fields, "overlap", OVERLAP_POLICIES)
    value = fields.get("max_run_time")
    if value is not None and (number_problem(value, 0, MAX_RUN_TIME) or value == 0):
        raise DecodeError(f"definition field 'max_run_time' must be a number of seconds, more than 0 and at most "
                          f"{MAX_RUN_TIME:g} (null: from the task's time limit), not {reprlib.repr(value)}")


def _check_number(fields: dict, name: str, low: float, high: float | None, whole: bool = False,
                  words: str | None = None, minus_one: bool = False) -> None:
    """Refuse ``fields[name]`` unless null, within [low, high], or -1 when ``minus_one`` (no limit)."""
    value = fields.get(name)
    if value is None or (minus_one and value == NO_LIMIT and not isinstance(value, bool)):
        return
    problem = number_problem(value, low, high, whole)
    if problem:
        raise DecodeError(f"definition field {name!r} must be {words or problem}, not {reprlib.repr(value)}")


def _seconds_of(moment: datetime) -> float:
    try:
        return to_timestamp(moment)
    except (OverflowError, ValueError):
        return -1.0  # outside what a timestamp can hold: out of range too




# -- writing: what the command line, the Python API, imports and the dashboard refuse ------------

MAX_DESCRIPTION = 2000
# Every field an entry may be written with.
WRITABLE_FIELDS = DEFINITION_FIELDS
# Words of a schedule people write as fields of their own.
SCHEDULE_WORDS = {"every": "interval", "interval": "interval", "cron": "crontab", "crontab": "crontab",
                  "rrule": "rrule", "at": "clocked", "clocked": "clocked", "timezone": "crontab"}
# apply_async options, which belong in the definition's "options" object: written at the
# top level they would be ignored (and refused by celery-redbeat 2.x).
TASK_OPTIONS = ("queue", "routing_key", "exchange", "exchange_type", "priority", "expires", "countdown",
                "headers", "serializer", "compression", "time_limit", "soft_time_limit", "ignore_result",
                "retry", "retry_policy", "delivery_mode", "immediate", "mandatory", "link", "link_error")


class InvalidEntryError(DecodeError):
    """An entry refused as it is written: the message names what is wrong and what would be right."""


def refuse_unknown_fields(definition: dict) -> None:
    """Raise InvalidEntryError naming every field of ``definition`` no entry has, with the valid
    ones and the nearest to each (``queue`` is an option: it belongs in ``options``)."""
    unknown = [name for name in definition if name not in WRITABLE_FIELDS]
    if not unknown:
        return
    said = [unknown_field_words(name) for name in unknown]
    raise InvalidEntryError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(said)}; an entry's fields are "
                       f"{', '.join(WRITABLE_FIELDS)}")


def is_misplaced(name: str) -> bool:
    """Whether ``name``, a field no entry has, belongs inside one of its fields (a task option in
    'options', a schedule word in 'schedule'): written at the top level, it is ignored."""
    return name in TASK_OPTIONS or name in SCHEDULE_WORDS


def unknown_field_words(name: str) -> str:
    """``name``, a field no entry has, said with where it belongs, else the nearest field."""
    if name in TASK_OPTIONS:
        return f"{name!r} (a task option: it belongs in 'options', as {{\"options\": {{{json.dumps(name)}: ...}}}})"
    if name in SCHEDULE_WORDS:
        return (f"{name!r} (part of the schedule: it belongs in 'schedule', as {{\"schedule\": "
                f"{{\"__type__\": \"{SCHEDULE_WORDS[name]}\", ...}}}}; docs/format.rst)")
    return repr(name) + did_you_mean(str(name), WRITABLE_FIELDS)


def check_description(definition: dict) -> None:
    description = definition.get(DESCRIPTION_FIELD)
    if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION):
        raise InvalidEntryError(f"definition field 'description' must be text of at most {MAX_DESCRIPTION} characters")


def check_written(definition: dict, app: Celery, require_known: bool = False, force: bool = False) -> None:
    """Raise InvalidEntryError for a definition no writer may store, beyond what beat parks
    (``check_decoded``): unknown fields, a description that is no text, a task the app
    cannot send with these arguments (``task_problem``; not with ``force``)."""
    refuse_unknown_fields(definition)
    check_description(definition)
    if not force:
        problem = task_problem(app, definition.get("task") or "", definition.get("args"), definition.get("kwargs"),
                               require_known)
        if problem:
            raise InvalidEntryError(problem)


def task_problem(app: Celery, task: str, args: Any, kwargs: Any, require_known: bool) -> str | None:
    """Why ``app`` cannot send ``task`` with these arguments, or None.

    The arguments are checked as Celery's ``apply_async`` checks them (the
    task's signature), for a task the app has registered. An unknown name is a
    problem only with ``require_known``: where the app's tasks are all loaded
    (``celery -A proj redbeat``). Elsewhere, as in a web process that saves
    entries for tasks its workers define, a name this app does not know may be right.
    """
    registry = app.tasks if require_known else getattr(app, "_tasks", {})
    found = registry.get(task)
    if found is None:
        if not require_known:
            return None
        names = [name for name in registry if not name.startswith("celery.")]
        return f"unknown task {task!r}{did_you_mean(task, names, 3)}: this app has no task of that name"
    header = getattr(found, "__header__", None)
    if header is None or not getattr(found, "typing", True):
        return None
    try:
        header(*(args or ()), **(kwargs or {}))
    except TypeError as exc:
        return f"task {task!r} cannot take these arguments: {exc}"
    return None
