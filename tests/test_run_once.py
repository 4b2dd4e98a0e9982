"""Each of RedBeat's runs executed once (redbeat/runonce.py, docs/reliability.rst): the claim
of a run's start and the record of its end (with the schedule-wide counts and the failing
set) on fakeredis, the wrapping of the tasks' bodies, and, with a real redis-server and real
workers (solo and prefork, acks early and late), a run delivered twice executed once, a run
whose worker was killed mid-task not executed again (the default), or executed again with
``redbeat_rerun_interrupted_after``."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import pytest
from conftest import Processes, make_app, wait_for

from redbeat.client import get_store
from redbeat.outcomecounts import read_counts
from redbeat.records import RunEvent, RunEventKind
from redbeat.runonce import DuplicateRun, claim_before_running, claiming
from redbeat.storepart import WrongTypeError
from redbeat.worker import EventRecorder
from redbeat.workerevents import task_id_prefix

KEY = "redbeat:nightly"
EVENTS = "redbeat::worker-events:nightly"


def started(task_id: str, at: float = 100.0, retries: int = 0) -> RunEvent:
    return RunEvent(task_id, RunEventKind.STARTED.value, at, "celery@w1", 7, 99.0, retries=retries)


def counts(app) -> dict[str, int]:
    return read_counts(get_store(app).client.hgetall("redbeat::run-outcomes")).outcomes


# -- the claim ---------------------------------------------------------------------------------

def test_a_run_is_claimed_once_and_a_second_delivery_is_a_duplicate_counted_without_a_new_event(fake_app):
    store = get_store(fake_app)
    assert store.claim_run(KEY, started("t-1")).granted
    again = store.claim_run(KEY, started("t-1", at=105.0))
    assert not again.granted and again.earlier == started("t-1")
    assert store.claim_run(KEY, started("t-1", at=106.0)).earlier == started("t-1")
    assert [RunEvent.from_json(raw) for raw in store.worker_events(KEY)] == [started("t-1")]
    assert counts(fake_app)["duplicate"] == 2


def test_a_run_that_ended_is_a_duplicate_too_and_its_next_attempt_after_a_retry_is_claimed(fake_app):
    store = get_store(fake_app)
    assert store.claim_run(KEY, started("t-1")).granted
    store.record_run_end(KEY, RunEvent("t-1", RunEventKind.RETRIED.value, 101.0, duration=1.0))
    assert not store.claim_run(KEY, started("t-1", at=102.0)).granted
    assert store.claim_run(KEY, started("t-1", at=103.0, retries=1)).granted
    assert not store.claim_run(KEY, started("t-1", at=104.0, retries=1)).granted
    assert store.claim_run(KEY, started("t-2", at=105.0)).granted  # another run of the entry


def test_a_task_id_that_starts_like_another_is_another_run(fake_app):
    store = get_store(fake_app)
    assert store.claim_run(KEY, started("t-1")).granted
    assert store.claim_run(KEY, started("t-10")).granted and store.claim_run(KEY, started("t-")).granted
    assert store.claim_run(KEY, started('t"1')).granted and not store.claim_run(KEY, started('t"1')).granted


def test_the_claim_reads_the_events_by_how_run_events_are_written():
    event = RunEvent('id "quoted" ü', RunEventKind.STARTED.value, 1.0)
    assert event.to_json().startswith(task_id_prefix(event.task_id))


@pytest.mark.parametrize("event", [
    RunEvent('id "quoted" ü\n', "failed", 1.5, "celery@h", 3, 99.0, "ValueError", 0.25, 2),
    RunEvent("t", "started", 1e-7), RunEvent("t", "started", 12.0, worker="")])
def test_a_run_event_is_written_as_json_dumps_writes_its_set_fields(event):
    from dataclasses import asdict
    assert event.to_json() == json.dumps({name: value for name, value in asdict(event).items()
                                          if value is not None and (value or name != "retries")})


@pytest.mark.parametrize("age, ended, granted", [(30.0, False, True), (5.0, False, False), (30.0, True, False)])
def test_with_rerun_interrupted_after_only_a_start_old_enough_and_never_ended_runs_again(fake_app, age, ended,
                                                                                         granted):
    store = get_store(fake_app)
    store.conf.rerun_interrupted_after = 10.0
    assert store.claim_run(KEY, started("t-1", at=100.0)).granted
    if ended:
        store.record_run_end(KEY, RunEvent("t-1", RunEventKind.SUCCEEDED.value, 101.0))
    assert store.claim_run(KEY, started("t-1", at=100.0 + age)).granted is granted


def test_by_default_a_run_whose_worker_died_is_never_started_again(fake_app):
    store = get_store(fake_app)
    assert store.claim_run(KEY, started("t-1", at=100.0)).granted
    assert not store.claim_run(KEY, started("t-1", at=100.0 + 86400 * 365)).granted


def test_without_a_history_nothing_is_claimed_nor_recorded_and_every_delivery_runs(fake_app):
    store = get_store(fake_app)
    store.conf.history_size = 0
    assert store.claim_run(KEY, started("t-1")).granted and store.claim_run(KEY, started("t-1")).granted
    assert store.client.keys("*") == []


def test_rerun_interrupted_after_is_a_number_of_seconds_checked_when_the_settings_are_read():
    from redbeat.config import ConfigurationError, ensure_conf

    assert ensure_conf(make_app("redis://h/0", redbeat_rerun_interrupted_after="600")).rerun_interrupted_after == 600
    with pytest.raises(ConfigurationError, match="redbeat_rerun_interrupted_after must be a number of seconds"):
        ensure_conf(make_app("redis://h/0", redbeat_rerun_interrupted_after=-1))


# -- the end, with the counts --------------------------------------------------------------------

def test_the_end_of_a_run_counts_its_outcome_and_duration_and_a_failure_stays_failing_until_a_success(fake_app):
    store = get_store(fake_app)
    store.record_run_end(KEY, RunEvent("t-1", RunEventKind.FAILED.value, 200.0, exception="ValueError",
                                       duration=0.03))
    store.record_run_end("redbeat:other", RunEvent("t-2", RunEventKind.RETRIED.value, 201.0, duration=7200.0))
    store.record_run_end("redbeat:other", RunEvent("t-3", RunEventKind.REVOKED.value, 202.0))
    assert store.client.zrange("redbeat::failing", 0, -1, withscores=True) == [(KEY.encode(), 200.0)]
    read = read_counts(store.client.hgetall("redbeat::run-outcomes"))
    assert {kind: n for kind, n in read.outcomes.items() if n} == {"failed": 1, "retried": 1, "revoked": 1}
    assert (read.duration_count, read.duration_sum) == (2, pytest.approx(7200.03))
    buckets = dict(read.buckets)  # cumulative: 0.03 s counts from the 0.05 bucket on, 7200 s in the last only
    assert (buckets[0.01], buckets[0.05], buckets[3600.0], buckets[10800.0]) == (0, 1, 1, 2)
    store.record_run_end(KEY, RunEvent("t-4", RunEventKind.SUCCEEDED.value, 300.0, duration=4.0))
    assert store.client.zcard("redbeat::failing") == 0
    assert [RunEvent.from_json(raw).event for raw in store.worker_events(KEY)] == ["succeeded", "failed"]


def test_an_events_list_of_another_type_loses_the_event_not_the_counts_and_says_so(fake_app):
    store = get_store(fake_app)
    store.client.set(EVENTS, "someone else's")
    with pytest.raises(WrongTypeError, match="is a string, not a list"):
        store.record_run_end(KEY, RunEvent("t-1", RunEventKind.SUCCEEDED.value, 200.0, duration=1.0))
    assert counts(fake_app)["succeeded"] == 1


# -- the recorder and the tasks' bodies ---------------------------------------------------------

def request(task_id: str, **headers) -> SimpleNamespace:
    return SimpleNamespace(id=task_id, hostname="celery@w1", retries=0, **headers)


def test_the_recorder_refuses_a_duplicate_and_records_nothing_of_its_ignored_end(fake_app, caplog):
    recorder = EventRecorder()
    task = SimpleNamespace(app=fake_app, name="tasks.nightly",
                           request=request("t-1", redbeat_key=KEY, redbeat_scheduled=99.0))
    assert recorder.claim(task)
    with caplog.at_level("INFO", logger="redbeat.worker"):
        assert not recorder.claim(task)
    recorder.finished(task, "t-1", "IGNORED", DuplicateRun())
    assert [RunEvent.from_json(raw).event for raw in get_store(fake_app).worker_events(KEY)] == ["started"]
    assert "tasks.nightly[t-1] not executed: this run already started at " in caplog.text
    recorder.finished(task, "t-1", "SUCCESS", None)
    assert counts(fake_app)["succeeded"] == 1 and counts(fake_app)["duplicate"] == 1


def test_a_claim_that_cannot_be_made_lets_the_run_execute():
    app = make_app("redis://127.0.0.1:1/0", redbeat_redis_options={"socket_connect_timeout": 0.2})
    task = SimpleNamespace(app=app, name="tasks.nightly", request=request("t-1", redbeat_key=KEY))
    assert EventRecorder().claim(task)


def test_a_wrapped_body_runs_only_when_claimed_and_tasks_are_wrapped_once_with_their_tracers_rebuilt():
    app = make_app(None)
    ran = []

    @app.task(name="tasks.body")
    def body(x):
        ran.append(x)
        return x * 2

    answers = iter([True, False])
    body.__trace__ = "built before"
    assert "tasks.body" in claim_before_running(app, lambda task: next(answers), "celery@w1")
    assert callable(body.__trace__) and body.__trace__ != "built before"
    assert claim_before_running(app, lambda task: False) == []  # already wrapped
    assert body.run(2) == 4
    with pytest.raises(DuplicateRun):
        body.run(3)
    assert ran == [2] and body.run.__name__ == "body"
    assert claiming(body, lambda: "ran", lambda task: True)() == "ran"


# -- real workers --------------------------------------------------------------------------------

def start_worker(beats: Processes, name: str, pool: str) -> None:
    beats.start(name, "worker", "-P", pool, "-c", "2", "-n", f"{name}@%h", "-l", "info", "--without-gossip",
                "--without-mingle", "--without-heartbeat")
    wait_for(lambda: "ready." in beats.log(name), timeout=30, message=f"{name} ready")


def deliver(redis_server, task: str, args: list, task_id: str) -> None:
    """Publish a run of ``redbeat:once`` as beat does (its task id and headers)."""
    sender = make_app(None, broker_url=redis_server.url(1))
    sender.send_task(task, args, task_id=task_id, headers={"redbeat_key": "redbeat:once",
                                                           "redbeat_scheduled": 1796270400.0})


def executions(redis_server, label: str) -> int:
    return redis_server.client(2).lrange("e2e:ran", 0, -1).count(label)


def outcomes(schedule_server) -> dict[str, int]:
    return read_counts(schedule_server.client(0).hgetall("redbeat::run-outcomes")).outcomes


def events(schedule_server) -> list[RunEvent]:
    return [RunEvent.from_json(raw) for raw in schedule_server.client(0).lrange("redbeat::worker-events:once", 0, -1)]


def broker_empty(redis_server) -> bool:
    broker = redis_server.client(1)
    return broker.llen("celery") == 0 and broker.hlen("unacked") == 0


@pytest.fixture
def workers(beats: Processes, redis_server) -> Processes:
    beats.env["E2E_IMPORTS"] = "redbeat.worker"
    redis_server.client(1).flushdb()
    redis_server.client(2).delete("e2e:ran")
    return beats


@pytest.mark.e2e
@pytest.mark.parametrize("acks_late", [False, True], ids=["acks-early", "acks-late"])
@pytest.mark.parametrize("pool", ["solo", "threads", "prefork", "prefork-spawn"])
def test_a_run_delivered_twice_executes_once_whatever_the_pool_and_acks(workers, schedule_server, redis_server,
                                                                       pool, acks_late):
    """prefork-spawn: pool processes that import the app afresh, and build their tracers
    before the claim can wrap the tasks (it builds them again)."""
    workers.env["E2E_ACKS_LATE"] = "1" if acks_late else "0"
    workers.env["E2E_START_METHOD"] = "spawn" if pool == "prefork-spawn" else "fork"
    start_worker(workers, "worker", pool.removesuffix("-spawn"))
    label = f"twice-{pool}-{acks_late}"
    for _ in range(2):
        deliver(redis_server, "e2e_app.record", [label], "once-run-1")
    wait_for(lambda: outcomes(schedule_server)["duplicate"] == 1 and outcomes(schedule_server)["succeeded"] == 1,
             timeout=30, message="the run and its duplicate")
    wait_for(lambda: broker_empty(redis_server), timeout=30, message="both messages acknowledged")
    assert executions(redis_server, label) == 1
    assert [event.event for event in events(schedule_server)] == ["succeeded", "started"]
    assert "e2e_app.record[once-run-1] not executed: this run already started at " in workers.log("worker")


@pytest.mark.e2e
def test_a_run_delivered_again_while_it_runs_in_another_process_is_not_executed(workers, schedule_server,
                                                                                redis_server):
    start_worker(workers, "worker", "prefork")
    deliver(redis_server, "e2e_app.record_slowly", ["slow", 3], "once-run-2")
    wait_for(lambda: executions(redis_server, "slow") == 1, timeout=30, message="the run to start")
    deliver(redis_server, "e2e_app.record_slowly", ["slow", 3], "once-run-2")
    wait_for(lambda: outcomes(schedule_server)["duplicate"] == 1, timeout=30, message="the duplicate")
    assert [event.event for event in events(schedule_server)] == ["started"]  # the first still runs
    wait_for(lambda: outcomes(schedule_server)["succeeded"] == 1, timeout=30, message="the run's end")
    assert executions(redis_server, "slow") == 1


# A broker that gives an unacknowledged message back one second after it was delivered.
REDELIVER_SOON = json.dumps({"visibility_timeout": 1, "unacked_restore_interval": 1, "unacked_restore_throttle": 1})


@pytest.mark.e2e
@pytest.mark.parametrize("rerun_after, runs", [(None, 1), (1, 2)], ids=["at-most-once", "rerun-interrupted"])
def test_a_run_whose_worker_was_killed_mid_task_is_redelivered_and_runs_again_only_if_configured(
        workers, schedule_server, redis_server, rerun_after, runs):
    workers.env.update(E2E_ACKS_LATE="1", E2E_BROKER_OPTIONS=REDELIVER_SOON,
                       E2E_RERUN_AFTER=json.dumps(rerun_after))
    start_worker(workers, "doomed", "solo")
    deliver(redis_server, "e2e_app.record_slowly", ["interrupted", 4], "once-run-3")
    wait_for(lambda: executions(redis_server, "interrupted") == 1, timeout=30, message="the run to start")
    workers.stop("doomed", signal.SIGKILL)

    start_worker(workers, "next", "solo")
    if runs == 1:
        wait_for(lambda: outcomes(schedule_server)["duplicate"] >= 1, timeout=30, message="the redelivery refused")
        wait_for(lambda: broker_empty(redis_server), timeout=30, message="the redelivery acknowledged")
        assert [event.event for event in events(schedule_server)] == ["started"]  # running for good
    else:
        wait_for(lambda: outcomes(schedule_server)["succeeded"] == 1, timeout=30, message="the run executed again")
        assert [event.event for event in events(schedule_server)] == ["succeeded", "started", "started"]
    assert executions(redis_server, "interrupted") == runs

