"""Behaviour that differs from f00967f (before the issue 10 refactor), found in review.

Each test passes on f00967f's behaviour and fails now: marked xfail(strict) until fixed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from conftest import raw_entry, tasks_sent, tick_until

from redbeat import RedBeatSchedulerEntry
from redbeat.config import ensure_conf
from redbeat.decide import Decider, Definitions
from redbeat.stages import DueRecord


@pytest.mark.xfail(strict=True, reason="the Ticker captures max_interval on the first tick; "
                                       "f00967f read self.max_interval at each sleep and heartbeat")
def test_a_max_interval_set_after_the_first_tick_bounds_the_sleep(scheduler_for):
    scheduler = scheduler_for(redbeat_lock_timeout=300)
    assert scheduler.tick() == pytest.approx(100)  # nothing due: a third of the lock timeout
    scheduler.max_interval = 2
    assert scheduler.tick() <= 2


@pytest.mark.xfail(strict=True, reason="the Ticker captures the Entry class on the first tick; "
                                       "f00967f built its Decider from self.Entry for every batch")
def test_an_entry_class_set_after_the_first_tick_decides_the_entries(scheduler_for, schedule_redis, broker_redis):
    loaded = []

    class CountingEntry(RedBeatSchedulerEntry):
        @classmethod
        def from_stored(cls, *args, **kwargs):
            loaded.append(kwargs.get("key"))
            return super().from_stored(*args, **kwargs)

    scheduler = scheduler_for()
    scheduler.tick()
    scheduler.Entry = CountingEntry
    raw_entry(schedule_redis)
    tick_until(scheduler, lambda: tasks_sent(broker_redis), message="the raw entry's run")
    assert "redbeat:raw" in loaded


@pytest.mark.xfail(strict=True, reason="rrule_from_text upper-cases the rule only after splitting on 'RRULE:'")
def test_add_rrule_reads_a_lowercase_rrule_prefix_as_before():
    from test_cli import added_schedule

    sched = added_schedule("rrule", "rrule:freq=daily;byhour=9", None)
    assert sched.byhour == [9]


@pytest.mark.xfail(strict=True, reason="Definitions is bounded in entries (1024), not bytes: it keeps each "
                                       "definition's bytes as its key plus a decoded copy")
def test_the_decoded_definition_cache_stays_within_its_stated_memory_bound(fake_app):
    conf = ensure_conf(fake_app)
    definitions = Definitions()
    decider = Decider(fake_app, RedBeatSchedulerEntry, conf.keys, "token", 10.0, definitions)
    payload = "x" * 200_000
    now = datetime.now(timezone.utc)
    for number in range(40):
        definition = json.dumps({"name": f"big{number}", "task": "t", "args": [payload],
                                 "schedule": {"__type__": "crontab", "minute": "*"}}).encode()
        decider.decide(DueRecord(f"redbeat:big{number}".encode(), 0.0, definition, None), now)
    held = sum(len(definition) for _, definition in definitions._decoded)
    # decide.py: "a schedule of 100,000 entries costs about 6 MB at most".
    assert held < 6_000_000
