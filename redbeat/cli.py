"""The ``redbeat`` command line: ``celery -A proj redbeat <command>`` (with the
app's configuration) or the standalone ``redbeat --redis-url ... <command>``."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import click
from celery import Celery
from celery.schedules import BaseSchedule, schedule
from dateutil.parser import parse as parse_datetime
from dateutil.rrule import weekday
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.sentinel import MasterNotFoundError

from . import __version__, admin, rollback
from .client import build_client, display_url, get_store
from .config import DEFAULT_KEY_PREFIX, HASH_TAG, ConfigurationError, RedBeatConfig, ensure_conf
from .decoder import MAX_INTERVAL, MIN_INTERVAL, DecodeError, dumps
from .entry import RedBeatSchedulerEntry, write_over
from .keys import KeyNames
from .prefixmove import MoveAction, MoveError, MovePlan, MoveResult, PrefixMover
from .printable import printable
from .schedules import clocked, crontab, rrule
from .store import WrongTypeError

UTC = timezone.utc


class ExitCode(IntEnum):
    """What a command's exit status says (docs/cli.rst, *Exit codes*)."""

    OK = 0
    # status: unhealthy; doctor: something wrong found; any command: it could not do what was asked.
    FAILED = 1
    USAGE = 2  # click's own: an unknown option, a bad value
    # status: beat ticks, but runs do not go out as they should (restarting beat would not help).
    DEGRADED = 3
    # Redis out of reach or refusing: connection refused, no answer in time, unknown host,
    # credentials refused, a command refused; says nothing about beat.
    REDIS = 4
    CONFIGURATION = 5  # no Redis URL, an unreadable one, a bad setting


class RedisUnusable(click.ClickException):
    """Redis could not be reached or refused the command: one line, exit 4."""

    exit_code = ExitCode.REDIS


class BadConfiguration(click.ClickException):
    """No Redis URL, an unreadable one, a bad setting: one line, exit 5."""

    exit_code = ExitCode.CONFIGURATION


class Tool:
    """What every command needs: the app, how to print, and the Redis timeout given on the command line."""

    def __init__(self, app: Celery, as_json: bool = False, timeout: float | None = None) -> None:
        self.app = app
        self.as_json = as_json
        self.timeout = timeout

    def apply_timeout(self, conf: RedBeatConfig) -> None:
        """Give the command's clients its Redis timeout: --timeout, else redbeat_command_timeout, else 2 s."""
        conf.command_timeout = self.timeout if self.timeout is not None else conf.command_timeout_setting()

    def entry(self, name: str) -> RedBeatSchedulerEntry:
        try:
            return RedBeatSchedulerEntry.from_name(name, app=self.app)
        except KeyError:
            raise click.ClickException(f"no entry named {name!r}") from None
        except ValueError as exc:
            raise click.ClickException(f"entry {name!r} cannot be read: {exc}") from None


pass_tool = click.make_pass_decorator(Tool)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")


class RedBeatGroup(click.Group):
    """Failures any command can meet, each said in one line with its exit code,
    never as a traceback: Redis out of reach or refusing, a bad URL or setting,
    and one of RedBeat's own keys holding another type (named, with the fix)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise BadConfiguration(printable(str(exc))) from None
        except (RedisError, RedisClusterException, WrongTypeError) as exc:
            wrong_type = isinstance(exc, WrongTypeError) or str(exc).startswith("WRONGTYPE")
            wrong = admin.wrong_types(ctx.obj.app) if wrong_type else []
            if wrong:
                raise click.ClickException(printable("; ".join(w.explanation() for w in wrong))) from None
            raise RedisUnusable(printable(_redis_problem(ctx, exc))) from None


def _redis_problem(ctx: click.Context, exc: Exception) -> str:
    """What went wrong with Redis, in one line that names the server."""
    where, reason = _where(ctx), _reason(exc)
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return f"Redis at {where} refused the credentials: {reason}"
    if isinstance(exc, TimeoutError):
        tool = ctx.find_object(Tool)
        conf = getattr(tool.app, "redbeat_conf", None) if tool else None
        waited = f" within {conf.command_timeout:g}s" if conf and conf.command_timeout else ""
        return f"cannot reach Redis at {where}: no answer{waited} ({reason})"
    if isinstance(exc, (ConnectionError, RedisClusterException)):
        return f"cannot reach Redis at {where}: {reason}"
    if isinstance(exc, ResponseError):
        return f"Redis at {where} refused a command: {reason}"
    return f"Redis at {where} failed: {reason}"


def _reason(exc: Exception) -> str:
    """The exception's message; a Sentinel client's (the repr of each sentinel's client,
    a screenful each) cut down to the service, and each sentinel's address and error."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, MasterNotFoundError):
        service, _, errors = text.partition(" : ")
        said = [f"{host}:{port} {kind}" for host, port, kind in
                re.findall(r"host=([^,]+),port=(\d+),.*? - (?:\w+:)?(\w+)", errors)]
        text = service + (f" (sentinels: {'; '.join(said)})" if said else "")
    return text


def _where(ctx: click.Context) -> str:
    """The Redis URL, password masked; of a URL too broken to parse, all before the host is masked."""
    tool = ctx.find_object(Tool)
    url = getattr(getattr(tool.app, "redbeat_conf", None), "redis_url", None) if tool else None
    if url is None and tool:
        url = tool.app.conf.get("redbeat_redis_url") or tool.app.conf.get("REDBEAT_REDIS_URL")
    try:
        return display_url(url)
    except ValueError:
        return re.sub(r"://.*@", "://**@", str(url))


def timeout_option(help_text: str) -> Callable:
    return click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help=help_text)


@click.group(name="redbeat", cls=RedBeatGroup)
@click.option("--redis-url", envvar="REDBEAT_REDIS_URL", help="Redis URL of the schedule (standalone use).")
@click.option("--prefix", envvar="REDBEAT_KEY_PREFIX", help="Key prefix (default redbeat:).")
@timeout_option("Seconds to wait for Redis to connect and for each answer, without retries [default: the "
                "redbeat_command_timeout setting, else 2].")
@click.version_option(__version__, prog_name="redbeat")
@click.pass_context
def redbeat(ctx: click.Context, redis_url: str | None, prefix: str | None, timeout: float | None) -> None:
    """Inspect and manage the RedBeat schedule."""
    app = getattr(ctx.obj, "app", None)  # set when run as `celery -A proj redbeat`
    if app is None or redis_url:
        app = Celery("redbeat-cli", set_as_current=False)
        app.conf.redbeat_redis_url = redis_url or "redis://localhost:6379/0"
    if prefix:
        app.conf.redbeat_key_prefix = prefix
    ctx.obj = Tool(app, timeout=timeout)
    # move-prefix reads the configured prefix as its source, which Redis
    # Cluster refuses to run beat with: it builds its own client. status
    # takes a --timeout of its own, which its client must be built with.
    if ctx.invoked_subcommand not in ("schema", "move-prefix", "status"):
        _build_store(ctx)


def _build_store(ctx: click.Context) -> None:
    """Build the command's store with its timeout (no connection yet, but on Redis
    Cluster), so that a URL or options redis-py cannot read are said at once."""
    tool = ctx.find_object(Tool)
    assert tool is not None
    tool.apply_timeout(ensure_conf(tool.app))
    try:
        get_store(tool.app)
    except (ValueError, TypeError) as exc:
        raise BadConfiguration(printable(f"bad Redis URL or options {_where(ctx)}: {exc}")) from None


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[list[Any]], header: list[str]) -> None:
    """Aligned columns, each cell through ``printable``; the header in bold when the terminal shows colour."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()
    click.secho(line(header), bold=True)
    for row in rows:
        click.echo(line(row))


def relative(moment: datetime | None, now: float) -> str:
    if moment is None:
        return "never"
    seconds = moment.timestamp() - now
    amount = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if amount >= size or unit == "s":
            words = f"{int(amount // size)}{unit}"
            break
    return f"in {words}" if seconds >= 0 else f"{words} ago"


# -- reading ------------------------------------------------------------------------------

@redbeat.command(name="list")
@json_option
@click.option("--match", "pattern", help="Only names matching this glob pattern (fnmatch).")
@click.option("--task", help="Only entries of this task.")
@click.option("--sort", type=click.Choice(["next", "name", "task", "last"]), default="next", show_default=True)
@pass_tool
def list_entries(tool: Tool, as_json: bool, pattern: str | None, task: str | None, sort: str) -> None:
    """A table of entries: schedule, next and last run, runs published (and given up), parked reason."""
    from fnmatch import fnmatch

    views = [v for v in admin.entries(tool.app)
             if (pattern is None or fnmatch(v.name, pattern)) and (task is None or (v.entry and v.entry.task == task))]
    in_flight = admin.in_flight_counts(tool.app)
    summaries = [v.summary(in_flight[v.key]) for v in views]
    sort_key = {"next": lambda s: (s["next_run"] is None, s["next_run"] or ""), "name": lambda s: s["name"],
                "task": lambda s: s["task"] or "", "last": lambda s: s["last_run"] or ""}[sort]
    order = sorted(range(len(views)), key=lambda i: sort_key(summaries[i]))
    if as_json:
        emit([summaries[i] for i in order])
        return
    now = get_store(tool.app).time()  # beat's clock, for "in 5s" and "2m ago"
    rows = []
    for i in order:
        view, summary = views[i], summaries[i]
        last = _last_dispatch(view)
        rows.append([
            view.name,
            summary["task"] or "-",
            summary["schedule"] or "-",
            {True: "yes", False: "no", None: "-"}[summary["enabled"]],
            _next_run_words(view, now),
            relative(last, now) if last else "never",
            _runs_words(summary),
            summary["parked"] or summary["error"] or "",
        ])
    table(rows, ["NAME", "TASK", "SCHEDULE", "ENABLED", "NEXT RUN", "LAST RUN", "RUNS", "PARKED"])


@redbeat.command()
@click.argument("name")
@json_option
@pass_tool
def show(tool: Tool, name: str, as_json: bool) -> None:
    """The full definition and meta, the next 5 runs and the recent history."""
    [view] = admin.entries(tool.app, [RedBeatSchedulerEntry.generate_key(tool.app, name)])
    if view.score is None and not view.fields:
        what = "" if view.kind == "none" else f" (its key is a {view.kind}, not a hash)"
        raise click.ClickException(f"no entry named {printable(name)}{what}")
    fields = {k: _json_or_text(v) for k, v in view.fields.items()}
    runs, preview_error = _preview(view)
    preview = [{"slot": run["slot"].isoformat(), "fire_at": run["fire_at"].isoformat(),
                "local": run["local"].isoformat()} for run in runs]
    history, wrong_history = admin.history(tool.app, view.key)
    history_error = wrong_history.explanation() if wrong_history else None
    summary = view.summary(admin.in_flight_counts(tool.app)[view.key])
    if as_json:
        emit({**summary, "fields": fields, "next_runs": preview, "preview_error": preview_error,
              "history": history, "history_error": history_error})
        return
    _print_entry(view, summary, fields)
    _print_runs(runs, preview_error, history, history_error)


def _print_entry(view: admin.EntryView, summary: dict, fields: dict) -> None:
    for label in ("name", "key", "task", "schedule", "enabled", "next_run", "last_run", "last_dispatched",
                  "total_run_count", "published", "given_up", "in_flight", "missed", "parked", "error"):
        if summary[label] is not None:
            click.echo(f"{label:>16}: {printable(summary[label])}")
    failure = summary["last_failure"]
    if failure is not None:
        click.secho(f"{'last_failure':>16}: {printable(failure['reason'])} (given up at {failure['at']})", fg="red")
    if view.kind != "hash":
        click.echo(f"{'score':>16}: {view.score:g}")
    for field_name, value in fields.items():
        shown = printable(value) if isinstance(value, str) else json.dumps(value, indent=2)
        click.echo(f"\n{printable(field_name)}:\n{shown}")


def _print_runs(runs: list[dict], preview_error: str | None, history: list[dict], history_error: str | None) -> None:
    """The next runs and the recent ones, or why either cannot be shown."""
    if runs:
        click.secho("\nnext runs:", bold=True)
        table([[f"{run['local']:%a %Y-%m-%d %H:%M:%S %Z}", f"{run['slot']:%Y-%m-%d %H:%M:%S} UTC",
                f"{run['fire_at']:%H:%M:%S.%f}"[:-3]] for run in runs],
              ["LOCAL TIME", "UTC", "DISPATCH AT (UTC)"])
    if preview_error:
        click.secho(f"\nnext runs: cannot be worked out: {printable(preview_error)}", fg="red")
    if history:
        click.secho("\nrecent runs:", bold=True)
        table([_history_row(record) for record in history], ["SCHEDULED", "DISPATCHED", "LATE", "OUTCOME", "TASK ID"])
    if history_error:
        click.secho(f"\nrecent runs: {printable(history_error)}", fg="red")


def _preview(view: admin.EntryView) -> tuple[list[dict], str | None]:
    """The entry's next runs, or why they cannot be worked out."""
    if view.entry is None:
        return [], None
    try:
        return view.entry.preview(5), None
    except Exception as exc:
        return [], str(exc) or type(exc).__name__


def _history_row(record: dict) -> list[str]:
    if list(record) == ["unreadable"]:
        return ["-", "-", "-", "unreadable", record["unreadable"]]
    late = record.get("lateness")
    return [_when(record.get("scheduled")), _when(record.get("dispatched")),
            f"{late:.3f}s" if isinstance(late, (int, float)) and not isinstance(late, bool) else _when(late),
            str(record.get("outcome", "")) + (f": {record['reason']}" if record.get("reason") else ""),
            str(record.get("task_id", ""))]


def _when(value: Any) -> str:
    """UNIX seconds as ISO 8601; anything else as it is."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < admin.END_OF_TIME:
        return datetime.fromtimestamp(value, UTC).isoformat()
    return str(value)


def _next_run_words(view: admin.EntryView, now: float) -> str:
    if view.score is None:
        return "-"
    if view.score == 0:
        return "now (score 0)"
    if view.next_run is None:
        return "never" if view.score < 0 else f"never (score {view.score:g})"
    return f"{relative(view.next_run, now)} ({view.next_run:%Y-%m-%d %H:%M:%S} UTC)"


def _runs_words(summary: dict) -> str:
    """The runs that reached the broker, and those given up if any."""
    if summary["published"] is None:
        return "-"
    given_up = f" ({summary['given_up']} given up)" if summary["given_up"] else ""
    return f"{summary['published']}{given_up}"


def _last_dispatch(view: admin.EntryView) -> datetime | None:
    """When beat last sent it: ``status``, else (data from celery-redbeat 2.x) ``last_run_at`` of a run."""
    summary_time = view.summary()["last_dispatched"]
    if summary_time:
        return datetime.fromisoformat(summary_time)
    if view.entry and view.entry.total_run_count and view.entry.last_run_at:
        return view.entry.last_run_at
    return None


def _json_or_text(raw: bytes) -> Any:
    """A field's JSON value; its text (exact, bytes that are not UTF-8 escaped) when
    it is no JSON or too deeply nested to print."""
    text = admin.key_text(raw)
    try:
        value = json.loads(text)
        json.dumps(value, indent=2)
    except (ValueError, RecursionError):
        return text
    return value


# -- changing -----------------------------------------------------------------------------

def parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc or 'nested too deeply'}") from None


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
@click.argument("name")
@pass_tool
def remove(tool: Tool, name: str) -> None:
    """Delete an entry and take it out of the schedule (malformed ones too)."""
    store = get_store(tool.app)
    key = RedBeatSchedulerEntry.generate_key(tool.app, name)
    if not store.known(key):
        raise click.ClickException(f"no entry named {name!r}")
    store.delete(key)
    click.echo(f"removed {printable(name)}")


@redbeat.command()
@click.argument("name")
@pass_tool
def pause(tool: Tool, name: str) -> None:
    """Stop an entry from running, keeping it and its place in the cadence."""
    _set_enabled(tool, name, False)


@redbeat.command()
@click.argument("name")
@pass_tool
def resume(tool: Tool, name: str) -> None:
    """Let a paused entry run again from its next regular slot."""
    _set_enabled(tool, name, True)


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
    definition = _json_or_text(raw)
    if not isinstance(definition, dict):
        raise click.ClickException(f"entry {name!r} has a definition that is not a JSON object")
    definition[field] = value
    entry = _checked_entry(tool, {**definition, "name": name})
    store.save(write_over(entry, stored, json.dumps(definition)))


@redbeat.command(name="run-now")
@click.argument("name")
@pass_tool
def run_now(tool: Tool, name: str) -> None:
    """Dispatch once at beat's next tick, leaving the regular schedule as it is."""
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


# -- export and import ----------------------------------------------------------------------

@redbeat.command(name="export")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default: stdout).")
@pass_tool
def export_command(tool: Tool, output: Any) -> None:
    """The whole schedule as JSON (for backups and moves); `import` reads it back exactly.

    Exact under a running beat too: each entry appears once, as it was at one moment."""
    output.write(json.dumps(admin.export_schedule(tool.app), indent=2, allow_nan=False) + "\n")


@redbeat.command(name="import")
@click.argument("source", type=click.File(), required=False)
@click.option("--beat-schedule", "beat_schedule", metavar="MODULE:NAME",
              help="Import a beat_schedule dict from Python, e.g. proj.celeryconfig:beat_schedule.")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes (default: only report them).")
@json_option
@pass_tool
def import_command(tool: Tool, source: Any, beat_schedule: str | None, apply_changes: bool, as_json: bool) -> None:
    """Import an export, or a JSON {name: spec} file. Dry run unless --apply."""
    if beat_schedule:
        module, _, attribute = beat_schedule.partition(":")
        specs = getattr(importlib.import_module(module), attribute or "beat_schedule")
        data = {name: json.loads(dumps(spec)) for name, spec in specs.items()}
    elif source is not None:
        data = parse_json(source.read(), "the import file")
    else:
        raise click.UsageError("give a file to import, or --beat-schedule MODULE:NAME")
    try:
        plan = admin.plan_import(tool.app, data)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    applied = apply_changes and not plan.invalid
    written = admin.apply_import(tool.app, plan) if applied else 0
    if as_json:
        emit({**plan.as_dict(), "applied": applied, "written": written})
    else:
        _print_import(plan, applied, written)
    if plan.invalid:
        sys.exit(1)


def _print_import(plan: admin.ImportPlan, applied: bool, written: int) -> None:
    for label in ("create", "update", "unchanged"):
        names = getattr(plan, label)
        listed = f"  ({', '.join(names[:10])}{' ...' if len(names) > 10 else ''})" if names else ""
        click.echo(printable(f"{label:>9}: {len(names)}{listed}"))
    for name, count in plan.duplicates.items():
        click.secho(printable(f"  duplicate: {name} is given {count} times; the last one given counts"),
                    fg="yellow")
    for name, reason in plan.invalid.items():
        click.secho(printable(f"  invalid: {name}: {reason}"), fg="red")
    for name, reason in plan.unrunnable.items():
        click.secho(printable(f"  warning: {name} is copied as it is, but beat will park it: {reason}"), fg="yellow")
    if plan.invalid:
        click.echo("nothing written: fix the invalid entries first")
    elif applied:
        click.echo(f"written: {written} entries")
    else:
        click.echo("dry run: nothing written (add --apply to write)")


# -- beat's health ----------------------------------------------------------------------------

@redbeat.command()
@click.option("--max-age", type=float, default=60.0, show_default=True,
              help="Exit 1 when beat last completed a tick longer ago than this many seconds.")
@timeout_option("Seconds to wait for Redis to connect and for each answer [default: the group's --timeout].")
@json_option
@click.pass_context
def status(ctx: click.Context, max_age: float, timeout: float | None, as_json: bool) -> None:
    """Who holds the lock, when beat last ticked, how late the schedule runs.

    A health check: exits 0 healthy, 1 when no beat completed a tick within
    --max-age seconds, its ticks are failing or the last one stopped, 3 when
    beat ticks but runs do not go out (degraded), 4 when Redis cannot be
    reached in --timeout seconds, 5 on a configuration error.
    """
    tool = ctx.find_object(Tool)
    assert tool is not None
    if timeout is not None:
        tool.timeout = timeout
    _build_store(ctx)
    report = admin.beat_status(tool.app)
    problems = _unhealthy(report, max_age)
    degraded = _degraded(report)
    report["healthy"], report["degraded"] = not problems, degraded
    if as_json:
        emit(report)
    else:
        _print_status(report)
        if problems:
            click.secho(printable(f"UNHEALTHY: {'; '.join(problems)}"), fg="red", bold=True)
        elif degraded:
            click.secho(printable(f"DEGRADED: {'; '.join(degraded)}"), fg="yellow", bold=True)
        else:
            click.secho("healthy", fg="green", bold=True)
    if problems or degraded:
        sys.exit(ExitCode.FAILED if problems else ExitCode.DEGRADED)


def _unhealthy(report: dict, max_age: float) -> list[str]:
    """Why no beat dispatches the schedule, if none does."""
    problems = []
    if report["stopped_at"]:
        problems.append("beat stopped")
    elif report["failing_since"]:
        # Failing now, however young its last completed tick: the next ones fail too, most likely.
        problems.append(f"ticks failing for {max(report['failing_for'], 0):.0f}s: {report['error']}")
    elif report["last_tick_age"] is None or report["last_tick_age"] > max_age:
        problems.append(f"no tick within {max_age:g}s")
    return problems + [w["explanation"] for w in report["wrong_types"] if w["stops_beat"]]


def _degraded(report: dict) -> list[str]:
    """Why runs do not go out while beat ticks: a broker that is down or slower than the
    schedule, most likely, which restarting beat would not mend."""
    reasons = []
    if report["claiming_paused"]:
        reasons.append(f"claiming paused: {report['claiming_paused']}")
    if report["stuck_in_flight"]:
        reasons.append(f"{report['stuck_in_flight']} runs in flight not published for over "
                       f"{admin.STUCK_AFTER:g}s")
    return reasons


def _print_status(report: dict) -> None:
    holder = report["lock_holder"]
    beat = report["beat"] or {}

    def count(name: str) -> str:
        return "?" if report[name] is None else str(report[name])
    lines = [
        ("lock", f"{report['lock_key']} held by {holder['host']} pid {holder['pid']}"
                 + (f" since {holder['since']}" if holder.get("since") else "")
         if holder else f"{report['lock_key'] or '(disabled)'}: free"),
        ("last tick", f"{report['last_tick']} ({report['last_tick_age']:.1f}s ago) by "
                      f"{beat.get('host')} pid {beat.get('pid')}, RedBeat {beat.get('version')}"
         + (f"; stopped at {report['stopped_at']}" if report["stopped_at"] else "")
         if report["last_tick"] else report["heartbeat_error"] or "never (no heartbeat: no beat is active)"),
        *([("failing", f"since {report['failing_since']}: {report['error']}")] if report["failing_since"] else []),
        ("entries", f"{count('entries')} total, {count('due')} due, {count('parked')} parked, "
                    f"{count('never_due')} never due, {count('in_flight')} in flight"),
        ("most overdue", f"{report['most_overdue_seconds']:.3f}s"),
        ("eviction", f"maxmemory-policy {report['eviction_policy']}"
                     + (" — Redis may delete schedule entries!" if report["eviction_warning"] else "")),
    ]
    for label, value in lines:
        click.echo(f"{label:>13}: {printable(value)}")
    if report["claiming_paused"]:
        # Not unhealthy: beat ticks, and restarting it would not make the broker take the runs.
        click.secho(f"{'claiming':>13}: " + printable(f"paused since {report['claiming_paused_since']}: "
                                                      f"{report['claiming_paused']}"), fg="yellow")
    for wrong in report["wrong_types"]:
        click.secho(f"{'wrong type':>13}: {printable(wrong['explanation'])}", fg="red")


@redbeat.command()
@click.option("--port", type=click.IntRange(0, 65535), default=9640, show_default=True,
              help="Port to serve on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs basic authentication.")
@click.option("--auth-envvar", default="REDBEAT_METRICS_AUTH", show_default=True, metavar="NAME",
              help="Environment variable holding the 'user:password' scrapers must send (else the "
                   "redbeat_metrics_auth setting); never given on the command line, where ps shows it.")
@click.option("--refresh", type=click.FloatRange(min=0), default=15.0, show_default=True, metavar="SECONDS",
              help="Read the schedule at most this often; scrapes in between get the last reading.")
@pass_tool
def metrics(tool: Tool, port: int, host: str, auth_envvar: str, refresh: float) -> None:
    """Serve the schedule-wide Prometheus metrics, read from Redis, until interrupted.

    Entries by state, what is due, runs in flight and given up, the lock and
    the last tick (docs/metrics.rst), at /metrics; no beat needs to run.
    """
    import os
    import signal
    import threading

    from .metricsserver import MISSING_EXTRA, MetricsEndpoint, serve
    try:
        from .schedulemetrics import registry_for
    except ImportError:
        raise BadConfiguration(MISSING_EXTRA) from None
    auth = os.environ.get(auth_envvar) or ensure_conf(tool.app).either_or("redbeat_metrics_auth", None) or None
    endpoint = MetricsEndpoint(port=port, host=host, auth=auth)
    try:
        server = serve(registry_for(tool.app, refresh), endpoint)
    except OSError as exc:
        raise click.ClickException(printable(f"cannot listen on {host} port {port}: {exc.strerror or exc}")) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(printable(f"serving the metrics of {display_url(ensure_conf(tool.app).redis_url)} at "
                         f"http://{endpoint.host}:{server.port}/metrics" + (" (basic authentication)" if auth else "")
                         + f", read at most every {refresh:g}s"))
    while not stop.wait(0.5):
        pass
    server.close()


@redbeat.command()
@pass_tool
def schema(tool: Tool) -> None:
    """The JSON Schema of `definition` and `meta`, for programs in other languages."""
    click.echo(resources.files("redbeat").joinpath("schema.json").read_text())


@redbeat.command()
@json_option
@pass_tool
def doctor(tool: Tool, as_json: bool) -> None:
    """Find orphans, malformed, parked, never-due and stale static entries, and explain each."""
    configured = set(tool.app.conf.beat_schedule or {}) or None
    if configured is not None:
        configured.add("celery.backend_cleanup")  # Celery's own entry, added by beat itself
    findings = admin.doctor(tool.app, configured)
    wrong = any(not finding.notice for finding in findings)
    if as_json:
        emit([finding.as_dict() for finding in findings])
    else:
        if not wrong:  # notices only: worth knowing, nothing wrong
            click.secho("nothing wrong found", fg="green")
        if findings:
            table([[f.kind, f.key, f.explanation] for f in findings], ["KIND", "KEY", "WHAT IT MEANS"])
    if wrong:
        sys.exit(1)


# -- moving to another prefix ------------------------------------------------------------------

@redbeat.command(name="move-prefix")
@click.option("--to", "to_prefix", required=True, help="The new key prefix; on Redis Cluster a hash-tagged one "
                                                       "such as '{redbeat}:'.")
@click.option("--from", "from_prefix", help="The prefix the schedule is under now (default: the configured one).")
@click.option("--apply", "apply_move", is_flag=True, help="Move (default: only report what would move).")
@click.option("--force", is_flag=True, help="Write over conflicting entries, and move while a beat holds the lock "
                                            "(taking it, which stops that beat dispatching) or ticks.")
@pass_tool
def move_prefix(tool: Tool, to_prefix: str, from_prefix: str | None, apply_move: bool, force: bool) -> None:
    """Move the schedule, key by key, to another key prefix (docs/configuration.rst, Redis Cluster)."""
    source = KeyNames(from_prefix if from_prefix is not None else _configured_prefix(tool.app))
    target = KeyNames(to_prefix)
    if not source.prefix or not target.prefix or source.prefix.startswith(target.prefix) \
            or target.prefix.startswith(source.prefix):
        raise click.ClickException(f"cannot move from {source.prefix!r} to {target.prefix!r}: each prefix must be "
                                   "non-empty and neither may start with the other")
    mover = _mover(tool, source, target)
    try:
        if apply_move:
            result = mover.apply(force)
            _print_move(result.plan, result)
        else:
            _print_move(mover.plan(force), None)
    except MoveError as exc:
        raise click.ClickException(printable(str(exc))) from None


def _configured_prefix(app: Celery) -> str:
    """``redbeat_key_prefix`` as set (lower case first, as RedBeatConfig reads it), which
    cannot be read through RedBeatConfig on a cluster: it refuses that prefix."""
    for name in ("redbeat_key_prefix", "REDBEAT_KEY_PREFIX"):
        if app.conf.get(name) is not None:
            return str(app.conf.get(name))
    return DEFAULT_KEY_PREFIX


def _mover(tool: Tool, source: KeyNames, target: KeyNames) -> PrefixMover:
    """The mover, on a client built from the app's settings with the new prefix;
    the source lock is the configured one when the source is the configured prefix."""
    app = tool.app
    configured = _configured_prefix(app)
    app.conf.redbeat_key_prefix = target.prefix
    try:
        conf = ensure_conf(app)
    except ConfigurationError:
        if HASH_TAG.search(target.prefix):
            raise
        raise click.ClickException(f"--to {target.prefix!r} has no hash tag, which Redis Cluster needs: "
                                   "use one such as '{redbeat}:'") from None
    tool.apply_timeout(conf)
    lock_setting = conf.either_or("redbeat_lock_key", None) if source.prefix == configured else None
    lock_key = source.lock(lock_setting) or source.default_lock
    return PrefixMover(build_client(conf, decode_responses=False), source, target, lock_key)


def _print_move(plan: MovePlan, result: MoveResult | None) -> None:
    click.echo(printable(f"from {plan.source.prefix!r} to {plan.target.prefix!r}"))
    table([[entry.action, entry.member, entry.target, repr(entry.score), "yes" if entry.static else "",
            entry.history, entry.reason] for entry in plan.entries],
          ["ACTION", "ENTRY", "TO", "SCORE", "STATIC", "HISTORY", "NOTE"])
    click.echo("   ".join(f"{action}: {plan.count(action)}" for action in MoveAction))
    for line in _move_notes(plan):
        click.echo(printable(line))
    if result is not None:
        click.echo(f"moved {result.moved} entries and {result.in_flight} runs in flight")
    click.echo(printable(f"then set redbeat_key_prefix = {plan.target.prefix!r} in the configuration "
                         "(and the ACL user's key pattern), and start beat"))
    if result is None:
        click.echo("dry run: nothing written (add --apply to move)")


def _move_notes(plan: MovePlan) -> list[str]:
    """What the move does besides entries: static names, runs in flight, the lock, the heartbeat."""
    notes = [f"statics: {len(plan.statics)} names to {plan.target.statics} for the entries moved",
             f"in flight: {len(plan.in_flight)} runs to {plan.target.inflight}, task ids kept"]
    if plan.lock_holder is not None:
        notes.append(f"lock: {plan.lock_key} is held by {plan.lock_holder}: stop that beat first "
                     "(or --force, which takes its lock)")
    else:
        notes.append(f"lock: {plan.lock_key} is free: the move holds it while it runs, so no beat starts")
    if plan.heartbeat_age is not None:
        notes.append(f"heartbeat: a beat ticked {plan.heartbeat_age:.0f}s ago: stop it first")
    else:
        notes.append(f"heartbeat: no beat ticking; {plan.source.heartbeat} is left to expire")
    return notes


@redbeat.command("rollback-to-2")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes (without it: a dry run).")
@click.option("--undo", is_flag=True, help="Put back what a rollback changed, before RedBeat runs the schedule.")
@json_option
@pass_tool
def rollback_to_2(tool: Tool, apply_changes: bool, undo: bool, as_json: bool) -> None:
    """Prepare the schedule for celery-redbeat 2.x (a dry run unless --apply), or --undo it.

    Entries 2.x cannot read get a 2.x-readable definition (RedBeat's kept
    aside in the entry's hash); entries 2.x cannot run at all are held out of
    the schedule. Stop 2.x's beat before --undo --apply.
    """
    if undo:
        rewritten, held = rollback.undo_plans(tool.app)
        missed = rollback.undo(tool.app, rewritten, held) if apply_changes else []
        rows = [[p.key, "restore" if p.restore else "keep", p.note] for p in rewritten]
        rows += [[key, "put back", "back in the schedule at its score"] for key in held]
    else:
        planned = rollback.plans(tool.app)
        missed = [p.key for p in rollback.apply(tool.app, planned)] if apply_changes else []
        rows = [[p.key, str(p.action), "; ".join(p.reasons)] for p in planned]
    if as_json:
        emit({"applied": apply_changes, "entries": [dict(zip(("key", "action", "why"), row)) for row in rows],
              "changed_meanwhile": missed})
        return
    if not rows:
        click.echo("nothing to do: " + ("no entry is rolled back" if undo else
                                          "celery-redbeat 2.x can read every entry in the schedule"))
        return
    table(rows, ["KEY", "ACTION", "WHY"])
    _print_rollback_summary(rows, missed, apply_changes, undo)


def _print_rollback_summary(rows: list[list[str]], missed: list[str], applied: bool, undo: bool) -> None:
    held = sum(1 for row in rows if row[1] == "hold")
    if held:
        click.echo(f"{held} held entries will not run under celery-redbeat 2.x; --undo puts them back.")
    if not undo and len(rows) > held:
        click.echo("Rewritten entries run under 2.x with plain semantics: the options dropped are named above "
                   "(a crontab without its timezone runs in the app's timezone).")
    for key in missed:
        click.echo(printable(f"{key}: changed meanwhile, left as it is: run the command again"), err=True)
    if not applied:
        click.echo("Dry run: nothing written. Add --apply to write these changes.")
    elif undo:
        click.echo("Undone: RedBeat's beat can run the schedule.")
    else:
        click.echo("Applied: celery-redbeat 2.x can run the schedule. Undo with: redbeat rollback-to-2 --undo --apply")


def main() -> None:
    redbeat(prog_name="redbeat")


__all__ = ["redbeat", "main"]


if __name__ == "__main__":
    main()
