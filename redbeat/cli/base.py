"""What every ``redbeat`` command shares: the group and its options, the tool a command
works with, exit codes, one-line errors, and printing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
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
from ..entry import RedBeatSchedulerEntry
from ..printable import printable
from ..store import WrongTypeError

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
    line, and whether the app's tasks are known (run as ``celery -A proj redbeat``: the app's
    registry is loaded, so a task name or arguments it refuses can be refused at once)."""

    def __init__(self, app: Celery, as_json: bool = False, timeout: float | None = None,
                 tasks_known: bool = False) -> None:
        self.app = app
        self.as_json = as_json
        self.timeout = timeout
        self.tasks_known = tasks_known

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
    tasks_known = app is not None
    if app is None or redis_url:
        # The user's app, if any, still names the tasks; only the schedule's Redis is another.
        user_app, app = app, Celery("redbeat-cli", set_as_current=False)
        app.conf.redbeat_redis_url = redis_url or "redis://localhost:6379/0"
        if user_app is not None:
            app.tasks.update(user_app.tasks)
    if prefix:
        app.conf.redbeat_key_prefix = prefix
    ctx.obj = Tool(app, timeout=timeout, tasks_known=tasks_known)
    # move-prefix reads the configured prefix as its source, which Redis
    # Cluster refuses to run beat with: it builds its own client. status and
    # liveness take a --timeout of their own, which their client must be built with.
    if ctx.invoked_subcommand not in ("schema", "move-prefix", "status", "liveness"):
        build_store(ctx)


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



def json_or_text(raw: bytes) -> Any:
    """A field's JSON value; its text (exact, bytes that are not UTF-8 escaped) when
    it is no JSON or too deeply nested to print."""
    text = admin.key_text(raw)
    try:
        value = json.loads(text)
        json.dumps(value, indent=2)
    except (ValueError, RecursionError):
        return text
    return value


def parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc or 'nested too deeply'}") from None


def main() -> None:
    redbeat(prog_name="redbeat")
