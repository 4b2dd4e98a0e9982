"""Saving entries while a beat runs them: every reader sees the real next run right after a
save, and a real beat dispatches each slot once however often an app re-saves its entries."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from celery.schedules import crontab, schedule
from click.testing import CliRunner
from conftest import assert_each_slot_once, make_app, start_beat, wait_for

from redbeat import RedBeatSchedulerEntry
from redbeat.cli import redbeat
from redbeat.client import get_store

UTC = timezone.utc


def test_right_after_saving_an_existing_entry_every_reader_sees_its_real_next_run(app, redis_url):
    last_run = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=100)
    for name, every in (("seen", 600), ("sooner", 300)):
        RedBeatSchedulerEntry(name, "tasks.s", schedule(every), app=app).save().reschedule(last_run)
    RedBeatSchedulerEntry("later", "tasks.s", schedule(3600), app=app).save()
    expected = last_run + timedelta(seconds=600)  # "sooner" runs before, "later" after

    # The app edits it with a fresh object, which "ran now": its history is kept, and so is its place.
    saved = RedBeatSchedulerEntry("seen", "tasks.s", schedule(600), args=[1], app=app).save()

    assert get_store(app).client.zscore(get_store(app).conf.schedule_key, saved.key) == expected.timestamp()
    assert saved.due_at == expected
    assert RedBeatSchedulerEntry.from_name("seen", app=app).due_at == expected
    assert saved.rank == 1
    runner = CliRunner()
    listed = json.loads(runner.invoke(redbeat, ["--redis-url", redis_url, "list", "--json"]).output)
    assert {item["name"]: item["next_run"] for item in listed}["seen"] == expected.isoformat()
    shown = json.loads(runner.invoke(redbeat, ["--redis-url", redis_url, "show", "seen", "--json"]).output)
    assert shown["next_run"] == expected.isoformat()


def test_a_real_beat_dispatches_each_slot_once_while_an_app_keeps_re_saving(beats, schedule_server, broker_redis):
    """An interval, a crontab and a paused entry, re-saved from fresh objects five times a
    second (2.x pushed such entries back at each save): no slot skipped, none run twice."""
    start_beat(beats, "beat")
    wait_for(lambda: "Acquired lock" in beats.log("beat"), timeout=30, message="beat active")
    app = make_app(schedule_server.url(0))
    # This minute's cron slot must be claimed within this minute: near its end, the next
    # slot would be due too, and catch-up would rightly run only the newer one.
    wait_for(lambda: datetime.now(UTC).second < 40, timeout=25, message="the first 40 s of a minute")
    now = datetime.now(UTC).replace(microsecond=0)
    minute = now.replace(second=0)

    def fresh() -> list[RedBeatSchedulerEntry]:
        return [RedBeatSchedulerEntry("interval", "e2e_app.record", schedule(2.0), args=["interval"], app=app),
                RedBeatSchedulerEntry("cron", "e2e_app.record", crontab(), args=["cron"], app=app),
                RedBeatSchedulerEntry("paused", "e2e_app.record", schedule(1.0), args=["paused"], enabled=False,
                                      app=app)]

    interval, cron, paused = fresh()
    RedBeatSchedulerEntry.save_many([interval, cron, paused], app=app)
    interval.reschedule(now - timedelta(seconds=1))  # next slot in a second
    cron.reschedule(minute - timedelta(minutes=1))  # this minute's slot is due: it runs once, now
    paused.reschedule(now - timedelta(seconds=10))  # its slots pass while it is paused: none runs

    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        for entry in fresh():
            entry.save()
        RedBeatSchedulerEntry.save_many(fresh(), app=app)
        time.sleep(0.2)
    first = (now + timedelta(seconds=1)).timestamp()
    wait_for(lambda: len(assert_each_slot_once(broker_redis, "redbeat:interval")) >= 3, timeout=10,
             message="interval runs")
    beats.stop("beat")

    ran = assert_each_slot_once(broker_redis, "redbeat:interval")
    assert ran == [first + 2 * i for i in range(len(ran))]  # every slot from the first, each once
    ran_cron = assert_each_slot_once(broker_redis, "redbeat:cron")
    assert ran_cron == [minute.timestamp() + 60 * i for i in range(len(ran_cron))] and ran_cron
    assert assert_each_slot_once(broker_redis, "redbeat:paused") == []
