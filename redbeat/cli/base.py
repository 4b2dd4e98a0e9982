"""What every ``redbeat`` command shares: the group and its options, the tool a command
works with, exit codes, one-line errors, and printing."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import unicodedata
from collections.abc import Callable
from datetime import timezone
from enum import IntEnum
from typing import Any

import click
from celery import Celery
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

from .. import __version__, admin
from ..client import display_url, get_store
from ..config import ConfigurationError, RedBeatConfig, ensure_conf
from ..deadline import DeadlinePassed
from ..entry import RedBeatSchedulerEntry
from ..entrydetails import json_or_text as json_or_text  # the commands print fields with it
from ..printable import printable
from ..store import WrongTypeError
from ..timeformat import relative as relative  # the commands say "in 5m" with it

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
    """What every command needs: the app, how to print, the Redis timeout given on the command
    line, and whether the app's tasks are known (run as ``celery -A proj redbeat``: the user's
    app, ``task_app``, names them, so a task name or arguments it refuses can be refused at once)."""

    def __init__(self, app: Celery, as_json: bool = False, timeout: float | None = None,
                 task_app: Celery | None = None) -> None:
        self.app = app
        self.as_json = as_json
        self.timeout = timeout
        self.task_app = task_app
        self._tasks_known: bool | None = None

    @property
    def tasks_known(self) -> bool:
        """Whether ``app``'s registry holds the user's tasks: read the first time a command
        needs it (the commands that write), as it imports the user's task modules."""
        if self._tasks_known is None:
            self._tasks_known = self.task_app is not None and _import_tasks(self.task_app, self.app)
        return self._tasks_known

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


def _import_tasks(task_app: Celery, app: Celery) -> bool:
    """Import ``task_app``'s task modules as a worker does (its ``include`` and ``imports``,
    and Django's ``autodiscover_tasks`` through the import_modules signal), and give ``app``
    its tasks; whether that worked. A module that raises is said in one line on stderr,
    and then no task name can be checked."""
    try:
        task_app.loader.import_default_modules()
    except Exception as exc:  # the user's own modules: anything may go wrong in them
        click.echo(printable(f"warning: the app's task modules cannot be imported ({type(exc).__name__}: {exc}): "
                             "task names and arguments are not checked"), err=True)
        return False
    if app is not task_app:
        app.tasks.update(task_app.tasks)
    return True


pass_tool = click.make_pass_decorator(Tool)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")


ASKS_HELP = "redbeat.asks_help"  # ctx.meta: the command line asks a command's --help
DEFAULT_SERVER_NOTICE = "redbeat.default_server"  # ctx.meta: said once the command's arguments are read


class RedBeatCommand(click.Command):
    """A command of the group: says which Redis it uses when told none once its own arguments
    are read, so that a usage error of click's is not preceded by it."""

    def invoke(self, ctx: click.Context) -> Any:
        notice = ctx.meta.pop(DEFAULT_SERVER_NOTICE, None)
        if notice:
            click.echo(notice, err=True)
        return super().invoke(ctx)


class RedBeatGroup(click.Group):
    """Failures any command can meet, each said in one line with its exit code,
    never as a traceback: Redis out of reach or refusing, a bad URL or setting,
    and one of RedBeat's own keys holding another type (named, with the fix)."""

    command_class = RedBeatCommand

    def invoke(self, ctx: click.Context) -> Any:
        # Seen here, before click parses the command's own arguments: a command's --help reads no Redis.
        ctx.meta[ASKS_HELP] = "--help" in ctx.args
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise BadConfiguration(printable(str(exc))) from None
        except DeadlinePassed as exc:
            raise RedisUnusable(printable(f"cannot reach Redis at {_where(ctx)}: no answer within {exc.seconds:g}s "
                                          "(the whole check is bounded by the timeout)")) from None
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


def timeout_option(help_text: str, envvar: str | None = None) -> Callable:
    return click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help=help_text,
                        envvar=envvar, show_envvar=envvar is not None)


# Where the standalone ``redbeat`` looks for the schedule when told nowhere.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@click.group(name="redbeat", cls=RedBeatGroup)
@click.option("--redis-url", envvar="REDBEAT_REDIS_URL", show_envvar=True,
              help=f"Redis URL of the schedule (standalone use) [default: {DEFAULT_REDIS_URL}, said on stderr].")
@click.option("--prefix", envvar="REDBEAT_KEY_PREFIX", show_envvar=True, help="Key prefix (default redbeat:).")
@timeout_option("Seconds to wait for Redis to connect and for each answer, without retries [default: the "
                "redbeat_command_timeout setting, else 2].", envvar="REDBEAT_TIMEOUT")
@click.version_option(__version__, prog_name="redbeat")
@click.pass_context
def redbeat(ctx: click.Context, redis_url: str | None, prefix: str | None, timeout: float | None) -> None:
    """Inspect and manage the RedBeat schedule."""
    app = getattr(ctx.obj, "app", None)  # set when run as `celery -A proj redbeat`
    task_app = app
    if app is None or redis_url:
        # The user's app, if any, still names the tasks; only the schedule's Redis is another.
        user_app, app = app, Celery("redbeat-cli", set_as_current=False)
        if not redis_url and user_app is None and _needs_redis(ctx):
            # Said, not silent: a schedule looked for on the wrong server looks empty.
            ctx.meta[DEFAULT_SERVER_NOTICE] = f"redbeat: no --redis-url or REDBEAT_REDIS_URL: using {DEFAULT_REDIS_URL}"
        app.conf.redbeat_redis_url = redis_url or DEFAULT_REDIS_URL
        if user_app is not None:
            app.conf.timezone = user_app.conf.timezone  # what --at without an offset is taken in
    if prefix:
        app.conf.redbeat_key_prefix = prefix
    ctx.obj = Tool(app, timeout=timeout, task_app=task_app)
    # move-prefix reads the configured prefix as its source, which Redis
    # Cluster refuses to run beat with: it builds its own client. status and
    # liveness take a --timeout of their own, which their client must be built with.
    if ctx.invoked_subcommand not in ("schema", "move-prefix", "status", "liveness"):
        build_store(ctx)


def _needs_redis(ctx: click.Context) -> bool:
    """Whether the command about to run reads Redis: not ``schema``, nor any command's ``--help``."""
    return ctx.invoked_subcommand not in (None, "schema") and not ctx.meta.get(ASKS_HELP)


def build_store(ctx: click.Context) -> None:
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


def table(rows: list[list[Any]], header: list[str], wide: bool = False, keep: tuple[str, ...] = ()) -> None:
    """Aligned columns, each cell through ``printable``; the header in bold when the terminal shows colour.

    Cut to the output's width (``output_width``) unless ``wide``: the longest columns are
    narrowed first, those named in ``keep`` only if the others cannot make room enough,
    and a cell cut ends with an ellipsis, so each row stays one line."""
    cells = [[printable(cell) for cell in row] for row in [header, *rows]]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(header))]
    limit = None if wide else output_width()
    if limit is not None:
        room = limit - 2 * (len(widths) - 1)
        kept = [name in keep for name in header]
        cut = iter(fitted([w for w, k in zip(widths, kept) if not k], room - sum(w for w, k in zip(widths, kept) if k)))
        widths = fitted([width if k else next(cut) for width, k in zip(widths, kept)], room)

    def line(row: list[str]) -> str:
        return "  ".join(_padded(_cut(cell, width), width) for cell, width in zip(row, widths)).rstrip()
    click.secho(line(cells[0]), bold=True)
    for row in cells[1:]:
        click.echo(line(row))


# No column is narrowed below this many characters, however narrow the terminal.
MIN_COLUMN = 6


def output_width() -> int | None:
    """How wide the tables may be: ``COLUMNS`` if set, else the terminal's width;
    None (no limit) when stdout is no terminal, so that pipes and scripts get everything."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def fitted(widths: list[int], room: int) -> list[int]:
    """``widths`` narrowed to add up to ``room`` at most: the widest columns are cut to one
    width, as large as fits (never under ``MIN_COLUMN``), the narrower ones kept."""
    if sum(widths) <= room:
        return widths
    cap = max(widths)
    while cap > MIN_COLUMN and sum(min(width, cap) for width in widths) > room:
        cap -= 1
    return [min(width, cap) for width in widths]


def display_width(text: str) -> int:
    """How many columns ``text`` takes on a terminal: wide and fullwidth characters
    (CJK ideographs, kana, fullwidth forms) take two."""
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _cut(cell: str, width: int) -> str:
    """``cell`` cut to ``width`` columns on screen, ending with an ellipsis when cut."""
    if display_width(cell) <= width:
        return cell
    kept, used = [], 1  # the ellipsis takes one column
    for char in cell:
        used += _char_width(char)
        if used > width:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _padded(cell: str, width: int) -> str:
    """``cell`` padded with spaces to ``width`` columns on screen."""
    return cell + " " * (width - display_width(cell))


def parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc or 'nested too deeply'}") from None


def main() -> None:
    redbeat(prog_name="redbeat")
