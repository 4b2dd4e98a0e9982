"""Serving the web dashboard: ``web`` (docs/web.rst)."""

from __future__ import annotations

import os
import signal

import click

from ..client import display_url
from ..config import ConfigurationError, ensure_conf
from ..metricsserver import is_loopback
from ..printable import printable
from .base import BadConfiguration, Tool, pass_tool, redbeat

MISSING_EXTRA = "the dashboard needs the web extra: pip install 'celery-redbeat[web]'"
DEFAULT_PORT = 9641


def _credentials(auth_envvar: str, host: str) -> str | None:
    """The ``user:password`` of the environment variable; refused on any but a loopback address without it."""
    auth = os.environ.get(auth_envvar) or None
    if auth is not None and ":" not in auth:
        raise ConfigurationError(f"{auth_envvar} must read 'user:password'")
    if auth is None and not is_loopback(host):
        raise ConfigurationError(f"refusing to serve the dashboard on {host} without authentication: set "
                                 f"{auth_envvar} to 'user:password', or listen on 127.0.0.1")
    return auth


@redbeat.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs basic authentication.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to serve on (0: any free port).")
@click.option("--auth-envvar", default="REDBEAT_WEB_AUTH", show_default=True, metavar="NAME",
              help="Environment variable holding the 'user:password' browsers must send; never given on the "
                   "command line, where ps shows it.")
@click.option("--read-only", is_flag=True, help="Show the schedule, change nothing: no action route exists.")
@pass_tool
def web(tool: Tool, host: str, port: int, auth_envvar: str, read_only: bool) -> None:
    """Serve the web dashboard of the schedule until interrupted.

    The overview, the schedule, each entry, and (unless --read-only) pause,
    resume, run now, remove, add and edit, checked as the commands check them.
    """
    try:
        from ..web import create_app
        from ..web.serving import DashboardServer, listening
    except ImportError:
        raise BadConfiguration(MISSING_EXTRA) from None
    auth = _credentials(auth_envvar, host)
    # On loopback without a password, the Host header must name this machine: a page of another
    # site whose name was pointed at 127.0.0.1 (DNS rebinding) is refused.
    hosts = tuple({host.strip("[]").lower(), "127.0.0.1", "localhost", "::1"}) if is_loopback(host) else None
    app = create_app(tool.app, read_only=read_only, auth=auth, allowed_hosts=hosts,
                     require_known_tasks=not read_only and tool.tasks_known)
    server = DashboardServer(app)
    # Handlers before the socket listens: whoever sees the port open may signal at once.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    try:
        sock = listening(host, port)
    except OSError as exc:
        raise click.ClickException(printable(f"cannot listen on {host} port {port}: {exc.strerror or exc}")) from None
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(printable(f"serving the dashboard of {display_url(ensure_conf(tool.app).redis_url)} at "
                         f"http://{shown_host}:{sock.getsockname()[1]}/" + (" (basic authentication)" if auth else "")
                         + (", read-only" if read_only else "")))
    server.run(sockets=[sock])
    sock.close()

