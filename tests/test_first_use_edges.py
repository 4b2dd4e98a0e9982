"""Edge cases a new user met trying the overlap policies, the outcomes, the command line and the
dashboard as the docs describe them: each test proves one finding (and that it stays fixed)
against the session's real redis-server, and a real ``celery -A`` process where the app's task
modules matter."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from celery.schedules import schedule as every
from conftest import make_app, published, raw_entry, tick_until

from redbeat import RedBeatSchedulerEntry
from redbeat.records import RunEvent
from redbeat.timeformat import iso

# A project whose task sets its own hard time limit, in a module the app imports as a worker does
# (``imports``), as Celery projects are laid out: the app alone does not know the task.
APP_MODULE = """
from celery import Celery

app = Celery("newuser_app", broker="memory://")
app.conf.redbeat_redis_url = {url!r}
app.conf.imports = ["newuser_tasks"]
app.conf.task_time_limit = 50
"""

TASKS_MODULE = """
from newuser_app import app


@app.task(name="newuser_tasks.limited", time_limit=100)
def limited():
    return 1


@app.task(name="newuser_tasks.plain")
def plain():
    return 1
"""


def _project(directory: Path, redis_url: str) -> None:
    (directory / "newuser_app.py").write_text(textwrap.dedent(APP_MODULE.format(url=redis_url)))
    (directory / "newuser_tasks.py").write_text(textwrap.dedent(TASKS_MODULE))


def test_show_gives_the_bound_of_the_task_s_own_time_limit_as_beat_uses_it(tmp_path, redis_url, project_env):
    """scheduling.rst, Overlap: without its own max_run_time an entry takes its task's time_limit
    (else the app's task_time_limit) plus 30 s, and ``show`` gives the bound in use. Beat imports
    the app's task modules as it starts; ``celery -A proj redbeat show`` must too, or it names the
    app's limit (80 s here) while beat counts the task's (130 s)."""
    _project(tmp_path, redis_url)

    def celery_redbeat(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "celery", "-A", "newuser_app", "redbeat", *args],
                              cwd=tmp_path, env=project_env, capture_output=True, text=True, timeout=60)

    added = celery_redbeat("add", "lim", "--task", "newuser_tasks.limited", "--every", "3600",
                           "--option", "overlap=skip")
    assert added.returncode == 0, added.stderr
    shown = celery_redbeat("show", "lim")
    assert shown.returncode == 0, shown.stderr
    assert ("overlap: skip; a started run counts as finished after 130s (the task's time_limit plus a grace)"
            in shown.stdout), shown.stdout
    as_json = json.loads(celery_redbeat("show", "lim", "--json").stdout)
    assert as_json["overlap"]["max_run_time"] == 130.0
    assert as_json["overlap"]["bound_source"] == "the task's time_limit plus a grace"


def test_show_says_a_bound_from_the_app_s_task_time_limit_comes_from_the_app(tmp_path, redis_url, project_env):
    """Celery copies ``task_time_limit`` onto every task that sets no limit of its own: the bound
    of such a task's entry comes from the app's setting, and ``show`` must say so."""
    _project(tmp_path, redis_url)
    for args in (["add", "plain", "--task", "newuser_tasks.plain", "--every", "3600", "--option", "overlap=skip"],
                 ["show", "plain"]):
        done = subprocess.run([sys.executable, "-m", "celery", "-A", "newuser_app", "redbeat", *args],
                              cwd=tmp_path, env=project_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert ("overlap: skip; a started run counts as finished after 80s (the app's task_time_limit plus a grace)"
            in done.stdout), done.stdout


def test_a_run_published_after_a_killed_run_s_bound_passed_blocks_the_next_slot(schedule_redis, broker_redis,
                                                                                scheduler_for):
    """scheduling.rst, Overlap: a run is unfinished while the newest worker event is ``started``
    *or* while a run beat published after that event has not started yet, within its bound. A
    worker killed mid-task leaves ``started`` for good: once its bound passes, the next slot runs
    (right), and that run, not started yet, must then hold back the slot after it."""
    now = float(schedule_redis.execute_command("TIME")[0])
    raw_entry(schedule_redis, "export", every=1, overlap="skip", max_run_time=5)
    schedule_redis.lpush("redbeat::worker-events:export", RunEvent("killed-run", "started", now - 60).to_json())
    scheduler = scheduler_for()

    def slot_decided_after_the_first_run() -> bool:
        history = [json.loads(raw) for raw in schedule_redis.lrange("redbeat::history:export", 0, -1)]
        return len(published(broker_redis)) >= 2 or any(record["outcome"] == "missed" for record in history)

    tick_until(scheduler, slot_decided_after_the_first_run, timeout=10, message="a second slot decided")
    assert len(published(broker_redis)) == 1


# -- the dashboard's JSON API (docs/web.rst) ------------------------------------------------


from starlette.testclient import TestClient  # noqa: E402

from redbeat.web import create_app  # noqa: E402


def _web(app) -> TestClient:
    return TestClient(create_app(app), base_url="http://127.0.0.1")


def test_api_entry_gives_the_overlap_policy_as_show_json_does(app):
    RedBeatSchedulerEntry("export", "tasks.export", every(3600), app=app, overlap="skip", max_run_time=7200).save()
    answer = _web(app).get("/api/entry", params={"name": "export"}).json()
    assert answer["overlap"]["policy"] == "skip"
    assert answer["overlap"]["max_run_time"] == 7200.0


def test_the_schedule_s_last_run_says_how_that_run_went_not_how_a_later_skipped_slot_did(app, schedule_redis):
    """An overlap skip leaves a ``missed`` record newer than the run that blocks it (format.rst:
    history and status, written here as beat writes them). The schedule's row names the run
    published last as its ``last_run``; its outcome and lateness must be that run's."""
    RedBeatSchedulerEntry("export", "tasks.export", every(3), app=app, overlap="skip").save()
    published_at = time.time() - 4
    skipped_at = published_at + 3
    schedule_redis.hset("redbeat:export", "status", json.dumps({
        "next_slot": skipped_at + 3, "last_dispatched_at": published_at + 0.002, "missed": 1,
        "last_missed_at": skipped_at}))
    history = "redbeat::history:export"
    schedule_redis.lpush(history, json.dumps({
        "task_id": "run-1", "scheduled": published_at, "dispatched": published_at + 0.002, "lateness": 0.002,
        "outcome": "published"}))
    schedule_redis.lpush(history, json.dumps({
        "task_id": "slot-2", "scheduled": skipped_at, "dispatched": skipped_at + 0.0005, "lateness": 0.0005,
        "outcome": "missed", "reason": "overlap: the previous run run-1 has not finished"}))
    row = _web(app).get("/api/entries", params={"name": "export"}).json()["entries"][0]
    assert row["last_run"] == iso(published_at + 0.002)
    assert (row["last_outcome"], row["last_lateness"]) == ("published", 0.002)


def test_the_dashboard_says_redis_is_out_of_reach_without_a_traceback():
    """``redbeat metrics`` serves ``redbeat_schedule_up 0`` when Redis is down; the dashboard
    (docs/web.rst) should likewise answer in words (an error page, an ``error`` in JSON) and
    not with a server error."""
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(f"redis://127.0.0.1:{port}/0")
    web = TestClient(create_app(app), base_url="http://127.0.0.1", raise_server_exceptions=False)
    answer = web.get("/api/overview")
    assert answer.status_code == 503
    assert f"cannot reach the schedule's Redis at redis://127.0.0.1:{port}/0" in answer.json()["error"]
    page = web.get("/schedule")
    assert page.status_code == 503 and "cannot reach the schedule&#39;s Redis" in page.text
