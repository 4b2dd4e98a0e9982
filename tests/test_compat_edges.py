"""Code written against celery-redbeat 2.x at the edges: a 2.x-style ``maybe_due`` and
runs retried or asked for with run-now, a save from a host whose clock is ahead, a
client replaced on ``app.redbeat_redis`` while beat runs. Real redis-server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import redis
from conftest import published, raw_entry, tasks_sent, tick_until, wait_for

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry


class TwoStyleMaybeDue(RedBeatScheduler):
    """A subclass with 2.x's own maybe_due body, as projects copied it to add a check or a log line."""

    def maybe_due(self, entry, **kwargs):
        is_due, next_time_to_run = entry.is_due()
        if is_due:
            self.apply_async(entry, **kwargs)
        return next_time_to_run


class TwoStyleBrokerDownOnce(TwoStyleMaybeDue):
    failures = 1

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def test_a_2x_style_maybe_due_publishes_a_run_retried_after_a_publish_error(app, schedule_redis, broker_redis):
    raw_entry(schedule_redis, "one", every=3600)
    scheduler = TwoStyleBrokerDownOnce(app=app)
    try:
        scheduler.tick()
        assert tasks_sent(broker_redis) == []
        [record] = schedule_redis.hvals("redbeat::inflight")
        task_id = json.loads(record)["task_id"]
        # The retry: the run stays in flight until it is published or given up.
        tick_until(scheduler, lambda: not schedule_redis.hlen("redbeat::inflight"), timeout=10,
                   message="the run in flight settled")
        assert [m["id"] for m in published(broker_redis)] == [task_id]
    finally:
        scheduler.close()


def test_a_2x_style_maybe_due_publishes_a_run_now_request(app, schedule_redis, broker_redis):
    entry = RedBeatSchedulerEntry("hourly", "tasks.raw", timedelta(hours=1), app=app,
                                  last_run_at=datetime.now(timezone.utc)).save()
    entry.run_now()
    scheduler = TwoStyleMaybeDue(app=app)
    try:
        tick_until(scheduler, lambda: not schedule_redis.hexists("redbeat:hourly", "run_now"), timeout=10,
                   message="the run-now request taken")
        scheduler.tick()
        assert tasks_sent(broker_redis) == ["tasks.raw"]
    finally:
        scheduler.close()


def test_saving_from_a_host_whose_clock_is_ahead_never_pushes_the_entry_past_its_next_slot(app, schedule_redis,
                                                                                           monkeypatch):
    seconds, micros = schedule_redis.time()
    redis_now = datetime.fromtimestamp(seconds + micros / 1e6, timezone.utc)
    last = redis_now - timedelta(seconds=55)  # next slot in 5 s by Redis's clock
    entry = RedBeatSchedulerEntry("every-minute", "tasks.raw", timedelta(seconds=60), app=app, last_run_at=last,
                                  starting_deadline=5).save()
    next_slot = (last + timedelta(seconds=60)).timestamp()
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:every-minute") == pytest.approx(next_slot)
    # The same entry saved again (its args edited) from a web host 30 s ahead.
    monkeypatch.setattr(RedBeatSchedulerEntry, "_default_now", lambda self: redis_now + timedelta(seconds=30))
    entry.args = [2]
    entry.save()
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:every-minute") <= next_slot


def test_beat_follows_a_client_replaced_on_app_redbeat_redis(app, redis_server, broker_redis):
    first = redis.Redis.from_url(redis_server.url(2), decode_responses=True)
    second = redis.Redis.from_url(redis_server.url(3), decode_responses=True)
    first.flushdb()
    second.flushdb()
    app.redbeat_redis = first
    scheduler = RedBeatScheduler(app=app)
    try:
        scheduler.tick()
        app.redbeat_redis = second
        RedBeatSchedulerEntry("later", "tasks.raw", 1, app=app).save()  # goes to ``second``, due in a second
        wait_for(lambda: scheduler.tick() is not None and tasks_sent(broker_redis), timeout=3,
                 message="the entry saved through the new client dispatched")
    finally:
        scheduler.close()
        first.flushdb()
        second.flushdb()
