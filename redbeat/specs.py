"""What people type for an entry, read into what RedBeat stores: a schedule from an
interval, crontab text, an RFC 5545 rule or a time; a field's value from JSON or a
bare word. Pure functions shared by the command line and the web dashboard; each
refusal is a ``SpecError`` whose message says what would be right."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule
from dateutil.parser import parse as parse_datetime
from dateutil.rrule import weekday

from .decoder import MAX_INTERVAL, MIN_INTERVAL, DecodeError, zone_from_name
from .schedules import clocked, crontab, crontab_field_problem, interval, rrule
from .suggestions import did_you_mean
from .validation import OPTION_FIELDS, TASK_OPTIONS

__all__ = ["SpecError", "FieldSpecError", "TypedFields", "fields_from_text",
           "ScheduleSpec", "FieldValue", "TEXT_FIELDS", "schedule_from_spec", "interval_from_seconds",
           "cron_from_text", "rrule_from_text", "moment_from_text", "zone_named", "app_zone", "value_from_text",
           "json_from_text", "option_from_text"]

UTC = timezone.utc


class SpecError(ValueError):
    """What was typed cannot be read: the message says what would be right."""


class FieldSpecError(SpecError):
    """What was typed for one field (``args``, ``kwargs``, ``option``) cannot be read; callers
    name the field as their users know it (the command line's ``--args``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as typed: exactly one of ``every`` (seconds), ``cron``, ``rrule``, ``at``,
    and the IANA zone of the crontab, rule or time (not of an interval, which has none)."""

    every: float | None = None
    cron: str | None = None
    rrule: str | None = None
    at: str | None = None
    timezone: str | None = None


@dataclass(frozen=True)
class TypedFields:
    """The fields of an entry besides its task and schedule, as typed: arguments as JSON
    text, scheduling options as ``FIELD=VALUE`` (``option_from_text``)."""

    args: str | None = None
    kwargs: str | None = None
    queue: str | None = None
    description: str | None = None
    disabled: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldValue:
    """One definition field and the value read for it."""

    field: str
    value: Any


def schedule_from_spec(spec: ScheduleSpec, default_zone: tzinfo = UTC, now: datetime | None = None) -> BaseSchedule:
    """The schedule ``spec`` describes; a time without an offset, and a rule, are taken in
    ``spec.timezone``, else ``default_zone`` (the app's, as a crontab without zone follows it);
    a rule starts at midnight of ``now``'s day."""
    given = [name for name in ("every", "cron", "rrule", "at") if getattr(spec, name) is not None]
    if len(given) != 1:
        raise SpecError("give exactly one of every, cron, rrule, at")
    if spec.every is not None:
        if spec.timezone:
            raise SpecError("an interval has no time zone: timezone applies to cron, rrule and at only")
        return interval_from_seconds(spec.every)
    if spec.cron is not None:
        return cron_from_text(spec.cron, spec.timezone)
    if spec.rrule is not None:
        # A rule keeps its zone's name: the app's, unless given (UTC has no name to keep).
        return rrule_from_text(spec.rrule, spec.timezone or getattr(default_zone, "key", None), now)
    assert spec.at is not None
    zone = zone_named(spec.timezone) if spec.timezone else default_zone
    moment = moment_from_text(spec.at, zone)
    if spec.timezone and moment.tzinfo is not zone:  # the time's own offset would win, silently
        raise SpecError(f"the time {spec.at!r} has an offset of its own: give it without one to take it in "
                        f"{spec.timezone}, or give no timezone")
    return clocked(moment)


def interval_from_seconds(every: float) -> interval:
    if not MIN_INTERVAL <= every < MAX_INTERVAL:  # NaN included; timedelta would overflow
        raise SpecError(f"an interval must be at least {MIN_INTERVAL} seconds and less than {MAX_INTERVAL:g}, "
                        f"not {every!r}")
    return interval(run_every=timedelta(seconds=every))


def zone_named(name: str) -> tzinfo:
    """The IANA zone ``name``; unknown, refused with the nearest names."""
    try:
        return zone_from_name(name)
    except DecodeError as exc:
        raise SpecError(str(exc)) from None


def app_zone(app: Celery) -> tzinfo:
    """The zone of the app's ``timezone`` setting (Celery's), else UTC."""
    name = app.conf.timezone
    return zone_named(name) if name else UTC


CRONTAB_PARTS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def cron_from_text(text: str, timezone_name: str | None) -> crontab:
    """A crontab from "minute hour day-of-month month day-of-week", in its own zone if one is named."""
    parts = text.split()
    if len(parts) != 5:
        raise SpecError(f"a crontab has five fields: minute hour day-of-month month day-of-week, not {text!r}")
    fields = dict(zip(CRONTAB_PARTS, parts))
    problem = crontab_field_problem(fields)
    if problem:
        raise SpecError(problem)
    if timezone_name:
        zone_named(timezone_name)
    try:
        return crontab(timezone=timezone_name or None, **fields)
    except Exception as exc:  # celery raises ValueError, but also others on odd fields
        raise SpecError(f"bad crontab {text!r}: {exc}") from None


def rrule_from_text(text: str, timezone_name: str | None, now: datetime | None = None) -> rrule:
    """An rrule schedule from an RFC 5545 rule ('FREQ=DAILY;BYHOUR=9', optionally 'RRULE:'...),
    starting at midnight of ``now``'s day (default today) in its zone: the rule's unset
    hours, minutes and seconds come from its start."""
    lines = text.upper().split("RRULE:", 1)[-1].split()
    if len(lines) != 1:
        raise SpecError("give one rule, without EXDATE, RDATE or more RRULE lines")
    zone = zone_named(timezone_name) if timezone_name else UTC
    midnight = (now or datetime.now(UTC)).astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        return rrule(dtstart=midnight, timezone=timezone_name or None, **_rrule_parts(lines[0]))
    except (ValueError, TypeError, KeyError) as exc:
        raise SpecError(f"bad rule {text!r}: {exc}") from None


def _rrule_parts(line: str) -> dict[str, Any]:
    """The rrule arguments of one RFC 5545 rule line, each list sorted and without repeats."""
    parts: dict[str, Any] = {}
    for part in line.split(";"):
        name, _, value = part.partition("=")
        if name not in RULE_PARTS:
            raise ValueError(f"unknown rule part {name!r}{did_you_mean(name, RULE_PARTS)}")
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


def moment_from_text(text: str, zone: tzinfo) -> datetime:
    """An ISO 8601 time; without an offset, taken in ``zone``."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"a time is ISO 8601, such as 2026-12-24T18:00:00+01:00 or 2026-12-24T18:00 (in the "
                        f"app's time zone), not {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


# Definition fields whose value is text: a bare word is taken as that text.
TEXT_FIELDS = ("task", "description", "catch_up", "on_finish", "overlap")


def json_from_text(text: str, what: str) -> Any:
    """``text`` read as JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"{what} must be JSON: {exc or 'nested too deeply'}") from None


def value_from_text(field: str, text: str) -> Any:
    """A field's value as typed: JSON, or for a text field (``TEXT_FIELDS``) a bare word,
    so that ``task proj.tasks.add`` needs no shell-quoted JSON. JSON that is no text
    (``2024``) is taken as the text for a text field; ``null`` unsets it."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        if field in TEXT_FIELDS:
            return text
        raise SpecError(f"{field!r} takes a JSON value, such as {_EXAMPLES.get(field, '[1, 2]')}; a bare word "
                        f"is taken as text only for {', '.join(TEXT_FIELDS)}; not {text!r}") from None
    if field in TEXT_FIELDS and value is not None and not isinstance(value, str):
        return text
    return value


_EXAMPLES = {"args": "'[1, 2]'", "kwargs": "'{\"x\": 1}'", "options": "'{\"queue\": \"reports\"}'",
             "enabled": "true", "max_runs": "3", "catch_up_max": "10", "jitter": "30", "starting_deadline": "60",
             "max_run_time": "600",
             "start_at": "'{\"__type__\": \"datetime\", ...}'", "end_at": "'{\"__type__\": \"datetime\", ...}'",
             "schedule": "'{\"__type__\": \"interval\", \"every\": 60}'"}


def fields_from_text(typed: TypedFields) -> dict[str, Any]:
    """The definition fields ``typed`` gives; a refusal is a ``FieldSpecError`` naming its field."""
    fields: dict[str, Any] = {}
    for name in ("args", "kwargs"):
        text = getattr(typed, name)
        if text is not None:
            try:
                fields[name] = json_from_text(text, f"--{name}")
            except SpecError as exc:
                raise FieldSpecError(name, str(exc)) from None
    if typed.queue:
        fields["options"] = {"queue": typed.queue}
    if typed.description is not None:
        fields["description"] = typed.description
    if typed.disabled:
        fields["enabled"] = False
    for option in typed.options:
        try:
            given = option_from_text(option)
        except SpecError as exc:
            raise FieldSpecError("option", str(exc)) from None
        fields[given.field] = given.value
    return fields


def option_from_text(text: str) -> FieldValue:
    """A scheduling option typed as ``FIELD=VALUE`` (``catch_up=skip``, ``jitter=30``)."""
    field, equals, value = text.partition("=")
    if not equals:
        raise SpecError(f"an option is FIELD=VALUE, such as catch_up=skip or jitter=30, not {text!r}")
    if field not in OPTION_FIELDS:
        if field in TASK_OPTIONS:
            hint = " (a task option: give it with --queue, or in the definition's 'options' with --file or edit)"
        else:
            hint = did_you_mean(field, OPTION_FIELDS)
        raise SpecError(f"unknown scheduling option {field!r}{hint}; the scheduling options are "
                        f"{', '.join(OPTION_FIELDS)}")
    return FieldValue(field, value_from_text(field, value))
