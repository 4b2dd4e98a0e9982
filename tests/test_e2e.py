"""End to end: real `celery beat -S redbeat` and `celery worker` processes, a real
redis-server, and entries written with the real redis-cli."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zoneinfo
from datetime import datetime, timedelta, timezone

import pytest
from conftest import ROOT, Processes, published, wait_for
from tzfile import write_zone

pytestmark = pytest.mark.e2e

RAW = {"name": "raw", "task": "e2e_app.record", "args": ["raw"],
       "schedule": {"__type__": "interval", "every": 1}}
DISABLED = {"name": "disabled", "task": "e2e_app.record", "args": ["disabled"], "enabled": False,
            "schedule": {"__type__": "interval", "every": 1}}


@pytest.fixture
def celery_processes(tmp_path, redis_server, redis_url, project_env):
    env = dict(project_env,
               E2E_REDBEAT_URL=redis_server.url(0),
               E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2),
               PYTHONUNBUFFERED="1")
    with Processes(tmp_path, env) as processes:
        yield processes


def redis_cli(redis_server, *args: str) -> None:
    subprocess.run([shutil.which("redis-cli"), "-p", str(redis_server.port), "-n", "0", *args],
                   check=True, capture_output=True, timeout=10)


def test_beat_and_worker_run_static_and_raw_entries_but_not_disabled_ones(celery_processes, redis_server):
    ran = redis_server.client(2)
    celery_processes.start("worker", "worker", "-P", "solo", "-l", "info",
                           "--without-gossip", "--without-mingle", "--without-heartbeat")
    celery_processes.start("beat", "beat", "-S", "redbeat", "-l", "info", "--enable-remote-control")

    wait_for(lambda: "static" in ran.lrange("e2e:ran", 0, -1), timeout=30, message="the static entry to run")

    redis_cli(redis_server, "HSET", "redbeat:raw", "definition", json.dumps(RAW))
    redis_cli(redis_server, "HSET", "redbeat:disabled", "definition", json.dumps(DISABLED))
    redis_cli(redis_server, "ZADD", "redbeat::schedule", "0", "redbeat:raw", "0", "redbeat:disabled")
    wait_for(lambda: ran.lrange("e2e:ran", 0, -1).count("raw") >= 3, timeout=20,
             message="the redis-cli entry to run three times")
    assert "disabled" not in ran.lrange("e2e:ran", 0, -1)
    assert redis_server.client(0).zscore("redbeat::schedule", "redbeat:disabled") > 0

    # Celery 5.7's beat remote control answers a ping while beat ticks.
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "e2e_app", "inspect", "ping", "-t", "5",
         "-d", f"celerybeat@{socket.gethostname()}"],
        cwd=celery_processes.tmp_path, env=celery_processes.env, capture_output=True, text=True, timeout=60,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "pong" in ping.stdout

    banner = celery_processes.log("beat")
    assert f". redis -> redis://127.0.0.1:{redis_server.port}/0" in banner
    assert ". lock -> `redbeat::lock` 3.00 seconds (3s)" in banner


def test_standby_beat_takes_over_when_the_active_one_stops(celery_processes, redis_server):
    ran = redis_server.client(2)
    celery_processes.start("worker", "worker", "-P", "solo", "-l", "info",
                           "--without-gossip", "--without-mingle", "--without-heartbeat")
    celery_processes.start("beat-a", "beat", "-S", "redbeat", "-l", "info")
    wait_for(lambda: "Acquired lock" in celery_processes.log("beat-a"), timeout=30, message="beat A active")
    celery_processes.start("beat-b", "beat", "-S", "redbeat.RedBeatScheduler", "-l", "info")
    wait_for(lambda: "standing by" in celery_processes.log("beat-b"), timeout=30, message="beat B on standby")
    wait_for(lambda: ran.llen("e2e:ran") >= 2, timeout=20, message="runs under beat A")
    assert "Sending due task" not in celery_processes.log("beat-b")

    celery_processes.stop("beat-a")
    assert "Released lock" in celery_processes.log("beat-a")
    wait_for(lambda: "Acquired lock" in celery_processes.log("beat-b"), timeout=5,
             message="beat B taking over on a clean shutdown")
    count = ran.llen("e2e:ran")
    wait_for(lambda: ran.llen("e2e:ran") >= count + 2, timeout=20, message="runs under beat B")


def test_the_short_alias_and_the_package_are_installed():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="celery.beat_schedulers")}
    assert names.get("redbeat") == "redbeat.schedulers:RedBeatScheduler"
    assert (ROOT / "redbeat" / "__init__.py").exists()


def test_beat_lives_through_a_spring_forward_in_a_zone_of_its_own(celery_processes, redis_server, tmp_path):
    """A made-up zone springs forward an hour a few seconds from now: an entry at a wall
    time inside the skipped hour runs once, at the first valid instant (the change)."""
    change = int(time.time()) + 10
    write_zone(tmp_path / "zones" / "Test" / "Shift", [(change, 3600), (change + 7 * 86400, 0)])
    celery_processes.env["PYTHONTZPATH"] = os.pathsep.join([str(tmp_path / "zones"), *zoneinfo.TZPATH])
    in_gap = datetime.fromtimestamp(change, timezone.utc) + timedelta(minutes=30)  # wall time that never happens
    now = datetime.now(timezone.utc)
    definition = {"name": "in-gap", "task": "e2e_app.record", "args": ["in-gap"], "schedule": {
        "__type__": "crontab", "minute": str(in_gap.minute), "hour": str(in_gap.hour), "timezone": "Test/Shift"}}
    meta = {"last_run_at": {"__type__": "datetime", "year": now.year, "month": now.month, "day": now.day,
                            "hour": now.hour, "minute": now.minute, "second": now.second, "timezone": "UTC"},
            "total_run_count": 0}
    redis_cli(redis_server, "HSET", "redbeat:in-gap", "definition", json.dumps(definition), "meta", json.dumps(meta))
    redis_cli(redis_server, "ZADD", "redbeat::schedule", "0", "redbeat:in-gap")
    celery_processes.start("beat", "beat", "-S", "redbeat", "-l", "info")
    broker = redis_server.client(1)

    def runs():
        return [m for m in published(broker) if m["task"] == "e2e_app.record"
                and m["headers"]["redbeat_key"] == "redbeat:in-gap"]
    wait_for(runs, timeout=30, message="the run at the spring-forward change")
    [run] = runs()
    assert run["headers"]["redbeat_scheduled"] == change
    score = redis_server.client(0).zscore("redbeat::schedule", "redbeat:in-gap")
    # Tomorrow, when that wall time exists (an hour earlier in UTC: the zone is an hour ahead now).
    assert score == in_gap.replace(second=0).timestamp() + 86400 - 3600
    assert time.time() < change + 5
    assert len(runs()) == 1
