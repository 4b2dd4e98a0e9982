"""Beats standing by check in, so that `redbeat status` lists them and `redbeat liveness`
answers for each process, active or standby; a stopped standby leaves at once and a
killed one ages out. `status` is degraded while a run given up is recent."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from click.testing import CliRunner
from conftest import entry_missing_its_argument, make_app, start_beat, tick_until, wait_for
from topologies import ClusterSetup

from redbeat import admin
from redbeat.cli import redbeat
from redbeat.client import get_store
from redbeat.liveness import liveness
from redbeat.lock import BeatLock
from redbeat.records import GivenUpRun, Heartbeat, StandbyBeat
from redbeat.schedulers import RedBeatScheduler
from redbeat.standbys import STANDBY_KEEP_FOR

HEALTHY, UNHEALTHY, DEGRADED = 0, 1, 3
HOST = socket.gethostname()


def cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(redbeat, ["--redis-url", url, *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def status(url: str) -> dict:
    return json.loads(cli(url, "status", "--json")[1])


def standby(token: str = "h:1:t", last_check: float | None = None, within: float = 1.0) -> StandbyBeat:
    now = time.time() if last_check is None else last_check
    return StandbyBeat(token=token, host="h", pid=1, version="3", last_check=now, next_check_within=within,
                       since=now)


# -- the record ------------------------------------------------------------------------------

def test_a_standby_record_reads_back_and_junk_is_refused():
    record = standby()
    assert StandbyBeat.from_json(record.to_json()) == record
    for junk in ("[]", "{}", '{"token": 1}', "nope", json.dumps(json.loads(record.to_json()) | {"last_check": "x"})):
        with pytest.raises(ValueError):
            StandbyBeat.from_json(junk)


def test_a_standby_record_is_fresh_for_three_polls_and_a_second():
    record = standby(last_check=1000.0, within=2.0)
    assert record.fresh(1000.0 + 7.0) and not record.fresh(1000.0 + 7.01)


def test_the_heartbeat_keeps_the_runs_given_up():
    last = GivenUpRun(at=1000.0, key="redbeat:e", kind="bad-arguments", reason="TypeError: y")
    beat = Heartbeat(token="t", last_tick=1000.0, given_up=2, last_given_up=last)
    raw = beat.to_json()
    assert json.loads(raw)["last_given_up"] == {"at": 1000.0, "key": "redbeat:e", "class": "bad-arguments",
                                                "reason": "TypeError: y"}
    assert Heartbeat.from_json(raw)[0] == beat
    assert "given_up" not in Heartbeat(token="t", last_tick=1.0).to_json()  # as 3.0 wrote it


# -- the store ------------------------------------------------------------------------------

def test_a_check_in_prunes_old_records_and_a_check_out_removes_its_own(app, schedule_redis):
    store = get_store(app)
    now = time.time()
    schedule_redis.hset("redbeat::standbys", mapping={"old": standby("old", now - STANDBY_KEEP_FOR - 1).to_json(),
                                                       "junk": "not json"})
    assert store.check_in(standby("mine", now))
    assert set(schedule_redis.hkeys("redbeat::standbys")) == {"mine"}
    assert 0 < schedule_redis.pttl("redbeat::standbys") <= STANDBY_KEEP_FOR * 1000
    assert store.check_out("mine") and not store.check_out("mine")
    assert not schedule_redis.exists("redbeat::standbys")


def test_a_check_in_is_dated_by_redis_and_keeps_its_first_since(app, schedule_redis):
    store = get_store(app)
    redis_now = store.time()
    # A standby's host clock an hour off: Redis's clock dates the record anyway.
    assert store.check_in(standby("mine", redis_now - 3600))
    first = StandbyBeat.from_json(schedule_redis.hget("redbeat::standbys", "mine"))
    assert abs(first.last_check - redis_now) < 2 and first.since == first.last_check
    wait_for(lambda: store.time() > first.last_check + 0.01, message="Redis's clock moving on")
    assert store.check_in(standby("mine", redis_now + 3600))
    second = StandbyBeat.from_json(schedule_redis.hget("redbeat::standbys", "mine"))
    assert second.since == first.since and second.last_check > first.last_check
    store.check_out("mine")
    assert not schedule_redis.exists("redbeat::standbys")


def test_a_standbys_key_of_another_type_stops_no_beat_and_status_names_it(app, schedule_redis, redis_url):
    store = get_store(app)
    schedule_redis.set("redbeat::standbys", "someone's")
    assert not store.check_in(standby()) and not store.check_out("h:1:t")
    report = status(redis_url)
    assert report["standbys"] == []
    assert [w["key"] for w in report["wrong_types"]] == ["redbeat::standbys"]
    assert not report["wrong_types"][0]["stops_beat"]


def test_a_beat_standing_by_checks_in_and_checks_out_once_it_takes_the_lock(scheduler_for, schedule_redis):
    scheduler = scheduler_for(redbeat_lock_timeout=5)
    other = BeatLock(scheduler.store.client, "redbeat::lock", 5, "other:1:x")
    assert other.acquire()
    scheduler.tick()
    [raw] = schedule_redis.hvals("redbeat::standbys")
    record = StandbyBeat.from_json(raw)
    assert (record.host, record.pid, record.token) == (HOST, os.getpid(), scheduler._token)
    assert record.next_check_within == scheduler.ticker._standby_interval()
    other.release()
    tick_until(scheduler, lambda: scheduler.lock.held, message="the lock taken")
    assert not schedule_redis.exists("redbeat::standbys")


# -- status -----------------------------------------------------------------------------------

def heartbeat_with_given_up(schedule_redis, at: float) -> None:
    beat = Heartbeat(token="h:1:t", last_tick=at, host="h", pid=1, active_since=at - 60, given_up=3,
                     last_given_up=GivenUpRun(at, "redbeat:needy", "bad-arguments", "TypeError: missing y"))
    schedule_redis.set("redbeat::heartbeat", beat.to_json())


def test_status_is_degraded_while_the_last_run_given_up_is_recent(app, schedule_redis, redis_url):
    now = get_store(app).time()
    heartbeat_with_given_up(schedule_redis, now)
    code, output = cli(redis_url, "status")
    assert code == DEGRADED, output
    assert ("DEGRADED: 3 run(s) given up since beat became active, the last of redbeat:needy 0s ago "
            "(bad-arguments: TypeError: missing y); `redbeat doctor` explains each entry") in output
    recent = admin.beat_status(app, now=now + admin.GIVEN_UP_WINDOW)
    assert recent["runs_given_up"]["count"] == 3
    assert admin.beat_status(app, now=now + admin.GIVEN_UP_WINDOW + 1)["runs_given_up"] is None


# -- real beats ----------------------------------------------------------------------------

def pid_of(url: str, pid: int) -> tuple[int, str]:
    return cli(url, "liveness", "--pid", str(pid))


@pytest.mark.e2e
def test_status_lists_the_standby_and_it_leaves_when_stopped_or_killed(beats, schedule_server):
    url = schedule_server.url(0)
    active = start_beat(beats, "active")
    wait_for(lambda: (status(url)["lock_holder"] or {}).get("pid") == active.pid, timeout=30,
             message="the first beat active")
    waiting = start_beat(beats, "standby")
    wait_for(lambda: [s["pid"] for s in status(url)["standbys"]] == [waiting.pid], timeout=30,
             message="the standby listed")
    code, output = cli(url, "status")
    assert code == HEALTHY and f"standbys: {HOST} pid {waiting.pid} (checked " in output
    code, output = pid_of(url, active.pid)
    assert code == HEALTHY and output.startswith(f"active beat on {HOST} pid {active.pid}: last tick "), output
    code, output = pid_of(url, waiting.pid)
    assert code == HEALTHY and output.startswith(f"standby on {HOST} pid {waiting.pid}: last check "), output
    code, output = cli(url, "liveness")
    assert code == HEALTHY and len(output.splitlines()) == 2
    code, output = pid_of(url, 4_999_999)
    assert code == UNHEALTHY and output.startswith("no beat on "), output
    code, output = cli(url, "liveness", "--host", "elsewhere")
    assert code == UNHEALTHY and output.startswith("no beat on elsewhere:"), output

    # Stopped: it checks out as it closes.
    beats.stop("standby")
    assert status(url)["standbys"] == []
    assert pid_of(url, waiting.pid)[0] == UNHEALTHY

    # Killed: its record ages out after 3 polls (1 s each here) and a second.
    killed = start_beat(beats, "killed")
    wait_for(lambda: [s["pid"] for s in status(url)["standbys"]] == [killed.pid], timeout=30,
             message="the second standby listed")
    beats.stop("killed", signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: status(url)["standbys"] == [], timeout=15, message="the killed standby aged out")
    assert time.monotonic() - started < 3 * 1.0 + 1.0 + 2.0
    code, output = pid_of(url, killed.pid)
    assert code == UNHEALTHY and "stale (hung or killed)" in output, output
    assert cli(url, "liveness")[0] == HEALTHY  # the active beat on this host still lives


@pytest.mark.e2e
def test_a_real_beat_giving_up_a_run_makes_status_degraded(beats, schedule_server):
    schedule = schedule_server.client()
    entry_missing_its_argument(schedule)
    start_beat(beats, "beat")
    url = schedule_server.url(0)
    wait_for(lambda: cli(url, "status")[0] == DEGRADED, timeout=30, message="status degraded")
    report = status(url)
    assert report["runs_given_up"]["key"] == "redbeat:no-label"
    assert report["runs_given_up"]["class"] == "bad-arguments"
    assert report["degraded"][0].startswith("1 run(s) given up since beat became active, the last of "
                                            "redbeat:no-label ")
    code, output = cli(url, "doctor")
    assert "given-up" in output and "redbeat:no-label" in output


def test_a_standby_checks_in_and_is_seen_on_a_redis_cluster(tmp_path, redis_server, redis_url):
    cluster = ClusterSetup(tmp_path)
    app = make_app(cluster.url(), broker_url=redis_server.url(1), redbeat_key_prefix="{redbeat}:",
                   redbeat_lock_timeout=5)
    scheduler = RedBeatScheduler(app=app)
    try:
        other = BeatLock(scheduler.store.client, "{redbeat}::lock", 5, "other:1:x")
        assert other.acquire()
        scheduler.tick()
        assert [s["pid"] for s in admin.beat_status(app)["standbys"]] == [os.getpid()]
        report = liveness(app, HOST, os.getpid())
        assert report.alive and report.lines[0].startswith(f"standby on {HOST} pid {os.getpid()}: last check ")
    finally:
        scheduler.close()
        assert cluster.client().hlen("{redbeat}::standbys") == 0
        cluster.stop()
