"""Run outcomes from the workers (docs/outcomes.rst): opt-in, with one line of the
worker's configuration::

    imports = ["redbeat.worker"]          # CELERY_IMPORTS in Django's settings

or ``redbeat.worker.install(app)`` in code. Importing this module connects
Celery's task signals; for each run that came from RedBeat (its message carries
the ``redbeat_key`` header beat adds) the worker records when it started and how
it ended in ``<prefix>:worker-events:<name>`` (``workerevents.WorkerEvents``):
one Redis round trip per event. A task without the header costs one attribute
read per signal.

Recording never fails a task nor holds it up for long: after a Redis error,
events are dropped for ``PAUSE_AFTER_ERROR`` seconds, and a warning says how
many, at most once every ``WARN_EVERY`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, signals, states
from celery.utils.log import get_logger

from .client import get_store
from .config import display_url, ensure_conf, without_urls
from .printable import printable
from .records import RunEvent, RunEventKind, unix_seconds

__all__ = ["install", "EventRecorder", "RECORDER", "PAUSE_AFTER_ERROR", "WARN_EVERY"]

logger = get_logger(__name__)

PAUSE_AFTER_ERROR = 10.0
WARN_EVERY = 60.0
# Starts remembered for the durations, at most: a start whose end never comes (a
# task killed by its hard time limit) must not make the worker grow forever.
MAX_STARTS_REMEMBERED = 10_000

# Celery's state at the end of a task, and the event that records it.
ENDED_IN = {states.SUCCESS: RunEventKind.SUCCEEDED, states.FAILURE: RunEventKind.FAILED,
            states.RETRY: RunEventKind.RETRIED, states.IGNORED: RunEventKind.IGNORED,
            states.REJECTED: RunEventKind.REJECTED}


def _redbeat_key(request: Any) -> str | None:
    """The entry key of the run ``request`` (a task's Context) executes; None for a task
    that did not come from RedBeat. Celery 5 puts a message's own headers on the request
    as attributes."""
    key = getattr(request, "redbeat_key", None)
    return key if isinstance(key, str) else None


def _exception_name(retval: Any) -> str | None:
    """The type name of what a failed or retried task raised (a Retry's own cause)."""
    if isinstance(retval, BaseException):
        cause = getattr(retval, "exc", None)  # celery.exceptions.Retry keeps what caused it
        return type(cause if isinstance(cause, BaseException) else retval).__name__
    return None


class EventRecorder:
    """Records the events of RedBeat's runs in a worker process."""

    def __init__(self, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.starts: dict[str, float] = {}  # task id -> when it started (monotonic), for its duration
        self.paused_until = 0.0
        self.last_warning: float | None = None
        self.dropped = 0

    def started(self, task: Any, task_id: str) -> None:
        key = _redbeat_key(task.request)
        if key is None:
            return
        if len(self.starts) >= MAX_STARTS_REMEMBERED:
            self.starts.clear()
        self.starts[task_id] = self.monotonic()
        self.record(task.app, key, self.event(task.request, task_id, RunEventKind.STARTED))

    def finished(self, task: Any, task_id: str, state: str | None, retval: Any) -> None:
        key = _redbeat_key(task.request)
        if key is None:
            return
        began = self.starts.pop(task_id, None)
        kind = ENDED_IN.get(state or "")
        event = self.event(task.request, task_id, kind or RunEventKind.FAILED,
                           exception=_exception_name(retval) if kind != RunEventKind.SUCCEEDED else None,
                           duration=None if began is None else round(self.monotonic() - began, 6))
        self.record(task.app, key, event)

    def revoked(self, task: Any, request: Any) -> None:
        key = _redbeat_key(request)
        task_id = getattr(request, "id", None)
        if key is None or not isinstance(task_id, str):
            return
        began = self.starts.pop(task_id, None)
        self.record(task.app, key, self.event(
            request, task_id, RunEventKind.REVOKED,
            duration=None if began is None else round(self.monotonic() - began, 6)))

    def event(self, request: Any, task_id: str, kind: RunEventKind, exception: str | None = None,
              duration: float | None = None) -> RunEvent:
        hostname, retries = getattr(request, "hostname", None), getattr(request, "retries", 0)
        return RunEvent(task_id, kind.value, round(self.clock(), 6), hostname if isinstance(hostname, str) else "",
                        os.getpid(), unix_seconds(getattr(request, "redbeat_scheduled", None)), exception, duration,
                        retries if isinstance(retries, int) and retries > 0 else 0)

    def record(self, app: Celery, key: str, event: RunEvent) -> None:
        """Write ``event``; a failure is counted and warned about, never raised."""
        now = self.monotonic()
        if now < self.paused_until:
            self.dropped += 1
            return
        try:
            get_store(app).record_worker_event(key, event)
        except Exception as exc:  # whatever it is, the task must not fail for it
            self.paused_until = now + PAUSE_AFTER_ERROR
            self.dropped += 1
            if self.last_warning is None or now - self.last_warning >= WARN_EVERY:
                self.last_warning = now
                logger.warning("redbeat.worker: cannot record run events in Redis at %s: %s: %s; %d event(s) "
                               "not recorded (none are tried for %gs after an error)",
                               _where(app), type(exc).__name__, printable(without_urls(str(exc))), self.dropped,
                               PAUSE_AFTER_ERROR)
                self.dropped = 0


def _where(app: Celery) -> str:
    try:
        return display_url(ensure_conf(app).redis_url)
    except Exception as exc:  # a configuration error is what the warning is about
        return f"(no usable configuration: {printable(without_urls(str(exc)))})"


RECORDER = EventRecorder()


def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is not None and task_id is not None:
        RECORDER.started(task, task_id)


def _on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None, state: str | None = None,
                retval: Any = None, **_: Any) -> None:
    if task is not None and task_id is not None:
        RECORDER.finished(task, task_id, state, retval)


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    if sender is not None and request is not None:
        RECORDER.revoked(sender, request)


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None:
        logger.info("redbeat.worker: recording the runs of RedBeat's entries in %s", _where(app))


def install(app: Celery | None = None) -> None:
    """Record the runs of RedBeat's entries in this process (what importing this module
    does; connecting twice is connecting once). With ``app``, its RedBeat configuration
    is read now, so that a wrong one fails here rather than warn at the first run."""
    if app is not None:
        ensure_conf(app)
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="redbeat.worker.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="redbeat.worker.postrun")
    signals.task_revoked.connect(_on_revoked, weak=False, dispatch_uid="redbeat.worker.revoked")
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="redbeat.worker.ready")


install()
