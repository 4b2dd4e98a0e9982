"""Changing entries: ``add``, ``edit``, ``remove``, ``pause``, ``resume``, ``run-now``.

What people type is read by ``redbeat.specs`` and what is written is checked by
``redbeat.validation``, as the Python API and the dashboard do; here their
refusals become one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from .. import changes
from ..decoder import DecodeError
from ..printable import printable
from ..specs import (
    FieldSpecError,
    ScheduleSpec,
    SpecError,
    TypedFields,
    app_zone,
    fields_from_text,
    json_from_text,
    schedule_from_spec,
    value_from_text,
    zone_named,
)
from ..validation import OPTION_FIELDS
from .base import ExitCode, Tool, pass_tool, redbeat
from .bulk import Selection, one_or_many, selection_options

SCHEDULE_OPTIONS = ("every", "cron", "rrule", "at")

FORCE_HELP = ("Skip the checks of the task against the app's registry (its name, and its arguments against "
              "its signature: made under `celery -A proj redbeat`){extra}. Every other check still applies.")


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
    except changes.ChangeRefusedError as exc:  # its message is printable already
        raise click.ClickException(str(exc)) from None
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
    with said_in_one_line():
        _said(changes.add_entry(tool.app, definition, tool.tasks_known, force))


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
    try:
        return fields_from_text(TypedFields(args_json, kwargs_json, queue, description, disabled, extra_options))
    except FieldSpecError as exc:
        raise BadValue(printable(f"--{exc.field}: {exc}")) from None


@redbeat.command()
@click.argument("name", required=False)
@selection_options
@pass_tool
def remove(tool: Tool, name: str | None, selection: Selection) -> None:
    """Delete an entry and take it out of the schedule (malformed ones too); with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "remove", lambda one: _remove(tool, one))


def _remove(tool: Tool, name: str) -> None:
    with said_in_one_line():
        _said(changes.remove(tool.app, name))


def _said(change: changes.Change) -> None:
    """What a change did, on stdout; its warning first, on stderr."""
    if change.warning:
        click.echo(printable(change.warning), err=True)
    click.echo(printable(change.said))


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
    with said_in_one_line():
        _said(changes.set_enabled(tool.app, name, enabled))


@redbeat.command(name="run-now")
@click.argument("name", required=False)
@selection_options
@pass_tool
def run_now(tool: Tool, name: str | None, selection: Selection) -> None:
    """Dispatch once at beat's next tick, leaving the regular schedule as it is; with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "run now", lambda one: _run_now(tool, one))


def _run_now(tool: Tool, name: str) -> None:
    with said_in_one_line():
        _said(changes.run_now(tool.app, name))


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
    with said_in_one_line():
        changes.refuse_field(field)
    with said_in_one_line("VALUE"):
        parsed = value_from_text(field, value)
    with said_in_one_line():
        change = changes.edit_field(tool.app, name, field, parsed, value, tool.tasks_known, force)
    _said(change)
