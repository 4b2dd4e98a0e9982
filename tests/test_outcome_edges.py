"""Edge cases of run outcomes, exactly once per slot and overlap policies: each test proves
one bug a review found (and that it stays fixed), against a real redis-server, through Celery's own tracer (the code a
worker runs each task with) where a worker is involved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from celery.app.trace import build_tracer
from celery.exceptions import Reject
from click.testing import CliRunner
from conftest import make_app, wait_for
from test_run_once import events, outcomes, start_worker, workers  # noqa: F401 (workers: the fixture used)

from redbeat import RedBeatSchedulerEntry
from redbeat.cli import redbeat
from redbeat.client import get_store
from redbeat.decide import Decider
from redbeat.decoder import meta_json
from redbeat.keys import KeyNames
from redbeat.outcomecounts import read_counts
from redbeat.records import RunEvent, RunEventKind
from redbeat.runonce import claim_before_running
from redbeat.runs import task_id_for
from redbeat.store import DueRecord
from redbeat.worker import RECORDER

UTC = timezone.utc
NOW = datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC)
T = NOW.timestamp()
LAST = NOW - timedelta(seconds=65)  # the entry's last slot: its next, at NOW - 5 s, is due
KEY = "redbeat:job"


@pytest.fixture
def recorder() -> Iterator[Any]:
    """The worker's recorder (the one Celery's signals call), without a pause left by another test."""
    RECORDER.paused_until, RECORDER.dropped, RECORDER.last_warning = 0.0, 0, None
    yield RECORDER
    RECORDER.paused_until, RECORDER.dropped, RECORDER.last_warning = 0.0, 0, None


def request(task_id: str, key: str = KEY, retries: int = 0) -> dict[str, Any]:
    """A message's request as a worker hands it to the tracer (RedBeat's headers on it)."""
    return {"id": task_id, "redbeat_key": key, "redbeat_scheduled": LAST.timestamp(), "hostname": "celery@w1",
            "retries": retries, "delivery_info": {}}


def deliver(task: Any, task_id: str, key: str = KEY) -> None:
    """One delivery of a run, traced as a worker traces it."""
    tracer = build_tracer(task.name, task, task.app.loader, "celery@w1", app=task.app)
    tracer(task_id, [], {}, request(task_id, key))


def run_of(app: Any, task_id: str, key: str = KEY) -> SimpleNamespace:
    """A task whose current request is a RedBeat run (what the recorder reads)."""
    return SimpleNamespace(app=app, name="tasks.job", request=SimpleNamespace(**request(task_id, key)))


# -- overlap: a late report of an attempt that asked for a retry -------------------------------

def test_a_late_retried_report_of_an_earlier_attempt_does_not_block_a_skip_entry_after_the_run_succeeded(app):
    """Celery publishes a retry before the attempt that asked for it reports its end, so the
    next attempt can start and succeed on another worker first (show knows this:
    test_worker_outcomes.py). The run is over, but the newest event is the late ``retried``:
    beat must not skip every slot until the bound (an hour by default) for it."""
    store = get_store(app)
    ran = task_id_for(KEY, LAST.timestamp())
    store.claim_run(KEY, RunEvent(ran, "started", T - 30, "celery@w1", 7))
    store.claim_run(KEY, RunEvent(ran, "started", T - 29, "celery@w2", 8, retries=1))
    store.record_run_end(KEY, RunEvent(ran, "succeeded", T - 28, "celery@w2", 8, duration=0.5, retries=1))
    store.record_run_end(KEY, RunEvent(ran, "retried", T - 27, "celery@w1", 7, exception="KeyError", duration=3.0))
    definition = {"name": "job", "task": "tasks.job", "schedule": {"__type__": "interval", "every": 60},
                  "overlap": "skip"}
    record = DueRecord(KEY.encode(), 0.0, json.dumps(definition).encode(), meta_json(LAST, 3).encode(), None)
    newest = store.newest_events([record]).get(KEY.encode())
    decision = Decider(app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "host:1:token", 10.0).decide(
        record, NOW, newest)
    assert not decision.skipped and decision.action == "run"


# -- exactly once: one key of another type -------------------------------------------------------

def test_an_events_key_of_another_type_does_not_let_duplicates_of_other_entries_execute(app, schedule_redis,
                                                                                       recorder, caplog):
    """Someone's string where one entry's worker events go costs that entry its claim (it
    executes, as when Redis fails), not the claims of every other entry in the process."""
    schedule_redis.set("redbeat::worker-events:junk", "not a list")
    with caplog.at_level("WARNING", logger="redbeat.worker"):
        assert recorder.claim(run_of(app, "junk-1", "redbeat:junk"))  # executes: nothing to claim in
    assert "redbeat::worker-events:junk is a string, not a list as RedBeat expects" in caplog.text
    assert "none are tried" not in caplog.text
    nightly = run_of(app, "nightly-1", "redbeat:nightly")
    assert recorder.claim(nightly)
    assert not recorder.claim(nightly)  # a second delivery of the same run: a duplicate


def test_the_end_of_a_run_whose_events_key_is_of_another_type_does_not_let_duplicates_execute(app, schedule_redis,
                                                                                           recorder):
    schedule_redis.set("redbeat::worker-events:junk", "not a list")
    recorder.ended(app, "redbeat:junk", SimpleNamespace(**request("junk-1", "redbeat:junk")), "junk-1",
                   RunEventKind.SUCCEEDED)
    assert read_counts(schedule_redis.hgetall("redbeat::run-outcomes")).outcomes["succeeded"] == 1
    nightly = run_of(app, "nightly-1", "redbeat:nightly")
    assert recorder.claim(nightly)
    assert not recorder.claim(nightly)


# -- exactly once: a run that asked to be delivered again ------------------------------------------

def test_a_run_that_rejected_itself_with_requeue_runs_when_delivered_again(app, recorder):
    """``Reject(requeue=True)`` asks the broker to deliver the message again (Celery's way for
    a task to say "not now", with acks late): that delivery is the run's, not a duplicate."""
    ran: list[int] = []

    @app.task(name="review.rejects_once", bind=True, acks_late=True)
    def rejects_once(self: Any) -> None:
        ran.append(1)
        if len(ran) == 1:
            raise Reject("not now", requeue=True)

    claim_before_running(app, recorder.claim, "celery@w1")
    run = task_id_for(KEY, LAST.timestamp())
    deliver(rejects_once, run)
    assert [RunEvent.from_json(raw).event for raw in get_store(app).worker_events(KEY)] == ["rejected", "started"]
    deliver(rejects_once, run)  # the broker's delivery the Reject asked for
    assert len(ran) == 2
    deliver(rejects_once, run)  # a duplicate of that one
    assert len(ran) == 2


# -- move-prefix: an entry's worker events of another type -----------------------------------------

def test_move_prefix_moves_every_entry_and_leaves_a_worker_events_key_of_another_type_where_it_is(schedule_redis,
                                                                                                  redis_url):
    """Someone's string where an entry's worker events go must not stop the move half-way
    (the entry at both prefixes, every later entry left) at each attempt."""
    for name in ("a", "b"):
        schedule_redis.hset(f"redbeat:{name}", "definition", json.dumps(
            {"name": name, "task": "tasks.moved", "schedule": {"__type__": "interval", "every": 3600}}))
        schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    schedule_redis.set("redbeat::worker-events:a", "not a list")
    result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, "move-prefix", "--to", "{redbeat}:", "--apply"])
    assert result.exit_code == 0, result.output
    assert schedule_redis.exists("{redbeat}:a", "{redbeat}:b") == 2 and not schedule_redis.exists("redbeat:a")
    assert schedule_redis.get("redbeat::worker-events:a") == "not a list"


def test_show_and_list_say_a_run_whose_late_retried_report_came_after_its_next_attempt_succeeded_is_over(
        redis_url, schedule_redis):
    def cli(*args: str) -> str:
        result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    cli("add", "busy", "--task", "t.busy", "--every", "60", "--option", "overlap=skip")
    now = float(schedule_redis.execute_command("TIME")[0])
    for event in (RunEvent("t-7", "started", now - 3), RunEvent("t-7", "started", now - 2, retries=1),
                  RunEvent("t-7", "succeeded", now - 1, duration=0.5, retries=1),
                  RunEvent("t-7", "retried", now, exception="KeyError", duration=2.0)):
        schedule_redis.lpush("redbeat::worker-events:busy", event.to_json())
    assert json.loads(cli("show", "busy", "--json"))["overlap"]["running"] is None
    assert "retried" not in cli("list")


# -- a run killed at its hard time limit ---------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.usefixtures("workers")
def test_a_run_killed_at_its_hard_time_limit_is_recorded_as_failed(beats, schedule_server, redis_server):
    """docs/outcomes.rst said such a run reports nothing and shows running for good: billiard
    sends the pool child SIGTERM first, and a task that lets Python handle it ends as failed
    (scheduling.rst's bound counts on it)."""
    start_worker(beats, "worker", "prefork")
    sender = make_app(None, broker_url=redis_server.url(1))
    sender.send_task("e2e_app.record_slowly", ["limited", 30], task_id="limited-run-1", time_limit=1,
                     headers={"redbeat_key": "redbeat:once", "redbeat_scheduled": 1796270400.0})
    wait_for(lambda: "Hard time limit (1" in beats.log("worker"), timeout=30, message="the hard time limit")
    wait_for(lambda: outcomes(schedule_server)["failed"] == 1, timeout=10, message="the run's end")
    assert [event.event for event in events(schedule_server)] == ["failed", "started"]
    assert schedule_server.client(0).zscore("redbeat::failing", "redbeat:once") is not None


# -- exactly once: a task that calls itself directly -----------------------------------------------

def test_a_task_that_calls_itself_directly_runs_its_whole_body_once(app, recorder):
    """Calling a task directly runs its body in the caller's process (Celery: "calling a task
    as a function"); in itself, the call inherits the run's request, headers included."""
    walked: list[int] = []

    @app.task(name="review.walk")
    def walk(depth: int) -> None:
        walked.append(depth)
        if depth < 2:
            walk(depth + 1)

    claim_before_running(app, recorder.claim, "celery@w1")
    tracer = build_tracer(walk.name, walk, app.loader, "celery@w1", app=app)
    run = task_id_for(KEY, LAST.timestamp())
    tracer(run, [0], {}, request(run))
    assert walked == [0, 1, 2]
    assert [RunEvent.from_json(raw).event for raw in get_store(app).worker_events(KEY)] == ["succeeded", "started"]
