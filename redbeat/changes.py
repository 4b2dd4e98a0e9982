"""Changing one entry: add, edit a field, pause, resume, run now, remove. The command line
(``redbeat.cli.changing``) and the web dashboard both act through these, so that both
check the same things and refuse with the same words.

Each refusal is a ``ChangeRefusedError`` whose message is ready to show (values from Redis
already through ``printable``); what a change did comes back as a ``Change``: what to
say, and a warning when the change may not last (a static entry). What people typed
that cannot be read is the caller's ``SpecError`` (``redbeat.specs``), which it words
with the name of its own option or field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from celery import Celery

from . import admin
from .client import get_store
from .decoder import DecodeError, dumps
from .entry import RedBeatSchedulerEntry, write_over
from .printable import printable
from .schedules import clocked
from .specs import SpecError
from .timeformat import relative
from .validation import OPTIONAL_FIELDS, WRITABLE_FIELDS, check_written, refuse_unknown_fields

__all__ = ["ChangeRefusedError", "Change", "add_entry", "patch_definition", "set_enabled", "run_now", "remove",
           "refuse_field", "static_warning", "checked", "TASK_FIELDS", "STATIC_EDIT_WARNING", "STATIC_PAUSE_WARNING"]

UTC = timezone.utc

# The fields whose change is checked against the task's registration (name, signature).
TASK_FIELDS = ("task", "args", "kwargs")

# Why an edit of a static entry may not last: beat writes beat_schedule's entries again.
STATIC_REWRITTEN = ("is a static entry from beat_schedule: beat writes those again when it starts (or takes "
                    "over the lock, or Redis comes back)")
STATIC_EDIT_WARNING = f"{STATIC_REWRITTEN}, so this change lasts until then; change beat_schedule to keep it"
STATIC_PAUSE_WARNING = f"{STATIC_REWRITTEN}; it keeps this state then unless its beat_schedule entry sets 'enabled'"


class ChangeRefusedError(Exception):
    """A change that may not be made; the message says why, ready to show."""


@dataclass(frozen=True)
class Change:
    """What a change did, in words (raw text: the caller makes it printable or escapes it),
    and a warning when it may not last."""

    said: str
    warning: str | None = None
    changed: bool = True


@contextmanager
def checked() -> Iterator[None]:
    """An entry that may not be written (a decoding or validation error) as ``ChangeRefusedError``;
    what was typed (``SpecError``) is left to the caller, who names the option it came from."""
    try:
        yield
    except SpecError:
        raise
    except (DecodeError, ValueError, TypeError) as exc:  # InvalidEntryError is a DecodeError
        raise ChangeRefusedError(printable(f"invalid entry: {exc}")) from None


def entry_key(app: Celery, name: str) -> str:
    """The key of the entry ``name``, to write or remove; refused when it is one of RedBeat's
    own keys (a name starting with ':'), or holds another type than an entry's hash
    (someone else's data, which beat never writes either)."""
    store = get_store(app)
    key = RedBeatSchedulerEntry.generate_key(app, name)
    if not store.is_entry_key(key):
        raise ChangeRefusedError(printable(store.keys.no_entry_name(key)))
    [kind] = store.key_types([key])
    if kind not in ("hash", "none"):
        raise ChangeRefusedError(printable(f"no entry named {name!r} (its key is a {kind}, not a hash)"))
    return key


def stored_entry(app: Celery, name: str) -> RedBeatSchedulerEntry:
    try:
        return RedBeatSchedulerEntry.from_name(name, app=app)
    except KeyError:
        raise ChangeRefusedError(f"no entry named {name!r}") from None
    except ValueError as exc:
        raise ChangeRefusedError(f"entry {name!r} cannot be read: {exc}") from None


def checked_entry(app: Celery, definition: dict, require_known: bool, force: bool = False) -> RedBeatSchedulerEntry:
    """The entry for ``definition``, refused with a message naming the field that is wrong:
    the checks of every writer (``validation.check_written``), the task's against the app's
    registry too where it is loaded (``require_known``), unless ``force``."""
    with checked():
        # Through the codec: what beat will read back is what is checked.
        fields = RedBeatSchedulerEntry.decode_definition(dumps(definition))
        check_written(definition, app, require_known=require_known, force=force)
        return RedBeatSchedulerEntry(app=app, **fields)


def add_entry(app: Celery, definition: dict, require_known: bool, force: bool = False) -> Change:
    """Create the entry ``definition`` describes (its ``name`` included), checked as every
    writer's; refused if an entry of that name exists, or (unless ``force``) if it would never run."""
    name = definition.get("name")
    if not name:
        raise ChangeRefusedError("give the entry a name")
    if not isinstance(name, str):  # the codec's words, said before the name is used as a key
        raise ChangeRefusedError("invalid entry: definition field 'name' must be a string")
    entry_key(app, name)
    entry = checked_entry(app, definition, require_known, force)
    with checked():  # a rule that never matches cannot be scored: said, not a traceback
        score = entry.score
        if not force:
            _refuse_what_never_runs(entry)
    store = get_store(app)
    stored = store.load(entry.key)
    if stored.definition is not None:
        raise ChangeRefusedError(f"an entry named {name!r} exists already (use edit, or remove it first)")
    # Checked above (with force, without the task checks): written as checked.
    store.save(write_over(entry, stored, entry.definition_json()))
    return Change(f"added {name}: {admin.describe_schedule(entry.schedule)}, next run "
                  f"{datetime.fromtimestamp(score, UTC):%Y-%m-%d %H:%M:%S} UTC" if score >= 0 else f"added {name}")


def _refuse_what_never_runs(entry: RedBeatSchedulerEntry) -> None:
    """Refuse a one-off whose time has passed, saying what beat would do with it, and a
    schedule with no run to come (an rrule whose UNTIL is past, or of COUNT=0)."""
    now = datetime.now(UTC)
    if not isinstance(entry.schedule, clocked):
        plan = entry.plan(now)
        if not plan.runs and plan.fire_at is None:
            raise ChangeRefusedError(printable(
                f"the schedule {admin.describe_schedule(entry.schedule)} has no run to come (its end or its count "
                f"is over): the entry would never run; give --force to add it anyway"))
        return
    at = entry.schedule.at
    if at > now:
        return
    fate = ("run at once, at beat's next tick" if entry.plan(now).runs
            else "never run (its starting deadline has passed)")
    raise ChangeRefusedError(f"the time {at.isoformat()} is in the past ({relative(at, now.timestamp())}): "
                        f"the entry would {fate}; give --force to add it anyway")


def remove(app: Celery, name: str) -> Change:
    """Delete the entry and take it out of the schedule (a malformed one too)."""
    store = get_store(app)
    key = entry_key(app, name)
    if not store.known(key):
        raise ChangeRefusedError(f"no entry named {name!r}")
    store.delete(key)
    return Change(f"removed {name}", static_warning(app, name, STATIC_EDIT_WARNING))


def set_enabled(app: Celery, name: str, enabled: bool) -> Change:
    """Pause (``enabled`` False) or resume the entry; a finished one is not resumed."""
    entry_key(app, name)
    entry = stored_entry(app, name)
    if enabled and _finished(entry):
        raise ChangeRefusedError(printable(
            f"{name} has finished (a one-off that ran, or its schedule, end_at or max_runs is over): resuming "
            f"would not run it again; nothing done. Edit its schedule, or add a new entry"))
    if entry.enabled == enabled:
        return Change(f"{name} is {'not paused' if enabled else 'paused already'}: nothing to do", changed=False)
    patch_definition(app, name, "enabled", enabled, require_known=False)
    return Change(f"{'resumed' if enabled else 'paused'} {name}", static_warning(app, name, STATIC_PAUSE_WARNING))


def _finished(entry: RedBeatSchedulerEntry) -> bool:
    """Whether the entry, enabled, would never run again."""
    plan = entry.plan(datetime.now(UTC))
    return not plan.runs and plan.finished


def run_now(app: Celery, name: str) -> Change:
    """Dispatch once at beat's next tick, leaving the regular schedule as it is."""
    key = entry_key(app, name)
    stored_entry(app, name)  # refused when there is none, or it cannot be read
    # By the key asked for: the entry's own ``key`` is built from the name in its definition,
    # which another program may have written unlike the key's (or not as the key's bytes).
    get_store(app).request_run_now(key)
    return Change(f"{name} will run at beat's next tick")


def static_warning(app: Celery, name: str, warning: str) -> str | None:
    """``warning`` about the entry ``name`` when it is a static one (beat_schedule's), else None."""
    return f"warning: {name} {warning}" if name in get_store(app).static_names() else None


def edit_field(app: Celery, name: str, field: str, value: Any, said_value: str, require_known: bool,
               force: bool = False) -> Change:
    """``redbeat edit`` and the dashboard's edit: set one field to ``value`` (None unsets an optional
    field, and gives ``enabled`` its default, true), said with ``said_value`` as it was typed."""
    if field == "enabled" and value is None:
        value, said_value = True, "true (null means the default)"  # stored as true, which every reader takes alike
    patch_definition(app, name, field, value, require_known, force)
    # Beat's re-sync keeps a paused state (statics.prepare_writes): said as pause says it.
    warning = STATIC_PAUSE_WARNING if field == "enabled" else STATIC_EDIT_WARNING
    return Change(f"{name}: {field} = {said_value}", static_warning(app, name, warning))


def patch_definition(app: Celery, name: str, field: str, value: Any, require_known: bool,
                     force: bool = False) -> None:
    """Change one field of the stored definition (None unsets an optional field), keeping
    every other field as it is, after checking the result. Fields RedBeat does not know,
    written by another program, are kept and not checked; the task is checked against
    the app's registry only when the task or its arguments change (and not with ``force``)."""
    refuse_field(field)
    store = get_store(app)
    key = entry_key(app, name)
    stored = store.load(key)
    raw = stored.definition
    if raw is None:
        raise ChangeRefusedError(f"no entry named {name!r}")
    definition = _json_or_text(raw)
    if not isinstance(definition, dict):
        raise ChangeRefusedError(f"entry {name!r} has a definition that is not a JSON object")
    if value is None and field in OPTIONAL_FIELDS:
        definition.pop(field, None)  # unset: written only when set, as every writer does
    else:
        definition[field] = value
    known = {field_name: given for field_name, given in definition.items() if field_name in WRITABLE_FIELDS}
    entry = checked_entry(app, {**known, "name": name}, require_known, force=force or field not in TASK_FIELDS)
    store.save(write_over(entry, stored, json.dumps(definition)))


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(admin.key_text(raw))
    except (ValueError, RecursionError):
        return None


def refuse_field(field: str) -> None:
    """Refuse to edit the name, or a field no entry has (naming the valid ones)."""
    if field == "name":
        raise ChangeRefusedError("the name is the key: add the entry under the new name and remove the old one")
    with checked():
        refuse_unknown_fields({field: None})
