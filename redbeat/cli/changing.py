"""Changing entries: ``add``, ``edit``, ``remove``, ``pause``, ``resume``, ``run-now``.

What people type is read by ``redbeat.specs`` and what is written is checked by
``redbeat.validation``, as the Python API and the dashboard do; here their
refusals become one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from .. import admin
from ..client import get_store
from ..decoder import DecodeError, dumps
from ..entry import RedBeatSchedulerEntry, write_over
from ..printable import printable
from ..schedules import clocked
from ..specs import (
    ScheduleSpec,
    SpecError,
    app_zone,
    json_from_text,
    option_from_text,
    schedule_from_spec,
    value_from_text,
    zone_named,
)
from ..validation import OPTION_FIELDS, OPTIONAL_FIELDS, WRITABLE_FIELDS, check_written, refuse_unknown_fields
from .base import (
    UTC,
    ExitCode,
    Tool,
    json_or_text,
    pass_tool,
    redbeat,
    relative,
)
from .bulk import Selection, one_or_many, selection_options

SCHEDULE_OPTIONS = ("every", "cron", "rrule", "at")
# The fields whose change is checked against the task's registration (name, signature).
TASK_FIELDS = ("task", "args", "kwargs")

FORCE_HELP = ("Skip the checks of the task against the app's registry (its name, and its arguments against "
              "its signature: made under `celery -A proj redbeat`){extra}. Every other check still applies.")

# Why an edit of a static entry may not last: beat writes beat_schedule's entries again.
STATIC_REWRITTEN = ("is a static entry from beat_schedule: beat writes those again when it starts (or takes "
                    "over the lock, or Redis comes back)")
STATIC_EDIT_WARNING = f"{STATIC_REWRITTEN}, so this change lasts until then; change beat_schedule to keep it"
STATIC_PAUSE_WARNING = f"{STATIC_REWRITTEN}; it keeps this state then unless its beat_schedule entry sets 'enabled'"


class BadValue(click.ClickException):
    """A value typed on the command line that cannot be read: one line, exit 2 (as click's own)."""

    exit_code = ExitCode.USAGE


@contextmanager
def said_in_one_line(what: str | None = None) -> Iterator[None]:
    """Refusals as one-line errors: what was typed (``SpecError``, naming ``what``: exit 2),
    and an entry that may not be written (exit 1)."""
    try:
        yield
    except SpecError as exc:
        raise BadValue(printable(f"{what}: {exc}" if what else str(exc))) from None
    except (DecodeError, ValueError, TypeError) as exc:  # InvalidEntryError is a DecodeError
        raise click.ClickException(printable(f"invalid entry: {exc}")) from None


@redbeat.command()
@click.argument("name", required=False)
@click.option("--task", help="Task name, e.g. proj.tasks.report.")
@click.option("--every", type=float, help="Run every this many seconds.")
@click.option("--cron", help='Crontab "minute hour day-of-month month day-of-week", e.g. "5 2 * * 1".')
@click.option("--rrule", "rrule_text", help='RFC 5545 rule, e.g. "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9".')
@click.option("--at", "at", help="Run once at this ISO 8601 time, e.g. 2026-12-24T18:00:00+01:00; without an "
              "offset, in --timezone, else in the app's timezone setting (else UTC). A time in the past needs "
              "--force.")
@click.option("--timezone", "timezone_name", help="IANA zone of --cron, --rrule and --at (an --every interval "
              "has none, nor an --at time with an offset); without it, the app's timezone setting (else UTC).")
@click.option("--args", "args_json", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--queue", help="Queue to send the task to.")
@click.option("--description", help="Free text about the entry, for people.")
@click.option("--option", "extra_options", multiple=True, metavar="FIELD=VALUE",
              help=f"A scheduling option, VALUE as JSON or a bare word, e.g. catch_up=skip or jitter=30; one of "
                   f"{', '.join(OPTION_FIELDS)}.")
@click.option("--disabled", is_flag=True, help="Create it paused.")
@click.option("--file", "file", type=click.File(), help="A definition as a JSON file instead of options.")
@click.option("--force", is_flag=True, help=FORCE_HELP.format(extra="; also adds a one-off whose time has passed"))
@pass_tool
def add(tool: Tool, name: str | None, task: str | None, every: float | None, cron: str | None,
        rrule_text: str | None, at: str | None, timezone_name: str | None, args_json: str | None,
        kwargs_json: str | None, queue: str | None, description: str | None, extra_options: tuple,
        disabled: bool, file: Any, force: bool) -> None:
    """Create an entry from options or from a JSON definition file."""
    if file is not None:
        definition = _definition_from_file(file.read())
        name = name or definition.get("name")
    else:
        spec = ScheduleSpec(every=every, cron=cron, rrule=rrule_text, at=at, timezone=timezone_name)
        definition = {"task": task, "schedule": _schedule(tool, spec),
                      **_optional_fields(args_json, kwargs_json, queue, description, disabled, extra_options)}
    if not name:
        raise click.UsageError("give the entry a NAME")
    definition["name"] = name
    _entry_key(tool, name)
    entry = _checked_entry(tool, definition, force)
    with said_in_one_line():  # a rule that never matches cannot be scored: said, not a traceback
        score = entry.score
        if not force:
            _refuse_what_never_runs(entry)
    store = get_store(tool.app)
    stored = store.load(entry.key)
    if stored.definition is not None:
        raise click.ClickException(f"an entry named {name!r} exists already (use edit, or remove it first)")
    # Checked above (with --force, without the task checks): written as checked.
    store.save(write_over(entry, stored, entry.definition_json()))
    click.echo(printable(f"added {name}: {admin.describe_schedule(entry.schedule)}, next run "
                         f"{datetime.fromtimestamp(score, UTC):%Y-%m-%d %H:%M:%S} UTC" if score >= 0
                         else f"added {name}"))


def _definition_from_file(text: str) -> dict:
    with said_in_one_line("--file"):
        definition = json_from_text(text, "the file")
    if not isinstance(definition, dict):
        raise BadValue("--file: the file must hold one JSON definition object")
    return definition


def _schedule(tool: Tool, spec: ScheduleSpec) -> Any:
    """The schedule of ``add``'s options, each refusal naming its option."""
    chosen = [name for name in SCHEDULE_OPTIONS if getattr(spec, name) is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --every, --cron, --rrule, --at (or --file)")
    if spec.timezone is not None:
        if spec.every is not None:
            raise BadValue("--timezone applies to --cron, --rrule and --at: an --every interval has no time zone")
        with said_in_one_line("--timezone"):
            zone_named(spec.timezone)
    with said_in_one_line("--timezone (the app's timezone setting)"):
        default_zone = app_zone(tool.app)
    with said_in_one_line(f"--{chosen[0]}"):
        return schedule_from_spec(spec, default_zone)


def _optional_fields(args_json: str | None, kwargs_json: str | None, queue: str | None, description: str | None,
                     disabled: bool, extra_options: tuple) -> dict[str, Any]:
    """The definition fields ``add``'s options give besides the task and schedule."""
    fields: dict[str, Any] = {}
    with said_in_one_line("--args"):
        if args_json is not None:
            fields["args"] = json_from_text(args_json, "--args")
    with said_in_one_line("--kwargs"):
        if kwargs_json is not None:
            fields["kwargs"] = json_from_text(kwargs_json, "--kwargs")
    if queue:
        fields["options"] = {"queue": queue}
    if description is not None:
        fields["description"] = description
    if disabled:
        fields["enabled"] = False
    for option in extra_options:
        with said_in_one_line("--option"):
            given = option_from_text(option)
        fields[given.field] = given.value
    return fields


def _entry_key(tool: Tool, name: str) -> str:
    """The key of the entry ``name``, to write or remove; refused when it is one of RedBeat's
    own keys (a name starting with ':'), or holds another type than an entry's hash
    (someone else's data, which beat never writes either)."""
    store = get_store(tool.app)
    key = RedBeatSchedulerEntry.generate_key(tool.app, name)
    if not store.is_entry_key(key):
        raise click.ClickException(printable(store.keys.no_entry_name(key)))
    [kind] = store.key_types([key])
    if kind not in ("hash", "none"):
        raise click.ClickException(printable(f"no entry named {name!r} (its key is a {kind}, not a hash)"))
    return key


def _checked_entry(tool: Tool, definition: dict, force: bool = False) -> RedBeatSchedulerEntry:
    """The entry for ``definition``, refused with a message naming the field that is wrong:
    the checks of every writer (``validation.check_written``), the task's against the app's
    registry too where it is loaded, unless ``force``."""
    with said_in_one_line():
        # Through the codec: what beat will read back is what is checked.
        fields = RedBeatSchedulerEntry.decode_definition(dumps(definition))
        check_written(definition, tool.app, require_known=tool.tasks_known, force=force)
        return RedBeatSchedulerEntry(app=tool.app, **fields)


def _refuse_what_never_runs(entry: RedBeatSchedulerEntry) -> None:
    """Refuse a one-off whose time has passed, saying what beat would do with it, and a
    schedule with no run to come (an rrule whose UNTIL is past, or of COUNT=0)."""
    now = datetime.now(UTC)
    if not isinstance(entry.schedule, clocked):
        plan = entry.plan(now)
        if not plan.runs and plan.fire_at is None:
            raise click.ClickException(printable(
                f"the schedule {admin.describe_schedule(entry.schedule)} has no run to come (its end or its count "
                f"is over): the entry would never run; give --force to add it anyway"))
        return
    at = entry.schedule.at
    if at > now:
        return
    fate = ("run at once, at beat's next tick" if entry.plan(now).runs
            else "never run (its starting deadline has passed)")
    raise click.ClickException(f"the time {at.isoformat()} is in the past ({relative(at, now.timestamp())}): "
                               f"the entry would {fate}; give --force to add it anyway")


@redbeat.command()
@click.argument("name", required=False)
@selection_options
@pass_tool
def remove(tool: Tool, name: str | None, selection: Selection) -> None:
    """Delete an entry and take it out of the schedule (malformed ones too); with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "remove", lambda one: _remove(tool, one))


def _remove(tool: Tool, name: str) -> None:
    store = get_store(tool.app)
    key = _entry_key(tool, name)
    if not store.known(key):
        raise click.ClickException(f"no entry named {name!r}")
    store.delete(key)
    _warn_if_static(tool, name, STATIC_EDIT_WARNING)
    click.echo(f"removed {printable(name)}")


@redbeat.command()
@click.argument("name", required=False)
@selection_options
@pass_tool
def pause(tool: Tool, name: str | None, selection: Selection) -> None:
    """Stop an entry from running, keeping it and its place in the cadence; with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "pause", lambda one: _set_enabled(tool, one, False))


@redbeat.command()
@click.argument("name", required=False)
@selection_options
@pass_tool
def resume(tool: Tool, name: str | None, selection: Selection) -> None:
    """Let a paused entry run again from its next regular slot (a finished one does not: exit 1);
    with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "resume", lambda one: _set_enabled(tool, one, True))


def _set_enabled(tool: Tool, name: str, enabled: bool) -> None:
    _entry_key(tool, name)
    entry = tool.entry(name)
    if enabled and _finished(entry):
        raise click.ClickException(printable(
            f"{name} has finished (a one-off that ran, or its schedule, end_at or max_runs is over): resuming "
            f"would not run it again; nothing done. Edit its schedule, or add a new entry"))
    if entry.enabled == enabled:
        click.echo(printable(f"{name} is {'not paused' if enabled else 'paused already'}: nothing to do"))
        return
    _patch_definition(tool, name, "enabled", enabled)
    _warn_if_static(tool, name, STATIC_PAUSE_WARNING)
    click.echo(f"{'resumed' if enabled else 'paused'} {printable(name)}")


def _finished(entry: RedBeatSchedulerEntry) -> bool:
    """Whether the entry, enabled, would never run again."""
    plan = entry.plan(datetime.now(UTC))
    return not plan.runs and plan.finished


def _warn_if_static(tool: Tool, name: str, warning: str) -> None:
    if name in get_store(tool.app).static_names():
        click.echo(printable(f"warning: {name} {warning}"), err=True)


def _patch_definition(tool: Tool, name: str, field: str, value: Any, force: bool = False) -> None:
    """Change one field of the stored definition (None unsets an optional field), keeping
    every other field as it is, after checking the result. Fields RedBeat does not know,
    written by another program, are kept and not checked; the task is checked against
    the app's registry only when the task or its arguments change (and not with ``force``)."""
    _refuse_field(field)
    store = get_store(tool.app)
    key = _entry_key(tool, name)
    stored = store.load(key)
    raw = stored.definition
    if raw is None:
        raise click.ClickException(f"no entry named {name!r}")
    definition = json_or_text(raw)
    if not isinstance(definition, dict):
        raise click.ClickException(f"entry {name!r} has a definition that is not a JSON object")
    if value is None and field in OPTIONAL_FIELDS:
        definition.pop(field, None)  # unset: written only when set, as every writer does
    else:
        definition[field] = value
    known = {field_name: given for field_name, given in definition.items() if field_name in WRITABLE_FIELDS}
    entry = _checked_entry(tool, {**known, "name": name}, force=force or field not in TASK_FIELDS)
    store.save(write_over(entry, stored, json.dumps(definition)))


def _refuse_field(field: str) -> None:
    """Refuse to edit the name, or a field no entry has (naming the valid ones)."""
    if field == "name":
        raise click.ClickException("the name is the key: add the entry under the new name and remove the old one")
    with said_in_one_line():
        refuse_unknown_fields({field: None})


@redbeat.command(name="run-now")
@click.argument("name", required=False)
@selection_options
@pass_tool
def run_now(tool: Tool, name: str | None, selection: Selection) -> None:
    """Dispatch once at beat's next tick, leaving the regular schedule as it is; with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "run now", lambda one: _run_now(tool, one))


def _run_now(tool: Tool, name: str) -> None:
    _entry_key(tool, name)
    tool.entry(name).run_now()
    click.echo(f"{printable(name)} will run at beat's next tick")


@redbeat.command()
@click.argument("name")
@click.argument("field")
@click.argument("value")
@click.option("--force", is_flag=True, help=FORCE_HELP.format(extra=""))
@pass_tool
def edit(tool: Tool, name: str, field: str, value: str, force: bool) -> None:
    """Change one definition FIELD to VALUE: JSON, or a bare word for task, description, catch_up
    and on_finish; null unsets an optional field. E.g.: edit report args '[1, 2]';
    edit report task proj.tasks.report; edit report description "nightly export"."""
    _refuse_field(field)
    with said_in_one_line("VALUE"):
        parsed = value_from_text(field, value)
    if field == "enabled" and parsed is None:
        parsed, value = True, "true (null means the default)"  # stored as true, which every reader takes alike
    _patch_definition(tool, name, field, parsed, force=force)
    # Beat's re-sync keeps a paused state (statics.prepare_writes): said as pause says it.
    _warn_if_static(tool, name, STATIC_PAUSE_WARNING if field == "enabled" else STATIC_EDIT_WARNING)
    click.echo(printable(f"{name}: {field} = {value}"))
