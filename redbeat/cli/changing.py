"""Changing entries: ``add``, ``edit``, ``remove``, ``pause``, ``resume``, ``run-now``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
from celery.schedules import BaseSchedule, schedule
from dateutil.parser import parse as parse_datetime
from dateutil.rrule import weekday

from .. import admin
from ..client import get_store
from ..decoder import MAX_INTERVAL, MIN_INTERVAL, DecodeError, dumps
from ..entry import RedBeatSchedulerEntry, write_over
from ..printable import printable
from ..schedules import clocked, crontab, rrule
from .base import (
    UTC,
    Tool,
    json_or_text,
    parse_json,
    pass_tool,
    redbeat,
)
from .bulk import Selection, one_or_many, selection_options


def rrule_from_text(text: str, timezone_name: str | None, now: datetime | None = None) -> rrule:
    """An rrule schedule from an RFC 5545 rule ('FREQ=DAILY;BYHOUR=9', optionally 'RRULE:'...),
    starting at midnight of ``now``'s day (default today) in its zone: the rule's unset
    hours, minutes and seconds come from its start."""
    lines = text.upper().split("RRULE:", 1)[-1].split()
    if len(lines) != 1:
        raise ValueError("give one rule, without EXDATE, RDATE or more RRULE lines")
    zone = ZoneInfo(timezone_name) if timezone_name else UTC
    midnight = (now or datetime.now(UTC)).astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return rrule(dtstart=midnight, timezone=timezone_name or None, **rrule_parts(lines[0]))


def rrule_parts(line: str) -> dict[str, Any]:
    """The rrule arguments of one RFC 5545 rule line, each list sorted and without repeats."""
    parts: dict[str, Any] = {}
    for part in line.split(";"):
        name, _, value = part.partition("=")
        if name not in RULE_PARTS:
            raise ValueError(f"unknown rule part {name!r}")
        argument, read = RULE_PARTS[name]
        parts[argument] = read(value)
    return parts


def _numbers(value: str) -> list[int]:
    return sorted({int(number) for number in value.split(",")})


def _weekday_index(name: str) -> int:
    if name not in WEEKDAY_NAMES:
        raise ValueError(f"unknown weekday {name!r}")
    return WEEKDAY_NAMES.index(name)


def _weekdays(value: str) -> list[weekday]:
    """BYDAY's weekdays ('MO', '-1FR'): the plain ones first, each group in weekday order."""
    days = set()
    for item in value.split(","):
        match = re.fullmatch(r"([+-]?\d+)?([A-Z]{2})", item)
        if match is None:
            raise ValueError(f"unknown weekday {item!r}")
        days.add(weekday(_weekday_index(match[2]), int(match[1]) if match[1] else None))
    return sorted(days, key=lambda day: (day.n is not None, day.weekday, day.n or 0))


def _until(value: str) -> datetime:
    until = parse_datetime(value)
    if until.tzinfo is None:  # the rule starts at an instant: its end must be one too
        raise ValueError("RRULE UNTIL values must be specified in UTC when DTSTART is timezone-aware")
    return until


WEEKDAY_NAMES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Each part of an RFC 5545 rule: the rrule argument it gives and how its text is read.
RULE_PARTS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "FREQ": ("freq", str),
    "INTERVAL": ("interval", int),
    "COUNT": ("count", int),
    "UNTIL": ("until", _until),
    "WKST": ("wkst", _weekday_index),
    "BYDAY": ("byweekday", _weekdays),
    "BYWEEKDAY": ("byweekday", _weekdays),  # dateutil's name, which its parser takes too
    **{name: (name.lower(), _numbers) for name in ("BYSETPOS", "BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYEASTER",
                                                   "BYWEEKNO", "BYHOUR", "BYMINUTE", "BYSECOND")},
}


SCHEDULE_OPTIONS = ("every", "cron", "rrule", "at")


@redbeat.command()
@click.argument("name", required=False)
@click.option("--task", help="Task name, e.g. proj.tasks.report.")
@click.option("--every", type=float, help="Run every this many seconds.")
@click.option("--cron", help='Crontab "minute hour day-of-month month day-of-week", e.g. "5 2 * * 1".')
@click.option("--rrule", "rrule_text", help='RFC 5545 rule, e.g. "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9".')
@click.option("--at", "at", help="Run once at this ISO 8601 time.")
@click.option("--timezone", "timezone_name", help="IANA zone of --cron and --rrule.")
@click.option("--args", "args_json", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--queue", help="Queue to send the task to.")
@click.option("--option", "extra_options", multiple=True, metavar="FIELD=JSON",
              help="A scheduling option of the data format, e.g. catch_up='\"skip\"' or jitter=30.")
@click.option("--disabled", is_flag=True, help="Create it paused.")
@click.option("--file", "file", type=click.File(), help="A definition as a JSON file instead of options.")
@pass_tool
def add(tool: Tool, name: str | None, task: str | None, every: float | None, cron: str | None,
        rrule_text: str | None, at: str | None, timezone_name: str | None, args_json: str | None,
        kwargs_json: str | None, queue: str | None, extra_options: tuple, disabled: bool, file: Any) -> None:
    """Create an entry from options or from a JSON definition file."""
    if file is not None:
        definition = parse_json(file.read(), "the file")
        if not isinstance(definition, dict):
            raise click.BadParameter("the file must hold one JSON definition object")
        name = name or definition.get("name")
    else:
        chosen = [opt for opt, value in zip(SCHEDULE_OPTIONS, (every, cron, rrule_text, at)) if value is not None]
        if len(chosen) != 1:
            raise click.UsageError("give exactly one of --every, --cron, --rrule, --at (or --file)")
        definition = {"task": task, "schedule": schedule_from_options(every, cron, rrule_text, at, timezone_name),
                      **_optional_fields(args_json, kwargs_json, queue, disabled, extra_options)}
    if not name:
        raise click.UsageError("give the entry a NAME")
    definition["name"] = name
    entry = _checked_entry(tool, definition)
    key = entry.key
    if get_store(tool.app).load(key).definition is not None:
        raise click.ClickException(f"an entry named {name!r} exists already (use edit, or remove it first)")
    entry.save()
    click.echo(printable(f"added {name}: {admin.describe_schedule(entry.schedule)}, next run "
                         f"{datetime.fromtimestamp(entry.score, UTC):%Y-%m-%d %H:%M:%S} UTC" if entry.score >= 0
                         else f"added {name}"))


def _optional_fields(args_json: str | None, kwargs_json: str | None, queue: str | None, disabled: bool,
                     extra_options: tuple) -> dict[str, Any]:
    """The definition fields ``add``'s options give besides the task and schedule."""
    fields: dict[str, Any] = {}
    if args_json is not None:
        fields["args"] = parse_json(args_json, "--args")
    if kwargs_json is not None:
        fields["kwargs"] = parse_json(kwargs_json, "--kwargs")
    if queue:
        fields["options"] = {"queue": queue}
    if disabled:
        fields["enabled"] = False
    for option in extra_options:
        field, _, value = option.partition("=")
        fields[field] = parse_json(value, f"--option {field}")
    return fields


def schedule_from_options(every: float | None, cron: str | None, rrule_text: str | None, at: str | None,
                          timezone_name: str | None) -> BaseSchedule:
    """The schedule one of ``add``'s options names (the caller passes exactly one)."""
    if every is not None:
        if not MIN_INTERVAL <= every < MAX_INTERVAL:  # NaN included; timedelta would overflow
            raise click.ClickException(f"invalid entry: interval 'every' must be at least {MIN_INTERVAL} seconds "
                                       f"and less than {MAX_INTERVAL:g}, not {every!r}")
        return schedule(run_every=timedelta(seconds=every))
    if cron is not None:
        return cron_from_text(cron, timezone_name)
    if rrule_text is not None:
        try:
            return rrule_from_text(rrule_text, timezone_name)
        except (ValueError, TypeError, KeyError) as exc:
            raise click.BadParameter(f"--rrule: {exc}") from None
    assert at is not None  # the caller passes exactly one of the schedule options
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise click.BadParameter(f"--at takes an ISO 8601 time such as 2026-12-24T18:00:00+01:00, not {at!r}") from None
    return clocked(moment)  # a time without a zone is taken as UTC


def cron_from_text(text: str, timezone_name: str | None) -> crontab:
    """A crontab from "minute hour day-of-month month day-of-week", in its own zone if one is named."""
    parts = text.split()
    if len(parts) != 5:
        raise click.BadParameter("--cron takes five fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                       day_of_week=day_of_week, timezone=timezone_name or None)
    except Exception as exc:  # celery raises ValueError, but also others on odd fields; zoneinfo a KeyError
        raise click.ClickException(f"invalid entry: bad crontab {text!r}: {exc}") from None


def _checked_entry(tool: Tool, definition: dict) -> RedBeatSchedulerEntry:
    """The entry for ``definition``, refused with a message naming the field that is wrong."""
    try:
        # Through the codec: what beat will read back is what is checked.
        fields = RedBeatSchedulerEntry.decode_definition(dumps(definition))
        return RedBeatSchedulerEntry(app=tool.app, **fields)
    except (DecodeError, ValueError, TypeError) as exc:
        raise click.ClickException(f"invalid entry: {exc}") from None


@redbeat.command()
@click.argument("name", required=False)
@selection_options
@pass_tool
def remove(tool: Tool, name: str | None, selection: Selection) -> None:
    """Delete an entry and take it out of the schedule (malformed ones too); with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "remove", lambda one: _remove(tool, one))


def _remove(tool: Tool, name: str) -> None:
    store = get_store(tool.app)
    key = RedBeatSchedulerEntry.generate_key(tool.app, name)
    if not store.known(key):
        raise click.ClickException(f"no entry named {name!r}")
    store.delete(key)
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
    """Let a paused entry run again from its next regular slot; with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "resume", lambda one: _set_enabled(tool, one, True))


def _set_enabled(tool: Tool, name: str, enabled: bool) -> None:
    _patch_definition(tool, name, "enabled", enabled)
    click.echo(f"{'resumed' if enabled else 'paused'} {printable(name)}")


def _patch_definition(tool: Tool, name: str, field: str, value: Any) -> None:
    """Change one field of the stored definition, keeping every other field as it is
    (fields RedBeat does not know included), after checking the result."""
    if field == "name":
        raise click.ClickException("the name is the key: add the entry under the new name and remove the old one")
    store = get_store(tool.app)
    key = RedBeatSchedulerEntry.generate_key(tool.app, name)
    stored = store.load(key)
    raw = stored.definition
    if raw is None:
        raise click.ClickException(f"no entry named {name!r}")
    definition = json_or_text(raw)
    if not isinstance(definition, dict):
        raise click.ClickException(f"entry {name!r} has a definition that is not a JSON object")
    definition[field] = value
    entry = _checked_entry(tool, {**definition, "name": name})
    store.save(write_over(entry, stored, json.dumps(definition)))


@redbeat.command(name="run-now")
@click.argument("name", required=False)
@selection_options
@pass_tool
def run_now(tool: Tool, name: str | None, selection: Selection) -> None:
    """Dispatch once at beat's next tick, leaving the regular schedule as it is; with --match GLOB, every one picked."""
    one_or_many(tool, name, selection, "run now", lambda one: _run_now(tool, one))


def _run_now(tool: Tool, name: str) -> None:
    tool.entry(name).run_now()
    click.echo(f"{printable(name)} will run at beat's next tick")


@redbeat.command()
@click.argument("name")
@click.argument("field")
@click.argument("value")
@pass_tool
def edit(tool: Tool, name: str, field: str, value: str) -> None:
    """Change one definition field to a JSON VALUE, e.g.: edit report args '[1, 2]'."""
    _patch_definition(tool, name, field, parse_json(value, "VALUE"))
    click.echo(printable(f"{name}: {field} = {value}"))
