"""Run outcomes from the workers (redbeat/worker.py, docs/outcomes.rst): the worker-event
records, the states folded from them, the recorder's failures, and end to end with a
real redis-server, a real beat and a real worker that imports redbeat.worker."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import Processes, make_app, start_beat, wait_for

from redbeat.cli import redbeat
from redbeat.client import get_store
from redbeat.records import RunEvent, RunEventKind
from redbeat.runstates import RUNNING, run_states
from redbeat.worker import PAUSE_AFTER_ERROR, EventRecorder

# -- the records ----------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"not json", b"[1, 2]", b'"text"', b"{}",
                                  b'{"task_id": 1, "event": "started", "at": 1}',
                                  b'{"task_id": "t", "event": "started", "at": -5}',
                                  b'{"task_id": "t", "event": null, "at": 1}', b"[" * 100_000])
def test_a_worker_event_that_is_no_record_is_refused_with_value_error(junk):
    with pytest.raises(ValueError):
        RunEvent.from_json(junk)


def test_the_optional_fields_of_a_worker_event_of_the_wrong_type_read_as_unset():
    event = RunEvent.from_json(json.dumps({"task_id": "t", "event": "failed", "at": 10, "worker": 5, "pid": True,
                                           "scheduled": "soon", "exception": ["x"], "duration": -1,
                                           "retries": -2}))
    assert event == RunEvent("t", "failed", 10.0)


def test_a_worker_event_reads_back_as_written():
    event = RunEvent("t", "failed", 10.5, "celery@h", 42, 9.0, "ValueError", 0.25, 2)
    assert RunEvent.from_json(event.to_json()) == event


# -- the states of runs -----------------------------------------------------------------------

def events(*described: tuple) -> list[RunEvent]:
    """Events given oldest first (task id, event, at, duration, exception[, retries]), returned newest
    first as stored."""
    return [RunEvent(task_id, kind, at, "w", duration=duration, exception=exception, retries=retries)
            for task_id, kind, at, duration, exception, retries in (
                (*event, 0) if len(event) == 5 else event for event in reversed(described))]


def test_a_run_started_and_not_ended_is_running_and_an_ended_one_has_its_end_and_duration():
    states = run_states(events(("a", "started", 1, None, None), ("b", "started", 2, None, None),
                               ("a", "failed", 3, 2.0, "ValueError")))
    assert states["b"].state == RUNNING and states["b"].started == 2 and states["b"].finished is None
    assert states["a"].as_json_fields() == {"state": "failed", "exception": "ValueError", "started": 1,
                                            "finished": 3, "duration": 2.0, "worker": "w", "retries": 0}


def test_a_retried_run_counts_its_retries_and_ends_as_its_last_execution():
    states = run_states(events(("a", "started", 1, None, None), ("a", "retried", 2, 1.0, "KeyError"),
                               ("a", "started", 3, None, None, 1), ("a", "succeeded", 4, 0.5, None, 1)))
    assert (states["a"].state, states["a"].retries, states["a"].started, states["a"].duration,
            states["a"].exception) == ("succeeded", 1, 3, 0.5, None)


def test_the_late_report_of_an_attempt_that_asked_for_a_retry_does_not_undo_the_next_attempts_end():
    """Celery sends the retry before the attempt that asked for it reports its end: on
    another worker process, the next attempt can start and end first."""
    states = run_states(events(("a", "started", 1, None, None), ("a", "started", 2, None, None, 1),
                               ("a", "succeeded", 3, 0.5, None, 1), ("a", "retried", 4, 1.0, "KeyError")))
    assert (states["a"].state, states["a"].retries, states["a"].finished) == ("succeeded", 1, 3)


def test_a_run_whose_start_was_trimmed_away_still_has_its_end():
    [state] = run_states(events(("a", "succeeded", 4, 0.5, None))).values()
    assert (state.state, state.started, state.finished, state.duration) == ("succeeded", None, 4, 0.5)


# -- the recorder -----------------------------------------------------------------------------

def task_with(app, request: dict) -> SimpleNamespace:
    return SimpleNamespace(app=app, request=SimpleNamespace(**request))


def test_a_task_without_redbeats_headers_records_nothing(fake_app):
    recorder = EventRecorder()
    task = task_with(fake_app, {"id": "plain", "hostname": "celery@h"})
    assert recorder.claim(task)
    recorder.finished(task, "plain", "SUCCESS", None)
    recorder.revoked(task, task.request)
    assert fake_app.redbeat_redis.keys("*") == [] and recorder.starts == {}


def test_each_event_of_a_run_is_pushed_onto_its_entrys_list_capped_at_four_per_history_record(fake_app):
    fake_app.conf.redbeat_history_size = 2
    get_store(fake_app).conf.history_size = 2
    clock = iter(range(100, 200))
    recorder = EventRecorder(clock=lambda: float(next(clock)), monotonic=lambda: 5.0)
    for n in range(5):
        task = task_with(fake_app, {"id": f"t{n}", "hostname": "celery@h", "redbeat_key": "redbeat:nightly",
                                    "redbeat_scheduled": 1000.0 + n})
        assert recorder.claim(task)
        recorder.finished(task, f"t{n}", "FAILURE", ValueError("no"))
    stored = fake_app.redbeat_redis.lrange("redbeat::worker-events:nightly", 0, -1)
    assert len(stored) == 8
    newest = RunEvent.from_json(stored[0])
    assert (newest.task_id, newest.event, newest.exception, newest.duration, newest.scheduled, newest.worker) == (
        "t4", RunEventKind.FAILED, "ValueError", 0.0, 1004.0, "celery@h")


def test_a_revoked_run_is_recorded_as_revoked(fake_app):
    recorder = EventRecorder()
    request = SimpleNamespace(id="t", hostname="celery@h", redbeat_key="redbeat:nightly", redbeat_scheduled=5.0)
    recorder.revoked(SimpleNamespace(app=fake_app), request)
    [stored] = fake_app.redbeat_redis.lrange("redbeat::worker-events:nightly", 0, -1)
    assert RunEvent.from_json(stored).event == RunEventKind.REVOKED


def test_a_redis_that_fails_never_fails_the_task_and_is_warned_about_once_then_left_alone_a_while(caplog):
    app = make_app("redis://127.0.0.1:1/0", redbeat_redis_options={"socket_connect_timeout": 0.2})
    now = [0.0]
    recorder = EventRecorder(monotonic=lambda: now[0])
    task = task_with(app, {"id": "t", "hostname": "celery@h", "redbeat_key": "redbeat:nightly"})
    with caplog.at_level(logging.WARNING, logger="redbeat.worker"):
        assert recorder.claim(task)
        now[0] = PAUSE_AFTER_ERROR / 2
        recorder.finished(task, "t", "SUCCESS", None)  # dropped without trying
    assert recorder.dropped == 1 and recorder.paused_until == PAUSE_AFTER_ERROR
    [warning] = [r for r in caplog.records if r.name == "redbeat.worker"]
    assert "cannot record run events in Redis at redis://127.0.0.1:1/0" in warning.getMessage()


def test_install_connects_the_signals_once_however_often_it_is_called_and_checks_the_apps_settings():
    from celery import signals

    from redbeat.config import ConfigurationError
    from redbeat.worker import install

    install(make_app("redis://127.0.0.1:6379/0"))
    install()
    for signal in (signals.worker_init, signals.worker_process_init, signals.task_postrun):
        assert sum("redbeat.worker" in str(uid) for (uid, _), _ in signal.receivers) == 1
    with pytest.raises(ConfigurationError):
        install(make_app("redis://127.0.0.1:6379/0", redbeat_catch_up="sometimes"))


# -- show and list, on what anyone may have written ----------------------------------------

def test_junk_in_an_entrys_worker_events_is_skipped_and_a_key_of_another_type_is_reported_by_show(
        app, redis_url, schedule_redis):
    def run(*args: str) -> str:
        result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output
    raw_entry(schedule_redis, "junky", "tasks.junk")
    raw_entry(schedule_redis, "wrong", "tasks.wrong")
    schedule_redis.rpush("redbeat::history:junky", json.dumps(
        {"task_id": "t-1", "scheduled": 100, "dispatched": 101, "lateness": 1, "outcome": "published"}))
    schedule_redis.lpush("redbeat::worker-events:junky", json.dumps({"task_id": "t-1", "event": "started", "at": 102}),
                         b"\xff not json", "[]", json.dumps({"task_id": "t-1", "event": "failed", "at": "later"}))
    schedule_redis.set("redbeat::worker-events:wrong", "a string")

    [junky] = json.loads(run("show", "junky", "--json"))["history"]
    assert (junky["state"], junky["started"]) == ("running", "1970-01-01T00:01:42+00:00")
    listed = {entry["name"]: entry for entry in json.loads(run("list", "--json"))}
    assert listed["junky"]["last_run_state"] is None  # its newest record is junk: nothing to say
    assert listed["wrong"]["last_run_state"] is None
    shown = json.loads(run("show", "wrong", "--json"))
    assert shown["worker_events_error"].startswith("redbeat::worker-events:wrong is a string, not a list: DEL ")
    assert "worker events: redbeat::worker-events:wrong is a string" in run("show", "wrong")
    assert "RUN STATE" in run("show", "junky") and "LAST RUN STATE" not in run("list")


def test_doctor_notes_an_entry_whose_last_reported_run_failed_without_failing_itself(redis_url, schedule_redis):
    raw_entry(schedule_redis, "fails", "tasks.fails")
    raw_entry(schedule_redis, "fine", "tasks.fine")
    schedule_redis.lpush("redbeat::worker-events:fails", json.dumps(
        {"task_id": "t-9", "event": "failed", "at": 1796270000, "worker": "celery@w1", "exception": "ValueError"}))
    schedule_redis.lpush("redbeat::worker-events:fine", json.dumps(
        {"task_id": "t-8", "event": "succeeded", "at": 1796270000, "worker": "celery@w1"}))
    result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, "doctor", "--json"])
    assert result.exit_code == 0, result.output  # the task's failure, not the schedule's
    [finding] = [f for f in json.loads(result.output) if f["kind"] == "last-run-failed"]
    assert finding["key"] == "redbeat:fails" and finding["notice"]
    assert "failed raising ValueError on celery@w1" in finding["explanation"]


# -- end to end -----------------------------------------------------------------------------

def raw_entry(schedule, name: str, task: str, *args: str) -> None:
    """An entry due now that runs once an hour."""
    schedule.hset(f"redbeat:{name}", "definition", json.dumps({
        "name": name, "task": task, "args": list(args), "schedule": {"__type__": "interval", "every": 3600}}))
    schedule.zadd("redbeat::schedule", {f"redbeat:{name}": 0})


def show(schedule_server, name: str, *options: str) -> str:
    result = CliRunner().invoke(redbeat, ["--redis-url", schedule_server.url(0), "show", name, *options])
    assert result.exit_code == 0, result.output
    return result.output


def ended_run(schedule_server, name: str) -> dict | None:
    """The newest run of the entry in ``show --json`` once the workers reported its end."""
    history = json.loads(show(schedule_server, name, "--json"))["history"]
    return history[0] if history and history[0]["state"] not in (None, RUNNING, "retried") else None


@pytest.mark.e2e
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_worker_that_imports_redbeat_worker_reports_succeeded_failed_and_retried_runs_in_show(
        beats: Processes, schedule_server, redis_server, pool):
    beats.env["E2E_IMPORTS"] = "redbeat.worker"
    schedule = schedule_server.client(0)
    raw_entry(schedule, "ok", "e2e_app.record", "ok")
    raw_entry(schedule, "failing", "e2e_app.fail")
    raw_entry(schedule, "retrying", "e2e_app.retry_once")
    beats.start("worker", "worker", "-P", pool, "-c", "2", "-l", "info", "--without-gossip", "--without-mingle",
                "--without-heartbeat")
    start_beat(beats, "beat")

    ok = wait_for(lambda: ended_run(schedule_server, "ok"), timeout=30, message="the run of ok to end")
    failing = wait_for(lambda: ended_run(schedule_server, "failing"), timeout=30, message="failing's run")
    retrying = wait_for(lambda: ended_run(schedule_server, "retrying"), timeout=30, message="retrying's run")
    assert (ok["outcome"], ok["state"], ok["exception"], ok["retries"]) == ("published", "succeeded", None, 0)
    assert ok["worker"].startswith("celery@") and ok["duration"] >= 0 and ok["started"] <= ok["finished"]
    assert (failing["state"], failing["exception"]) == ("failed", "ValueError")
    assert (retrying["state"], retrying["retries"]) == ("succeeded", 1)
    assert "redbeat.worker: recording the runs of RedBeat's entries in redis://127.0.0.1:" in beats.log("worker")

    text = show(schedule_server, "failing")
    assert "RUN STATE" in text and "failed: ValueError" in text
    assert "last_run_state: failed: ValueError" in text
    listed = {entry["name"]: entry for entry in json.loads(CliRunner().invoke(
        redbeat, ["--redis-url", schedule_server.url(0), "list", "--json"]).output)}
    assert (listed["failing"]["last_run_state"], listed["failing"]["last_run_exception"]) == ("failed", "ValueError")
    assert listed["ok"]["last_run_state"] == "succeeded" and listed["ok"]["last_run_duration"] >= 0

    # A task sent without RedBeat's headers runs and is recorded nowhere.
    sender = make_app(None, broker_url=redis_server.url(1))
    plain = sender.send_task("e2e_app.record", ["plain"])
    ran = redis_server.client(2)
    wait_for(lambda: "plain" in ran.lrange("e2e:ran", 0, -1), timeout=30, message="the plain task to run")
    events_keys = schedule.keys("redbeat::worker-events:*")
    assert set(events_keys) <= {f"redbeat::worker-events:{name}"
                                for name in ("ok", "failing", "retrying", "static-every-second")}
    assert not any(plain.id in record for key in events_keys for record in schedule.lrange(key, 0, -1))
