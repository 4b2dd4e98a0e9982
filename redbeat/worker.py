"""Run outcomes from the workers (docs/outcomes.rst): opt-in, with one line of the
worker's configuration::

    imports = ["redbeat.worker"]          # CELERY_IMPORTS in Django's settings

or ``redbeat.worker.install(app)`` in code. Importing this module connects
Celery's signals; for each run that came from RedBeat (its message carries the
``redbeat_key`` header beat adds) the worker claims its start right before the
task's body (``runonce``: a delivery of a run that already started is not
executed), and records how it ended, with the schedule-wide counts, in
``<prefix>:worker-events:<name>`` (``workerevents.WorkerEvents``): one Redis
round trip each. A task without the header costs a function call and one
attribute read.

Recording never fails a task nor holds it up for long: after a Redis error,
events are dropped for ``PAUSE_AFTER_ERROR`` seconds, and a warning says how
many, at most once every ``WARN_EVERY`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, current_app, signals, states
from celery.utils.log import get_logger

from .client import get_store
from .config import display_url, ensure_conf, without_urls
from .printable import printable
from .records import RunEvent, RunEventKind, unix_seconds
from .runonce import DuplicateRun, claim_before_running
from .store import ScheduleStore
from .storepart import WrongTypeError
from .timeformat import iso

__all__ = ["install", "EventRecorder", "RECORDER", "PAUSE_AFTER_ERROR", "WARN_EVERY"]

logger = get_logger(__name__)

PAUSE_AFTER_ERROR = 10.0
WARN_EVERY = 60.0
# Starts remembered for the durations, at most: a start whose end never comes (a
# task killed by its hard time limit) must not make the worker grow forever.
MAX_STARTS_REMEMBERED = 10_000

Written = TypeVar("Written")

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
    """Records the events of RedBeat's runs in a worker process, and claims their starts."""

    def __init__(self, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.starts: dict[str, float] = {}  # task id -> when it started (monotonic), for its duration
        self.paused_until = 0.0
        self.last_warning: float | None = None
        self.dropped = 0

    def claim(self, task: Any) -> bool:
        """Whether to execute the run ``task.request`` is of (``runonce``): False for a
        delivery of a run that already started. A task without RedBeat's headers, or a
        claim that cannot be made (Redis fails), executes: a run missed for want of
        Redis would be worse than one executed twice."""
        request = task.request
        key = _redbeat_key(request)
        task_id = getattr(request, "id", None)
        if key is None or not isinstance(task_id, str):
            return True
        began = self.monotonic()
        started = self.event(request, task_id, RunEventKind.STARTED)
        claim = self.write(task.app, lambda store: store.claim_run(key, started))
        if claim is not None and not claim.granted:
            _log_duplicate(task, task_id, claim.earlier)
            return False
        if len(self.starts) >= MAX_STARTS_REMEMBERED:
            self.starts.clear()
        self.starts[task_id] = began
        return True

    def finished(self, task: Any, task_id: str, state: str | None, retval: Any) -> None:
        key = _redbeat_key(task.request)
        if key is None or isinstance(retval, DuplicateRun):  # a duplicate did not run: nothing ended
            return
        kind = ENDED_IN.get(state or "")
        self.ended(task.app, key, task.request, task_id, kind or RunEventKind.FAILED,
                   exception=_exception_name(retval) if kind != RunEventKind.SUCCEEDED else None)

    def revoked(self, task: Any, request: Any) -> None:
        key = _redbeat_key(request)
        task_id = getattr(request, "id", None)
        if key is not None and isinstance(task_id, str):
            self.ended(task.app, key, request, task_id, RunEventKind.REVOKED)

    def ended(self, app: Celery, key: str, request: Any, task_id: str, kind: RunEventKind,
              exception: str | None = None) -> None:
        """Record how the run ended, with its duration when this process saw it start."""
        began = self.starts.pop(task_id, None)
        event = self.event(request, task_id, kind, exception=exception,
                           duration=None if began is None else round(self.monotonic() - began, 6))
        self.write(app, lambda store: store.record_run_end(key, event))

    def event(self, request: Any, task_id: str, kind: RunEventKind, exception: str | None = None,
              duration: float | None = None) -> RunEvent:
        hostname, retries = getattr(request, "hostname", None), getattr(request, "retries", 0)
        return RunEvent(task_id, kind.value, round(self.clock(), 6), hostname if isinstance(hostname, str) else "",
                        os.getpid(), unix_seconds(getattr(request, "redbeat_scheduled", None)), exception, duration,
                        retries if isinstance(retries, int) and retries > 0 else 0)

    def write(self, app: Celery, write: Callable[[ScheduleStore], Written]) -> Written | None:
        """``write`` to the app's store; None if it failed (counted and warned about,
        never raised) or was not tried (for a while after a failure)."""
        now = self.monotonic()
        if now < self.paused_until:
            self.dropped += 1
            return None
        try:
            return write(get_store(app))
        except WrongTypeError as exc:
            # One entry's key holds someone else's value: Redis answers, and the
            # claims of every other run must go on (no pause).
            self._warn(app, exc, now, "")
            return None
        except Exception as exc:  # whatever it is, the task must not fail for it
            self.paused_until = now + PAUSE_AFTER_ERROR
            self._warn(app, exc, now, f" (none are tried for {PAUSE_AFTER_ERROR:g}s after an error)")
            return None

    def _warn(self, app: Celery, exc: Exception, now: float, pause: str) -> None:
        """Count an event not recorded, and say so at most once every ``WARN_EVERY`` seconds."""
        self.dropped += 1
        if self.last_warning is None or now - self.last_warning >= WARN_EVERY:
            self.last_warning = now
            logger.warning("redbeat.worker: cannot record run events in Redis at %s: %s: %s; %d event(s) "
                           "not recorded%s", _where(app), type(exc).__name__, printable(without_urls(str(exc))),
                           self.dropped, pause)
            self.dropped = 0


def _log_duplicate(task: Any, task_id: str, earlier: RunEvent | None) -> None:
    where = "" if earlier is None else f" at {iso(earlier.at)} on {printable(earlier.worker) or 'a worker'}"
    logger.info("redbeat.worker: %s[%s] not executed: this run already started%s (a duplicate delivery)",
                printable(getattr(task, "name", "")), printable(task_id), where)


def _where(app: Celery) -> str:
    try:
        return display_url(ensure_conf(app).redis_url)
    except Exception as exc:  # a configuration error is what the warning is about
        return f"(no usable configuration: {printable(without_urls(str(exc)))})"


RECORDER = EventRecorder()


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None:
        claim_before_running(app, RECORDER.claim, getattr(sender, "hostname", None))


def _on_worker_process_init(sender: Any = None, **_: Any) -> None:
    # A forked child inherits the tasks wrapped: this wraps only in a child
    # that imported the app afresh, and rebuilds the tracers it built.
    claim_before_running(current_app._get_current_object(), RECORDER.claim,
                         sender if isinstance(sender, str) else None)


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
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="redbeat.worker.init")
    signals.worker_process_init.connect(_on_worker_process_init, weak=False, dispatch_uid="redbeat.worker.process")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="redbeat.worker.postrun")
    signals.task_revoked.connect(_on_revoked, weak=False, dispatch_uid="redbeat.worker.revoked")
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="redbeat.worker.ready")


install()
