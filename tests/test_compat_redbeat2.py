"""The drop-in promise, checked against the real celery-redbeat 2.4.2 installed
in a virtualenv of its own (cached in .cache/): what it wrote, we load and run;
what we write, it loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, schedule, solar
from conftest import ROOT
from dateutil.rrule import FR, MO, SU

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.schedules import rrule

OLD_VERSION = "2.4.2"
SCRIPT = ROOT / "tests" / "compat_redbeat2.py"


@pytest.fixture(scope="session")
def redbeat2_python() -> str:
    venv = ROOT / ".cache" / f"celery-redbeat-{OLD_VERSION}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"celery-redbeat=={OLD_VERSION}"],
                       check=True, timeout=900, stdin=subprocess.DEVNULL)
        done.write_text(OLD_VERSION)
    return str(python)


def run_old(python: str, redis_url: str, *args: str) -> object:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, str(SCRIPT), redis_url, *args], capture_output=True, text=True,
                            env=env, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_celery_redbeat_2_loads_every_kind_of_entry_we_write(redbeat2_python, app, redis_url):
    # An entry after a real dispatch by our scheduler, with the meta it wrote.
    app.conf.beat_schedule = {"static": {"task": "tasks.s", "schedule": 0.1}}
    scheduler = RedBeatScheduler(app=app)
    try:
        scheduler.tick()
        deadline = time.monotonic() + 10
        while RedBeatSchedulerEntry.from_name("static", app=app).total_run_count < 1:
            assert time.monotonic() < deadline, "our scheduler never dispatched"
            time.sleep(min(scheduler.tick(), 0.05))
    finally:
        scheduler.close()

    paris = ZoneInfo("Europe/Paris")
    entries = [
        RedBeatSchedulerEntry("interval", "tasks.i", schedule(timedelta(seconds=90)), args=[1, "x"],
                              kwargs={"a": True}, options={"queue": "q", "expires": 60}, app=app),
        RedBeatSchedulerEntry("relative", "tasks.r", schedule(timedelta(hours=1), relative=True), app=app),
        RedBeatSchedulerEntry("crontab", "tasks.c", crontab(minute="5", hour="2", day_of_week="mon"), app=app),
        RedBeatSchedulerEntry("rrule", "tasks.rr", rrule(
            "MONTHLY", dtstart=datetime(2026, 1, 1, 8, tzinfo=paris), byweekday=[MO(+1), SU(-1)],
            until=datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=-5))), byhour=[8]), app=app),
        RedBeatSchedulerEntry("disabled", "tasks.d", schedule(5), enabled=False, app=app),
    ]
    for entry in entries:
        entry.save()
    entries[0].reschedule(datetime(2026, 6, 1, 12, tzinfo=paris))
    entries[1].reschedule(datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=3))))
    entries[2].reschedule(datetime(2026, 6, 1, 12, tzinfo=timezone.utc))

    keys = [entry.key for entry in entries] + ["redbeat:static"]
    loaded = {item["name"]: item for item in run_old(redbeat2_python, redis_url, "read", *keys)}
    assert loaded["interval"]["args"] == [1, "x"]
    assert loaded["interval"]["options"] == {"queue": "q", "expires": 60}
    assert loaded["interval"]["last_run_at"] == "2026-06-01T12:00:00+02:00"
    assert loaded["relative"]["last_run_at"] == "2026-06-01T12:00:00+03:00"
    assert loaded["crontab"]["schedule"] == "crontab"
    assert loaded["rrule"]["schedule"] == "rrule"
    assert loaded["disabled"]["enabled"] is False
    assert loaded["static"]["total_run_count"] >= 1
    # 2.x rounds scores to whole seconds and reads its clock twice: allow it that.
    assert abs(loaded["rrule"]["score"] - RedBeatSchedulerEntry.from_name("rrule", app=app).score) <= 2


def test_entries_written_by_celery_redbeat_2_load_and_run(redbeat2_python, app, redis_url, broker_redis):
    keys = run_old(redbeat2_python, redis_url, "write")
    entries = {key: RedBeatSchedulerEntry.from_key(key, app=app) for key in keys}
    interval = entries["redbeat:v2-interval"]
    assert interval.schedule == schedule(timedelta(seconds=30))
    assert interval.schedule.relative is True
    assert interval.options == {"queue": "q"} and interval.kwargs == {"k": "v"}
    assert interval.last_run_at == datetime(2026, 2, 1, 11, tzinfo=timezone.utc)
    assert entries["redbeat:v2-crontab"].schedule == crontab(minute="*/5", hour="9-17", day_of_week="1-5")
    assert entries["redbeat:v2-crontab"].total_run_count == 1
    rule = entries["redbeat:v2-rrule"].schedule
    assert rule.byweekday == [MO, FR]  # 2.x drops the ordinal of FR(+1) when writing
    assert rule.dtstart == datetime(2026, 1, 5, 8, tzinfo=timezone.utc)
    assert rule.next_after(datetime(2026, 1, 5, 8, tzinfo=timezone.utc)) == datetime(
        2026, 1, 9, 8, tzinfo=timezone.utc)
    assert entries["redbeat:v2-disabled"].enabled is False

    # Our beat takes over their data and dispatches the overdue interval entry.
    scheduler = RedBeatScheduler(app=app)
    try:
        scheduler.tick()
    finally:
        scheduler.close()
    assert RedBeatSchedulerEntry.from_key("redbeat:v2-interval", app=app).total_run_count == 1
    assert broker_redis.llen("q") == 1


def test_solar_entries_are_ours_alone(app):
    """celery-redbeat 2.x has no solar type: ours stores it under a new tag."""
    pytest.importorskip("ephem")
    RedBeatSchedulerEntry("sun", "tasks.sun", solar("sunrise", 51.5, -0.12), app=app).save()
    entry = RedBeatSchedulerEntry.from_name("sun", app=app)
    assert isinstance(entry.schedule, solar) and entry.schedule.event == "sunrise"
