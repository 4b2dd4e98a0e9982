"""Serving metrics over HTTP: Prometheus's text at ``/metrics`` and a liveness answer at
``/healthz``, for beat's own endpoint (``redbeat_metrics_port``) and the schedule-wide
``redbeat metrics`` command alike.

Secure by default: it listens on 127.0.0.1, and refuses any other address unless
HTTP basic authentication is configured; the credentials are never logged.
Needs the ``metrics`` extra (``prometheus-client``), imported only when serving.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery.utils.log import get_logger

from .config import ConfigurationError, RedBeatConfig
from .metrics import BeatMetrics

__all__ = ["MetricsEndpoint", "MetricsServer", "Liveness", "serve", "is_loopback", "endpoint_from_settings",
           "start_beat_metrics", "MISSING_EXTRA", "basic_auth_matches"]

logger = get_logger("celery.beat")

MISSING_EXTRA = ("metrics need the prometheus-client package: pip install 'celery-redbeat[metrics]'")

# Whether the process serving is alive, and why (one line): /healthz answers 200 or 503.
Liveness = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where metrics are served, and the ``user:password`` a scraper must send (None: no
    authentication, allowed on a loopback address only)."""

    port: int
    host: str = "127.0.0.1"
    auth: str | None = None

    def __post_init__(self) -> None:
        given: Any = self.auth  # settings hold anything
        if isinstance(given, bytes):  # read from a file opened in binary
            object.__setattr__(self, "auth", given.decode("utf-8", "replace").strip())
        if not isinstance(self.host, str) or not isinstance(self.auth, (str, type(None))):
            raise ConfigurationError("the metrics host and credentials must be text")
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ConfigurationError(f"the metrics port must be between 0 and 65535, not {self.port}")
        if self.auth is not None and ":" not in self.auth:
            raise ConfigurationError("the metrics credentials must read 'user:password'")
        if self.auth is None and not is_loopback(self.host):
            raise ConfigurationError(
                f"refusing to serve metrics on {self.host} without authentication: set redbeat_metrics_auth "
                f"(for redbeat metrics: REDBEAT_METRICS_AUTH) to 'user:password', or listen on 127.0.0.1")

    def __repr__(self) -> str:  # never the credentials
        return f"MetricsEndpoint(host={self.host!r}, port={self.port}, auth={'set' if self.auth else None})"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A connection must send its request within this many seconds, and at most this many
# are served at once: idle or piled-up connections cannot take threads from beat.
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 16


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every few seconds would fill beat's log."""

    timeout = REQUEST_TIMEOUT  # socketserver sets it on the connection before reading

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(WSGIServer):
    """One thread per request, so a slow scraper never holds up another; connections
    beyond ``MAX_CONNECTIONS`` at once are closed unanswered."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away, or sent nonsense: nothing for beat's log

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running metrics server: its address, and ``close`` to stop it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[:2]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(registry: Any, endpoint: MetricsEndpoint, liveness: Liveness | None = None) -> MetricsServer:
    """Serve ``registry`` (a prometheus-client ``CollectorRegistry``) in a daemon thread.
    Raises ``OSError`` if the address is taken, ``ImportError`` without the extra."""
    from prometheus_client import make_wsgi_app

    app = _guarded(endpoint.auth, _routes(make_wsgi_app(registry), liveness))
    server_class = _ThreadingWSGIServerV6 if ":" in endpoint.host else _ThreadingWSGIServer
    server = make_server(endpoint.host, endpoint.port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="redbeat-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


def _routes(metrics_app: Callable, liveness: Liveness | None) -> Callable:
    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz" and liveness is not None:
            alive, reason = liveness()
            return _text(start_response, "200 OK" if alive else "503 Service Unavailable", reason)
        if path == "/":
            return _text(start_response, "200 OK", "RedBeat metrics: /metrics"
                         + (", liveness: /healthz" if liveness is not None else ""))
        return _text(start_response, "404 Not Found", "not found: /metrics is the metrics")
    return app


def _guarded(auth: str | None, app: Callable) -> Callable:
    """``app`` behind HTTP basic authentication, if credentials are set."""
    if auth is None:
        return app
    expected = auth.encode()

    def guarded(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if not basic_auth_matches(environ.get("HTTP_AUTHORIZATION", ""), expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Basic realm="redbeat"')])
            return [b"authentication required\n"]
        return app(environ, start_response)
    return guarded


def basic_auth_matches(header: str, expected: bytes) -> bool:
    """Whether an ``Authorization`` header sends the basic credentials ``expected``
    (``user:password``); shared with the web dashboard."""
    scheme, _, credentials = header.strip().partition(" ")
    try:
        given = base64.b64decode(credentials.strip(), validate=True)
    except ValueError:
        given = b""
    # The scheme's case does not matter (RFC 7235); the credentials are compared in constant time.
    return scheme.lower() == "basic" and hmac.compare_digest(given, expected)


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode() + b"\n"]


def endpoint_from_settings(conf: RedBeatConfig) -> MetricsEndpoint | None:
    """Beat's metrics endpoint from the app's settings (a ``RedBeatConfig``): None while
    ``redbeat_metrics_port`` is unset (or 0: off, never a random port)."""
    port = conf.either_or("redbeat_metrics_port", None)
    if port in (None, "", 0, "0", False):
        return None
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ConfigurationError(f"redbeat_metrics_port must be a port number, not {port!r}") from None
    return MetricsEndpoint(port=number, host=conf.either_or("redbeat_metrics_host", None) or "127.0.0.1",
                           auth=conf.either_or("redbeat_metrics_auth", None) or None)


def start_beat_metrics(conf: RedBeatConfig, liveness: Liveness) -> BeatMetrics:
    """Beat's metrics, served on ``redbeat_metrics_port`` with ``liveness`` at ``/healthz``;
    a sink that counts nothing while the port is unset.

    Metrics that cannot be served (a bad setting, the extra not installed, the
    port taken) are logged as an error and beat runs on without them: the
    schedule matters more than its metrics, and the missing series show.
    """
    try:
        endpoint = endpoint_from_settings(conf)
    except ConfigurationError as exc:
        logger.error("beat: not serving metrics: %s", exc)
        return BeatMetrics()
    if endpoint is None:
        return BeatMetrics()
    try:
        from .beatmetrics import PrometheusBeatMetrics
        from .schedulemetrics import ScheduleCollector
    except ImportError:
        logger.error("beat: not serving metrics: redbeat_metrics_port is set, but %s", MISSING_EXTRA)
        return BeatMetrics()
    metrics = PrometheusBeatMetrics(entry_labels=bool(conf.either_or("redbeat_metrics_entry_labels", False)))
    # The schedule-wide view too, read in the scrape's thread at most every 15 s: its cost
    # on the tick is measured in docs/benchmarks.md (Metrics).
    metrics.registry.register(ScheduleCollector(conf.app))
    try:
        metrics.server = serve(metrics.registry, endpoint, liveness)
    except OSError as exc:
        logger.error("beat: not serving metrics: cannot listen on %s port %d: %s", endpoint.host, endpoint.port,
                     exc.strerror or exc)
        return BeatMetrics()
    logger.info("beat: serving metrics at http://%s:%d/metrics%s", endpoint.host, metrics.server.port,
                " (basic authentication)" if endpoint.auth else "")
    return metrics
