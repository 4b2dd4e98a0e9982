"""Each of RedBeat's runs executed once (docs/reliability.rst, "Exactly once per
slot"): a claim made right before a task's body, in the process that executes it.

Celery's ``task_prerun`` signal cannot stop a task (``Signal.send`` catches what
its receivers raise), so the claim wraps each registered task's ``run``.
Celery's tracer calls ``task.run`` (or the task itself, whose ``__call__``
calls ``run``) once the run's request is pushed; when the claim says the run
already started, the wrapper raises ``DuplicateRun``, an ``Ignore``: the
message is acknowledged, no result is stored, nothing is retried, and the
body never runs.

A tracer takes ``run`` when it is built (``celery.app.trace.build_tracer``):
a worker's main process builds them as its consumer starts, after
``worker_init``, where ``worker.py`` wraps the tasks; forked pool children
inherit them wrapped; a child that imports the app afresh (spawn) builds
them before ``worker_process_init``, where they are wrapped and built again.
That rebuild calls ``celery.app.trace.build_tracer`` as it is then, not as it was
when this module was imported: instrumentation set up later (sentry-sdk's Celery
integration replaces it at ``sentry_sdk.init``) wraps the tracers it builds, and a
tracer built by the original would run the task without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from celery import Celery
from celery.app import trace
from celery.exceptions import Ignore

__all__ = ["DuplicateRun", "Claim", "claiming", "claim_before_running"]

# Whether to execute the run the task's current request is of (True for a task
# that did not come from RedBeat).
Claim = Callable[[Any], bool]
# The attribute that marks a run wrapped by ``claiming``.
CLAIMS = "redbeat_claims"
# Whether a claimed body runs in this context (thread, greenlet). A task called as a
# function inside a run (itself, recursively: Celery hands it the run's request, headers
# and all) is part of that run: claiming it would find the run's own start.
_IN_RUN: ContextVar[bool] = ContextVar("redbeat_in_run", default=False)


class DuplicateRun(Ignore):
    """A delivery of a run that already started: not executed (Celery acknowledges it
    and records it as ignored, without a result)."""


def claiming(task: Any, run: Callable[..., Any], claim: Claim) -> Callable[..., Any]:
    """``run`` (the task's body), executed only when ``claim(task)`` grants it."""
    @functools.wraps(run)
    def claimed_run(*args: Any, **kwargs: Any) -> Any:
        if _IN_RUN.get():  # called as a function inside a run: part of it, no delivery of its own
            return run(*args, **kwargs)
        if not claim(task):
            raise DuplicateRun()
        entered = _IN_RUN.set(True)
        try:
            return run(*args, **kwargs)
        finally:
            _IN_RUN.reset(entered)
    setattr(claimed_run, CLAIMS, True)
    return claimed_run


def claim_before_running(app: Celery, claim: Claim, hostname: str | None = None) -> list[str]:
    """Wrap the body of each task of ``app`` not wrapped yet, and build again the
    tracers already built (for ``hostname``, the worker's); the names wrapped."""
    wrapped = []
    for name, task in list(app.tasks.items()):
        if getattr(task.run, CLAIMS, False):
            continue
        task.run = claiming(task, task.run, claim)
        if task.__trace__ is not None:
            task.__trace__ = trace.build_tracer(name, task, app.loader, hostname, app=app)
        wrapped.append(name)
    return wrapped
