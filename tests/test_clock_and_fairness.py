"""Issue 16, items 11 and 12: every beat decides by Redis's clock, and a backlog of
entries due long ago does not delay the entries that come due on time."""

from __future__ import annotations

import json
import logging
import time

import pytest
from conftest import raw_entry, tasks_sent, tick_until

from redbeat.store import ON_TIME_WINDOW


@pytest.mark.parametrize("offset", [20.0, -20.0])
def test_a_beat_whose_host_clock_is_off_runs_entries_by_redis_clock(scheduler_for, schedule_redis, broker_redis,
                                                                     caplog, offset):
    scheduler = scheduler_for()
    scheduler.host_clock = lambda: time.time() + offset
    redis_now = float(".".join(map(str, schedule_redis.time())))
    raw_entry(schedule_redis, "soon", every=3600, score=redis_now + 1.5)
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        interval = scheduler.tick()
    assert tasks_sent(broker_redis) == []  # a clock 20 s ahead would have run it at once
    assert interval > 0
    tick_until(scheduler, lambda: tasks_sent(broker_redis), message="the run, on time")
    sent_at = float(".".join(map(str, schedule_redis.time())))
    assert sent_at >= redis_now + 1.5
    assert "this host's clock is 20.0s" in caplog.text
    beat = json.loads(schedule_redis.get("redbeat::heartbeat"))
    assert beat["clock_offset"] == pytest.approx(-offset, abs=0.5)
    history = json.loads(schedule_redis.lindex("redbeat::history:soon", 0))
    assert 0 <= history["lateness"] < 1  # measured by Redis's clock too


def test_an_entry_due_on_time_is_read_ahead_of_a_backlog(scheduler_for, schedule_redis, broker_redis):
    limit = 50
    scheduler = scheduler_for(redbeat_claim_batch_size=limit)
    pipe = schedule_redis.pipeline(transaction=False)
    for number in range(3000):  # written at once with score 0: "due now" to whoever wrote them
        name = f"flood-{number}"
        pipe.hset(f"redbeat:{name}", "definition", json.dumps(
            {"name": name, "task": "tasks.flood", "schedule": {"__type__": "interval", "every": 3600}}))
        pipe.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    pipe.execute()
    while len(tasks_sent(broker_redis)) < 500:
        scheduler.tick()
    redis_now = float(".".join(map(str, schedule_redis.time())))
    raw_entry(schedule_redis, "on-time", every=3600, score=redis_now, task="tasks.on_time")
    tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == 3001, timeout=60, message="the backlog drained")

    def dispatched(name):
        return json.loads(schedule_redis.lindex(f"redbeat::history:{name}", 0))["dispatched"]
    on_time = dispatched("on-time")
    # The queue's order is the broker's; the history has when beat sent each run.
    flood_between = sum(redis_now < dispatched(f"flood-{number}") < on_time for number in range(3000))
    assert flood_between <= limit  # read in the very next batch, not after the 2,000 left


def test_a_read_gives_on_time_entries_and_the_backlog_half_a_batch_each(app, schedule_redis):
    from redbeat.client import get_store
    store = get_store(app)
    now = 1_800_000_000.0
    schedule_redis.zadd("redbeat::schedule", {f"redbeat:old-{n}": n for n in range(10)})
    schedule_redis.zadd("redbeat::schedule", {f"redbeat:new-{n}": now - n * 0.1 for n in range(10)})
    schedule_redis.zadd("redbeat::schedule", {"redbeat:edge": now - ON_TIME_WINDOW})  # due just too long ago
    names = [record.key_text for record in store.read_due(now, 6).records]
    assert names == ["redbeat:new-9", "redbeat:new-8", "redbeat:new-7", "redbeat:old-0", "redbeat:old-1",
                     "redbeat:old-2"]  # each oldest first
    only_new = [record.key_text for record in store.read_due(now, 30).records if "new" in record.key_text]
    assert len(only_new) == 10  # either takes the room the other leaves
    assert len(store.read_due(now, 30).records) == 21
