"""Publish failures classified: a run that can never be published is given up on its first
attempt, with its reason in its history, its entry's status, one log line and ``show``;
a broker that is down still gets bounded retries (test_scheduler.py, test_faults.py).

Unit tests of ``failures.classify`` and of the publisher (fakes, as in test_publisher.py);
integration tests with an in-process beat ticking against the real redis-server; one
end-to-end test with a real ``celery beat`` process."""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery
from celery.beat import SchedulingError
from celery.exceptions import reraise
from click.testing import CliRunner
from conftest import entry_missing_its_argument, published, raw_entry, start_beat, tick_until, wait_for
from kombu.exceptions import EncodeError
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.serialization import dumps as kombu_dumps
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from test_publisher import NOW, publisher_for, run_of

from redbeat import RedBeatScheduler
from redbeat.admin import entries
from redbeat.cli import redbeat
from redbeat.decoder import meta_json
from redbeat.failures import MAX_REASON_LENGTH, FailureKind, classify
from redbeat.outcomes import Unpublished
from redbeat.records import LastFailure, OutcomeKind, Status

GAVE_UP = "gave up publishing"


def raised(error: BaseException, wrapper: type[BaseException] | None = None) -> BaseException:
    """``error`` as raised, optionally wrapped while handling it, as kombu wraps errors."""
    try:
        try:
            raise error
        except BaseException as exc:
            if wrapper is None:
                raise
            raise wrapper(str(exc))  # noqa: B904 (the original stays its __context__, as in kombu)
    except BaseException as exc:
        return exc


TYPED = Celery("classify", set_as_current=False)


@TYPED.task(name="needs.two")
def needs_two(x, y):
    return x + y


def argument_check_error() -> BaseException:
    """What Celery's beat raises for an entry without its task's required argument."""
    try:
        try:
            needs_two.apply_async((1,))
        except TypeError as exc:
            reraise(SchedulingError, SchedulingError(f"Couldn't apply scheduled task x: {exc}"), sys.exc_info()[2])
    except SchedulingError as exc:
        return exc
    raise AssertionError("Celery's argument check did not raise")


def encode_error() -> BaseException:
    try:
        kombu_dumps({"a set": {1, 2}}, serializer="json")
    except EncodeError as exc:
        return exc
    raise AssertionError("kombu encoded a set as JSON")


# -- the classifier ------------------------------------------------------------------------

@pytest.mark.parametrize("error, kind, words", [
    (argument_check_error(), FailureKind.BAD_ARGUMENTS, "missing 1 required positional argument: 'y'"),
    (raised(TypeError("f() got an unexpected keyword argument 'z'")), FailureKind.BAD_ARGUMENTS, "'z'"),
    (raised(TypeError("f() takes 1 positional argument but 2 were given")), FailureKind.BAD_ARGUMENTS, "2 were"),
    (encode_error(), FailureKind.ENCODING, "EncodeError: Object of type set is not JSON serializable"),
    (raised(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")),
     FailureKind.REFUSED_BY_BROKER, "WRONGTYPE"),
    (raised(ResponseError("NOPERM this user has no permissions to access the 'celery' key")),
     FailureKind.REFUSED_BY_BROKER, "NOPERM"),
    # kombu wraps what the broker's client raised: a refusal inside stays a refusal.
    (raised(ResponseError("WRONGTYPE wrong kind"), KombuOperationalError), FailureKind.REFUSED_BY_BROKER, "WRONGTYPE"),
    # Transient: the broker is down or slow, or refuses for a while only.
    (raised(RedisConnectionError("Error 111 connecting to localhost:6379. Connection refused.")),
     FailureKind.TRANSIENT, "Connection refused"),
    (raised(RedisTimeoutError("Timeout reading from socket")), FailureKind.TRANSIENT, "Timeout"),
    (raised(socket.timeout("timed out")), FailureKind.TRANSIENT, "timed out"),
    (raised(KombuOperationalError("connection lost")), FailureKind.TRANSIENT, "connection lost"),
    (raised(ConnectionResetError(104, "reset")), FailureKind.TRANSIENT, "reset"),
    (raised(ResponseError("OOM command not allowed when used memory > 'maxmemory'.")), FailureKind.TRANSIENT, "OOM"),
    (raised(ReadOnlyError("READONLY You can't write against a read only replica.")), FailureKind.TRANSIENT,
     "READONLY"),
    (raised(ResponseError("LOADING Redis is loading the dataset in memory")), FailureKind.TRANSIENT, "LOADING"),
    # The words redis-py puts around the answer to a command of a pipeline (kombu's batches).
    (raised(ResponseError("Command # 1 (LPUSH celery) of pipeline caused error: OOM command not allowed")),
     FailureKind.TRANSIENT, "OOM"),
    (raised(ResponseError("Command # 1 (LLEN q) of pipeline caused error: WRONGTYPE Operation against a key")),
     FailureKind.REFUSED_BY_BROKER, "WRONGTYPE"),
    (raised(ResponseError("BUSYGROUP Consumer Group name already exists")), FailureKind.REFUSED_BY_BROKER,
     "BUSYGROUP"),
    # Unknown errors keep the bounded retries.
    (raised(ValueError("something odd")), FailureKind.TRANSIENT, "ValueError: something odd"),
    (raised(TypeError("unsupported operand type(s) for +: 'int' and 'str'")), FailureKind.TRANSIENT,
     "unsupported operand"),
    (raised(RuntimeError()), FailureKind.TRANSIENT, "RuntimeError"),
])
def test_each_publish_error_gets_its_class_and_its_text(error, kind, words):
    failure = classify(error)
    assert failure.kind is kind
    assert failure.permanent == (kind is not FailureKind.TRANSIENT)
    assert words in failure.error
    assert failure.reason == f"{kind.value}: {failure.error}"


def test_a_reason_is_one_printable_bounded_line_without_urls():
    failure = classify(raised(ResponseError("WRONGTYPE from redis://:s3cret@broker:6379/0\n\x1b[31mred " + "x" * 999)))
    assert failure.kind is FailureKind.REFUSED_BY_BROKER
    assert "s3cret" not in failure.error and "redis://" not in failure.error and "<url>" in failure.error
    assert "\n" not in failure.error and "\x1b" not in failure.error and "\\n" in failure.error
    assert len(failure.error) == MAX_REASON_LENGTH and failure.error.endswith("...")


# -- the publisher, with a fake send -------------------------------------------------------

def test_a_run_that_can_never_be_published_is_given_up_on_its_first_attempt_with_one_log_line(caplog):
    sent = []

    def send(entry, run):
        sent.append(run.task_id)
        return argument_check_error()
    publisher = publisher_for(send=send)
    runs = [run_of(number) for number in range(3)]
    with caplog.at_level(logging.ERROR, logger="celery.beat"):
        assert publisher.publish([(None, run) for run in runs], renewed_at=0.0) == set()
    assert sent == ["t0", "t1", "t2"]  # each tried once, none retried
    assert publisher.store.retried == []
    assert [o.outcome for o in publisher.outcomes.unrecorded] == [OutcomeKind.GIVEN_UP] * 3
    reason = publisher.outcomes.unrecorded[0].reason
    assert reason.startswith("bad-arguments: TypeError: ") and "required positional argument: 'y'" in reason
    assert all(run.attempts == 1 for run in runs)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and GAVE_UP + " 3 run(s) of redbeat:e, not retried: bad-arguments" in lines[0]
    counted = publisher.outcomes.uncounted["redbeat:e"]
    assert counted.given_up == 3 and counted.last_failure == LastFailure(NOW, "bad-arguments", reason)


def test_a_transient_failure_is_still_retried_and_logged_per_run(caplog):
    publisher = publisher_for(send=lambda entry, run: raised(ValueError("odd")))
    with caplog.at_level(logging.ERROR, logger="celery.beat"):
        publisher.publish([(None, run_of(0))], renewed_at=0.0)
    assert [run.task_id for run in publisher.store.retried] == ["t0"]
    assert publisher.outcomes.unrecorded == [] and publisher.outcomes.uncounted == {}
    assert "could not publish redbeat:e (task id t0): ValueError: odd" in caplog.text and GAVE_UP not in caplog.text


def test_a_buffered_batch_of_one_run_refused_by_the_broker_gives_that_run_up():
    publisher = publisher_for(send=lambda entry, run: None)

    class Refusing:
        def buffers(self):
            return True

        def batch(self):
            class Flush:
                def __enter__(self):
                    return self

                def __exit__(self, *exc_info):
                    if exc_info[0] is None:  # the pipeline's answer at the end of the batch
                        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
            return Flush()
    publisher.broker = Refusing()
    assert publisher.publish([(None, run_of(0, attempts=1))], renewed_at=0.0) == set()
    [given_up] = publisher.outcomes.unrecorded
    assert given_up.reason.startswith("refused-by-broker: ResponseError: WRONGTYPE")
    assert publisher.store.retried == []


# -- the status record ---------------------------------------------------------------------

def test_status_keeps_the_counts_of_runs_not_published_and_reads_old_records():
    failure = LastFailure(1.7e9, "encoding", "encoding: EncodeError: no")
    status = Status(missed=1, given_up=2, last_failure=failure, missed_in_flight=1)
    assert Status.from_json(status.to_json()) == status
    assert json.loads(status.to_json())["last_failure"] == {"at": 1.7e9, "class": "encoding",
                                                              "reason": "encoding: EncodeError: no"}
    # Records written before these fields, and odd ones, read as none given up.
    assert Status.from_json(b'{"missed": 2}') == Status(missed=2)
    assert "given_up" not in Status(missed=2).to_json() and "last_failure" not in Status().to_json()
    for odd in ('"x"', '{"at": "now", "class": "c", "reason": "r"}', '{"at": 1, "class": 2, "reason": "r"}'):
        assert Status.from_json(f'{{"last_failure": {odd}}}').last_failure is None


def test_counting_adds_to_the_status_as_read():
    old = Status(missed=3, last_missed_at=5.0, given_up=1, missed_in_flight=1)
    failure = LastFailure(9.0, "bad-arguments", "why")
    changes = Unpublished(missed=2, last_missed_at=7.0, given_up=4, last_failure=failure).status_changes(old)
    assert changes == {"missed": 5, "missed_in_flight": 3, "last_missed_at": 7.0, "given_up": 5,
                       "last_failure": failure}
    assert Unpublished().status_changes(old) == {}


# -- an in-process beat against the real redis-server ---------------------------------------

@pytest.fixture
def app_with_typed_task(app):
    @app.task(name="tests.needs_two", shared=False)  # not handed to every later app
    def needs_two(x, y):
        return x + y
    return app


def history(schedule_redis, name):
    return [json.loads(r) for r in schedule_redis.lrange(f"redbeat::history:{name}", 0, -1)]


def test_beat_gives_up_a_run_missing_an_argument_at_once_and_says_why_everywhere(
        app_with_typed_task, schedule_redis, broker_redis, caplog, redis_url):
    raw_entry(schedule_redis, "needy", task="tests.needs_two")  # args [7]: y is missing
    raw_entry(schedule_redis, "fine", task="tests.needs_two", args=[1, 2])
    # Five slots of one entry due in one tick (catch-up "all"): one log line for all five.
    last = datetime.now(timezone.utc) - timedelta(seconds=5.5)
    raw_entry(schedule_redis, "many", every=1, task="tests.needs_two", catch_up="all")
    schedule_redis.hset("redbeat:many", "meta", meta_json(last, 0))
    scheduler = RedBeatScheduler(app=app_with_typed_task)
    try:
        with caplog.at_level(logging.INFO, logger="celery.beat"):
            tick_until(scheduler, lambda: history(schedule_redis, "needy") and history(schedule_redis, "many"),
                       message="the runs given up")
    finally:
        scheduler.close()
    assert "could not publish" not in caplog.text
    assert [m["task"] for m in published(broker_redis)] == ["tests.needs_two"]  # only "fine"
    assert schedule_redis.hlen("redbeat::inflight") == 0

    [record] = history(schedule_redis, "needy")
    assert record["outcome"] == "given-up"
    assert record["reason"].startswith("bad-arguments: TypeError: ")
    assert "required positional argument: 'y'" in record["reason"]
    status = Status.from_json(schedule_redis.hget("redbeat:needy", "status"))
    assert status.given_up == 1
    assert status.last_failure.kind == "bad-arguments" and status.last_failure.reason == record["reason"]

    many = len(history(schedule_redis, "many"))
    assert many >= 4 and all(r["outcome"] == "given-up" for r in history(schedule_redis, "many"))
    assert Status.from_json(schedule_redis.hget("redbeat:many", "status")).given_up == many
    given_up_lines = [r.getMessage() for r in caplog.records if GAVE_UP in r.getMessage()]
    assert [line for line in given_up_lines if "redbeat:many" in line] == [
        f"beat: {GAVE_UP} {many} run(s) of redbeat:many, not retried: {history(schedule_redis, 'many')[0]['reason']}"]
    assert len([line for line in given_up_lines if "redbeat:needy" in line]) == 1

    summaries = {view.name: view.summary() for view in entries(app_with_typed_task)}
    assert summaries["needy"]["total_run_count"] == 1
    assert summaries["needy"]["published"] == 0 and summaries["needy"]["given_up"] == 1
    assert summaries["fine"]["published"] == 1 and summaries["fine"]["given_up"] == 0
    assert summaries["needy"]["last_failure"]["class"] == "bad-arguments"

    runner = CliRunner()
    shown = runner.invoke(redbeat, ["--redis-url", redis_url, "show", "needy"], catch_exceptions=False).output
    assert "given-up: bad-arguments: TypeError: " in shown  # the history's reason
    assert "last_failure: bad-arguments: TypeError: " in shown and "given_up: 1" in shown
    listed = runner.invoke(redbeat, ["--redis-url", redis_url, "list"], catch_exceptions=False).output
    row = next(line for line in listed.splitlines() if line.startswith("needy "))
    assert "0 (1 given up)" in row
    as_json = json.loads(runner.invoke(redbeat, ["--redis-url", redis_url, "list", "--json"]).output)
    assert {item["name"]: (item["published"], item["given_up"]) for item in as_json}["needy"] == (0, 1)


def test_published_leaves_out_runs_waiting_in_flight(app_with_typed_task, schedule_redis, redis_url):
    raw_entry(schedule_redis, "waiting", task="tests.needs_two", args=[1, 2])
    schedule_redis.hset("redbeat:waiting", "meta", json.dumps({"last_run_at": None, "total_run_count": 3}))
    schedule_redis.hset("redbeat:waiting", "status", json.dumps({"given_up": 1}))
    run = run_of(0)
    run.key = "redbeat:waiting"
    schedule_redis.hset("redbeat::inflight", run.task_id, run.to_json())
    listed = json.loads(CliRunner().invoke(redbeat, ["--redis-url", redis_url, "list", "--json"]).output)
    [item] = listed
    assert (item["total_run_count"], item["published"], item["given_up"], item["in_flight"]) == (3, 1, 1, 1)


# -- a real celery beat -------------------------------------------------------------------

def test_a_real_beat_gives_up_a_run_without_its_argument_once_and_show_says_why(beats, schedule_server):
    schedule = schedule_server.client()
    entry_missing_its_argument(schedule)
    start_beat(beats, "beat")
    wait_for(lambda: schedule.llen("redbeat::history:no-label") == 1, timeout=30, message="the run given up")
    wait_for(lambda: "given_up" in (schedule.hget("redbeat:no-label", "status") or ""), timeout=10,
             message="the status counting it")
    beats.stop("beat")
    [record] = [json.loads(r) for r in schedule.lrange("redbeat::history:no-label", 0, -1)]
    assert record["outcome"] == "given-up" and record["reason"].startswith("bad-arguments: TypeError: ")
    log = beats.log("beat")
    assert log.count(GAVE_UP) == 1 and "could not publish" not in log
    shown = CliRunner().invoke(redbeat, ["--redis-url", schedule_server.url(0), "show", "no-label"]).output
    assert "last_failure: bad-arguments: TypeError: " in shown
