"""Beat's log lines about entries carry structured fields (``extra=``: docs/logging.rst), and
no password reaches a log line, the banner or a command's output.

Unit tests of ``redbeat.logfields``; an in-process beat ticking against the real
redis-server, its records read with ``caplog``; and a real ``celery beat`` process on a
redis-server that asks for a password, with the ``redbeat`` command run against it."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis
from celery import Celery
from conftest import Processes, published, raw_entry, tick_until, wait_for
from kombu.exceptions import OperationalError as KombuOperationalError
from test_probes import PasswordServer, password_server  # noqa: F401 (a fixture, used by name)
from test_publisher import NOW, publisher_for, run_of

from redbeat.broker import Broker
from redbeat.config import display_url, without_urls
from redbeat.decoder import meta_json
from redbeat.entry import RedBeatSchedulerEntry
from redbeat.health import TickHealth
from redbeat.logfields import FIELD_NAMES, log_fields, runs_fields
from redbeat.records import InFlight

SLOT = datetime(2026, 12, 3, 4, 0, tzinfo=timezone.utc).timestamp()


def run_at(scheduled: float, task_id: str = "t1", key: str = "redbeat:nightly") -> InFlight:
    return InFlight(task_id=task_id, key=key, scheduled=scheduled, claimed_at=scheduled, token="x",
                    retry_at=scheduled + 30)


# -- the fields ---------------------------------------------------------------------------------

def test_a_runs_fields_name_its_entry_task_slot_and_lateness_to_the_millisecond(fake_app):
    entry = RedBeatSchedulerEntry("nightly", "tasks.report", 3600, app=fake_app)
    fields = log_fields(entry, run=run_at(SLOT), now=SLOT + 1.23456)
    assert fields == {"entry_name": "nightly", "task_name": "tasks.report", "entry_key": "redbeat:nightly",
                      "task_id": "t1", "slot": "2026-12-03T04:00:00+00:00", "slot_timestamp": SLOT,
                      "lateness": 1.235}
    assert list(fields) == [name for name in FIELD_NAMES if name in fields]
    json.dumps(fields)  # what a JSON formatter writes as it is


def test_fields_unknown_for_a_line_are_left_out_not_written_as_none():
    assert log_fields() == {}
    assert log_fields(key="redbeat:gone") == {"entry_key": "redbeat:gone"}
    assert log_fields(run=run_at(SLOT)) == {"entry_key": "redbeat:nightly", "task_id": "t1",
                                            "slot": "2026-12-03T04:00:00+00:00", "slot_timestamp": SLOT}
    assert log_fields(count=3) == {"count": 3}
    assert None not in log_fields(name="n", key="k", slot=SLOT, now=SLOT, failure_class="encoding", count=1).values()


def test_names_and_keys_are_printable_as_in_the_message():
    fields = log_fields(name="evil\nname", key="redbeat:evil\x1b[2J")
    assert fields == {"entry_name": "evil\\nname", "entry_key": "redbeat:evil\\x1b[2J"}


def test_a_line_about_several_runs_of_one_entry_carries_their_count_and_the_newest_slot():
    runs = [run_at(SLOT - 60, "a"), run_at(SLOT, "b"), run_at(SLOT - 120, "c")]
    assert runs_fields(runs, now=SLOT + 2, failure_class="bad-arguments") == {
        "entry_key": "redbeat:nightly", "slot": "2026-12-03T04:00:00+00:00", "slot_timestamp": SLOT,
        "lateness": 2.0, "failure_class": "bad-arguments", "count": 3}
    # One run: its task id too.
    assert runs_fields(runs[:1])["task_id"] == "a"


def test_urls_in_an_error_text_are_masked_whole():
    text = "Cannot connect to redis://:hunter2@broker:6379/0 (amqp://user:pw@h//; also ok)"
    assert without_urls(text) == "Cannot connect to <url> (<url> also ok)"
    assert "hunter2" not in display_url("redis://:hunter2@h:1/0;redis://:hunter2@h2:1/0")


# -- error texts that hold a broker's URL ---------------------------------------------------------

BROKER_ERROR = "Error connecting to redis://:hunter2@broker.example:6379/0: Connection refused"


class FailingBatch:
    """A buffered batch whose end (the pipeline's flush) fails with a kombu error naming the broker's URL."""

    def buffers(self) -> bool:
        return True

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield
        raise KombuOperationalError(BROKER_ERROR)


def test_a_publish_error_is_logged_with_the_url_masked_and_its_failure_class(caplog):
    publisher = publisher_for(send=lambda entry, run: KombuOperationalError(BROKER_ERROR))
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        publisher.publish([(None, run_of(0))], renewed_at=0.0)
    [record] = records_with(caplog, "could not publish redbeat:e")
    assert record.failure_class == "transient" and record.task_id == "t0"
    assert record.lateness == pytest.approx(NOW - run_of(0).scheduled)
    publisher = publisher_for(send=lambda entry, run: None)
    publisher.broker = FailingBatch()
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        publisher.publish([(None, run_of(1)), (None, run_of(2))], renewed_at=0.0)
    [batch] = records_with(caplog, "could not publish a batch of 2 runs")
    assert batch.count == 2 and "<url>" in batch.getMessage()
    assert "hunter2" not in caplog.text


def test_the_brokers_connection_error_and_a_failed_tick_are_logged_without_the_url(caplog):
    def producer():
        raise KombuOperationalError(BROKER_ERROR)
    broker = Broker(Celery("masked", set_as_current=False), producer, lambda: lambda message: None, 1)
    health = TickHealth(lambda: NOW, display_url("redis://:hunter2@redis.example:6379/0"))
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        broker.prepare()
        health.failed(ValueError(BROKER_ERROR))
    assert "<url>" in caplog.text and "hunter2" not in caplog.text
    assert "hunter2" not in (health.failure or "")  # shown by redbeat status, from the heartbeat


# -- an in-process beat against the real redis-server -------------------------------------------

def records_with(caplog, words: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if words in record.getMessage()]


def test_a_published_runs_line_carries_its_entry_task_id_slot_and_lateness(scheduler_for, schedule_redis,
                                                                           broker_redis, caplog):
    raw_entry(schedule_redis, "reported")
    scheduler = scheduler_for()
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        tick_until(scheduler, lambda: published(broker_redis), message="the run published")
    [record] = records_with(caplog, "Sending due task reported")
    [message] = published(broker_redis)
    assert record.entry_name == "reported" and record.entry_key == "redbeat:reported"
    assert record.task_name == "tasks.raw" and record.task_id == message["id"]
    assert record.slot_timestamp == message["headers"]["redbeat_scheduled"]
    assert record.slot == datetime.fromtimestamp(record.slot_timestamp, timezone.utc).isoformat()
    assert 0 <= record.lateness < 10


def test_a_given_up_runs_line_carries_its_failure_class(app, scheduler_for, schedule_redis, caplog):
    @app.task(name="tests.needs_two", shared=False)  # not handed to every later app
    def needs_two(x, y):
        return x + y

    raw_entry(schedule_redis, "needy", task="tests.needs_two")  # args [7]: y is missing
    scheduler = scheduler_for()
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        tick_until(scheduler, lambda: records_with(caplog, "gave up publishing"), message="the run given up")
    [record] = records_with(caplog, "gave up publishing")
    assert record.failure_class == "bad-arguments" and record.count == 1
    assert record.entry_key == "redbeat:needy" and record.task_id and record.lateness >= 0
    assert record.slot_timestamp > 0


def test_a_missed_slots_line_carries_the_entry_the_newest_slot_missed_and_the_count(scheduler_for, schedule_redis,
                                                                                   caplog):
    raw_entry(schedule_redis, "behind", every=1, catch_up="once")
    schedule_redis.hset("redbeat:behind", "meta", meta_json(datetime.now(timezone.utc) - timedelta(seconds=5.5), 0))
    scheduler = scheduler_for()
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        tick_until(scheduler, lambda: records_with(caplog, "slot(s) (catch-up once)"), message="the missed slots")
    [record] = records_with(caplog, "slot(s) (catch-up once)")
    assert record.entry_name == "behind" and record.entry_key == "redbeat:behind"
    assert record.task_name == "tasks.raw" and record.count >= 3
    assert 1 <= record.lateness < 10 and record.slot.endswith("+00:00")
    assert not hasattr(record, "task_id")  # no run: left out


# -- no password anywhere: a real beat on a Redis that asks for one -----------------------------

SECRET = PasswordServer.PASSWORD
WRONG = "wrong-pw-0451"


def command(*args: str, url: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", url, *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_no_password_reaches_beats_logs_banner_or_the_commands_output(password_server, redis_server,  # noqa: F811
                                                                      project_env, tmp_path):
    port = password_server.port
    url = f"redis://:{SECRET}@127.0.0.1:{port}"
    broker = redis.Redis(port=port, password=SECRET, db=1)
    env = dict(project_env, E2E_REDBEAT_URL=f"{url}/0", E2E_BROKER_URL=f"{url}/1",
               E2E_RECORD_URL=redis_server.url(2), E2E_LOCK_TIMEOUT="2", PYTHONUNBUFFERED="1")
    with Processes(tmp_path, env) as beats:
        beats.start("good", "beat", "-S", "redbeat", "-l", "info")
        wait_for(lambda: broker.llen("celery") >= 1, timeout=30, message="a run published")
        beats.stop("good")  # releases the lock for the next one
        # The broker refuses this one's password: Celery's beat retries connecting before it starts the scheduler.
        beats.env = dict(env, E2E_BROKER_URL=f"redis://:{WRONG}@127.0.0.1:{port}/1")
        beats.start("bad-broker", "beat", "-S", "redbeat", "-l", "info")
        # And Redis refuses this one's: its ticks fail.
        beats.env = dict(env, E2E_REDBEAT_URL=f"redis://:{WRONG}@127.0.0.1:{port}/0")
        beats.start("bad-redis", "beat", "-S", "redbeat", "-l", "info")
        wait_for(lambda: "Connection error" in beats.log("bad-broker") and "unavailable" in beats.log("bad-redis"),
                 timeout=60, message="both failures logged")
        beats.stop("bad-broker")
        beats.stop("bad-redis")
        logs = {name: beats.log(name) for name in ("good", "bad-broker", "bad-redis")}
    assert "Sending due task static-every-second" in logs["good"]
    assert f"redis://:**@127.0.0.1:{port}/0" in logs["good"]  # the banner, masked
    outputs = [command(*args, url=f"{url}/0", env=project_env)
               for args in (["status"], ["doctor"], ["show", "static-every-second"], ["list"])]
    outputs.append(command("status", url=f"redis://:{WRONG}@127.0.0.1:{port}/0", env=project_env))
    outputs.append(command("list", url=f"redis://:{SECRET}@127.0.0.1:{port}/x", env=project_env))  # a bad URL
    assert "static-every-second" in outputs[2].stdout
    assert "refused the credentials" in outputs[4].stderr
    said = [*logs.values(), *(result.stdout + result.stderr for result in outputs)]
    leaks = [text for text in said if SECRET in text or WRONG in text]
    assert not leaks, leaks
