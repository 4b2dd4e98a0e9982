"""RedBeat's worker component (redbeat/worker.py, redbeat/runonce.py) in a real worker under
sentry-sdk's Celery integration, which wraps Celery's ``build_tracer``, the tasks' bodies and
``apply_async``: a run delivered twice executes once with its end recorded, the duplicate (an
``Ignore``) never reaches Sentry as an error, and a failing run is both recorded as failed and
reported to Sentry (here a local HTTP server that keeps the envelopes posted), whatever the
pool and whichever of sentry_sdk.init and the app with redbeat.worker comes first."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery.app import trace
from conftest import Processes, make_app, wait_for
from test_run_once import (  # noqa: F401 (workers: the fixture)
    broker_empty,
    deliver,
    events,
    executions,
    outcomes,
    start_worker,
    workers,
)
from test_sentry import Envelopes, envelopes  # noqa: F401 (envelopes: the fixture)

from redbeat.runonce import claim_before_running

SENTRY_SETUP = textwrap.dedent('''
    import os

    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration


    def init_sentry(**_):
        sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], integrations=[CeleryIntegration()], traces_sample_rate=1.0)
''')
SENTRY_INIT = "from sentry_setup import init_sentry\ninit_sentry()\n"  # at its import: once a process


@dataclass(frozen=True)
class Setup:
    """The worker's app module (tests/e2e_app.py's app, set up under Sentry in some order), and
    the modules the app imports at worker start, in pool processes started afresh (spawn) too:
    those never import the app module, the app comes to them pickled, with its ``imports``."""

    app_module: str
    imports: str


SETUPS = {
    # sentry_sdk.init first, at the top of the app module: what Sentry's docs show first.
    "sentry-first": Setup("import sentry_init\nfrom e2e_app import app\n", "sentry_init,redbeat.worker"),
    # The app and redbeat.worker imported, then sentry_sdk.init.
    "redbeat-first": Setup("from e2e_app import app\nimport redbeat.worker\nimport sentry_init\n",
                           "redbeat.worker,sentry_init"),
    # sentry_sdk.init in celeryd_init, as Sentry's docs advise for a worker: after every import.
    # The signal is the main process's: not for spawned pool processes, which would never init.
    "at-celeryd-init": Setup("from celery import signals\nfrom e2e_app import app\nimport redbeat.worker\n"
                             "from sentry_setup import init_sentry\n"
                             "signals.celeryd_init.connect(init_sentry, weak=False)\n", "redbeat.worker"),
}
SETUPS_AND_POOLS = pytest.mark.parametrize("setup, pool", [
    (setup, pool) for setup in SETUPS for pool in ["solo", "prefork", "prefork-spawn"]
    if (setup, pool) != ("at-celeryd-init", "prefork-spawn")])


def errors(server: Envelopes) -> list[dict]:
    return [payload for header, payload in list(server.items) if header.get("type") == "event"]


def transactions(server: Envelopes) -> list[dict]:
    return [payload for header, payload in list(server.items) if header.get("type") == "transaction"]


def task_ids(payloads: list[dict]) -> list[str]:
    return sorted(payload.get("tags", {}).get("celery_task_id", "") for payload in payloads)


def exception_types(payload: dict) -> list[str]:
    return [value["type"] for value in payload.get("exception", {}).get("values", [])]


def start_sentry_worker(workers: Processes, envelopes: Envelopes, tmp_path: Path, setup: str, pool: str) -> None:  # noqa: F811
    (tmp_path / "sentry_setup.py").write_text(SENTRY_SETUP)
    (tmp_path / "sentry_init.py").write_text(SENTRY_INIT)
    (tmp_path / "sentry_worker_app.py").write_text(SETUPS[setup].app_module)
    workers.app_module = "sentry_worker_app"
    workers.env.update(SENTRY_DSN=f"http://public@127.0.0.1:{envelopes.server_port}/1",
                       E2E_IMPORTS=SETUPS[setup].imports,
                       E2E_START_METHOD="spawn" if pool == "prefork-spawn" else "fork")
    workers.env["PYTHONPATH"] = f"{tmp_path}:{workers.env['PYTHONPATH']}"  # for spawned pool processes too
    start_worker(workers, "worker", pool.removesuffix("-spawn"))


@pytest.mark.e2e
@SETUPS_AND_POOLS
def test_under_sentry_a_run_delivered_twice_executes_once_and_the_duplicate_is_no_error_in_sentry(
        workers, schedule_server, redis_server, envelopes, tmp_path, setup, pool):  # noqa: F811
    start_sentry_worker(workers, envelopes, tmp_path, setup, pool)
    label = f"sentry-{setup}-{pool}"
    for _ in range(2):
        deliver(redis_server, "e2e_app.record", [label], "sentry-run-1")
    wait_for(lambda: outcomes(schedule_server)["duplicate"] == 1 and outcomes(schedule_server)["succeeded"] == 1,
             timeout=15, message="the run and its duplicate")
    wait_for(lambda: broker_empty(redis_server), timeout=15, message="both messages acknowledged")
    # Each delivery is a transaction of its own, sent after anything its task captured:
    # with both here, an error for the duplicate would be here too.
    wait_for(lambda: len(transactions(envelopes)) == 2, timeout=15, message="both deliveries' transactions")
    assert executions(redis_server, label) == 1
    assert [event.event for event in events(schedule_server)] == ["succeeded", "started"]
    assert errors(envelopes) == []
    assert task_ids(transactions(envelopes)) == ["sentry-run-1", "sentry-run-1"]
    assert sorted(payload["contexts"]["trace"]["status"] for payload in transactions(envelopes)) == ["aborted", "ok"]
    assert "Traceback" not in workers.log("worker")


@pytest.mark.e2e
@SETUPS_AND_POOLS
def test_under_sentry_a_failing_run_is_recorded_as_failed_and_reported_to_sentry(
        workers, schedule_server, redis_server, envelopes, tmp_path, setup, pool):  # noqa: F811
    start_sentry_worker(workers, envelopes, tmp_path, setup, pool)
    deliver(redis_server, "e2e_app.fail", [], "sentry-run-2")
    wait_for(lambda: outcomes(schedule_server)["failed"] == 1, timeout=15, message="the failure recorded")
    wait_for(lambda: transactions(envelopes), timeout=15, message="the run's transaction")
    [failed, started] = events(schedule_server)
    assert (failed.event, failed.exception, started.event) == ("failed", "ValueError", "started")
    [error] = errors(envelopes)
    assert exception_types(error) == ["ValueError"]
    assert error["tags"]["celery_task_id"] == "sentry-run-2"  # reported inside the task's scope
    assert [payload["contexts"]["trace"]["status"] for payload in transactions(envelopes)] == ["internal_error"]


def test_the_tracers_rebuilt_for_the_claim_are_built_by_celerys_build_tracer_as_it_is_then(monkeypatch):
    """Instrumentation that replaces ``celery.app.trace.build_tracer`` after redbeat.runonce was
    imported (sentry_sdk.init after redbeat.worker) still wraps the tracers the claim rebuilds."""
    app = make_app(None)

    @app.task(name="tasks.rebuilt", shared=False)  # this app's own: no other app is handed it
    def body() -> None:
        pass

    built = []
    monkeypatch.setattr(trace, "build_tracer", lambda name, *args, **kwargs: built.append(name) or "instrumented")
    body.__trace__ = "built before the claim"
    claim_before_running(app, lambda task: True)
    assert body.__trace__ == "instrumented" and built == ["tasks.rebuilt"]
