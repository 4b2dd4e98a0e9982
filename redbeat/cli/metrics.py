"""Serving the schedule-wide metrics: ``metrics`` (docs/metrics.rst)."""

from __future__ import annotations

import os
import signal
import threading

import click

from ..client import display_url
from ..config import ensure_conf
from ..metricsserver import MISSING_EXTRA, MetricsEndpoint, serve
from ..printable import printable
from .base import BadConfiguration, Tool, pass_tool, redbeat


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
    try:
        from ..schedulemetrics import registry_for
    except ImportError:
        raise BadConfiguration(MISSING_EXTRA) from None
    auth = os.environ.get(auth_envvar) or ensure_conf(tool.app).either_or("redbeat_metrics_auth", None) or None
    endpoint = MetricsEndpoint(port=port, host=host, auth=auth)
    # Handlers before the socket listens: whoever sees the port open may signal at once.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = serve(registry_for(tool.app, refresh), endpoint)
    except OSError as exc:
        raise click.ClickException(printable(f"cannot listen on {host} port {port}: {exc.strerror or exc}")) from None
    click.echo(printable(f"serving the metrics of {display_url(ensure_conf(tool.app).redis_url)} at "
                         f"http://{endpoint.host}:{server.port}/metrics" + (" (basic authentication)" if auth else "")
                         + f", read at most every {refresh:g}s"))
    while not stop.wait(0.5):
        pass
    server.close()
