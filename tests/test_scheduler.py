"""Integration tests of the scheduler against a real redis-server (schedule on db 0,
Redis broker on db 1): ticks, static entries, raw Redis writes, bad input, the lock."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from celery.schedules import crontab, schedule
from conftest import RAW_DEFINITION, make_app, published, raw_entry, tasks_sent, tick_until, wait_for

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.records import InFlight
from redbeat.runs import task_id_for

# -- dispatch ---------------------------------------------------------------------

def test_entry_written_with_raw_redis_commands_runs_at_the_next_tick(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    schedule_redis.hset("redbeat:raw", "definition", RAW_DEFINITION)
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 0})
    scheduler.tick()
    messages = published(broker_redis)
    assert [m["task"] for m in messages] == ["tasks.raw"]
    assert messages[0]["argsrepr"] == "[7]"
    meta = RedBeatSchedulerEntry.load_meta("redbeat:raw", app=scheduler.app)
    assert meta["total_run_count"] == 1
    assert abs(meta["last_run_at"].timestamp() - time.time()) < 5
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:raw") == pytest.approx(
        meta["last_run_at"].timestamp() + 3600, abs=0.01)


def test_options_reach_the_broker(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    raw_entry(schedule_redis, "q", task="tasks.q", options={"queue": "reports"})
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    assert [m["task"] for m in published(broker_redis, "reports")] == ["tasks.q"]


def test_interval_entry_runs_repeatedly_on_time(scheduler_for, broker_redis):
    scheduler = scheduler_for({"fast": {"task": "tasks.fast", "schedule": 0.5}})
    tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) >= 3, message="three runs")
    entry = RedBeatSchedulerEntry.from_name("fast", app=scheduler.app)
    assert entry.total_run_count >= 3


def test_tick_sleeps_until_the_next_due_entry_but_never_past_max_interval(scheduler_for, schedule_redis):
    scheduler = scheduler_for(beat_max_loop_interval=30, redbeat_lock_key=None)
    assert scheduler.tick() == 30
    RedBeatSchedulerEntry("later", "t", schedule(3600), app=scheduler.app).save()
    schedule_redis.zadd("redbeat::schedule", {"redbeat:later": time.time() + 12})
    assert 11 < scheduler.tick() <= 12
    raw_entry(schedule_redis, "every-5s", every=5)
    assert 4.5 < scheduler.tick() <= 5  # it ran, and is next due in 5 s: sooner than "later"


def test_lock_holder_wakes_in_time_to_renew_its_lock(scheduler_for):
    scheduler = scheduler_for(beat_max_loop_interval=300, redbeat_lock_timeout=9)
    assert scheduler.tick() <= 3


def test_disabled_entry_does_not_run_and_keeps_its_cadence(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    raw_entry(schedule_redis, every=60, enabled=False)
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:raw") == pytest.approx(time.time() + 60, abs=2)
    assert schedule_redis.hget("redbeat:raw", "meta") is None


def test_meta_edited_from_outside_is_honoured(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    entry = RedBeatSchedulerEntry("m", "tasks.m", schedule(600), app=scheduler.app).save()
    # Another program records that the task really ran just now, and bumps the score.
    entry.last_run_at = entry._default_now()
    schedule_redis.hset("redbeat:m", "meta", entry.meta_json())
    schedule_redis.zadd("redbeat::schedule", {"redbeat:m": 0})
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:m") == pytest.approx(time.time() + 600, abs=2)


def test_schedule_property_holds_only_due_and_next_entries(scheduler_for, schedule_redis):
    scheduler = scheduler_for(redbeat_lock_key=None)
    for name, score in (("due", 0), ("next", time.time() + 100), ("later", time.time() + 200)):
        RedBeatSchedulerEntry(name, "t", schedule(3600), app=scheduler.app).save()
        schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": score})
    assert sorted(scheduler.schedule) == ["due", "next"]


def test_many_due_entries_are_drained_in_batches(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for(redbeat_claim_batch_size=7)
    for i in range(30):
        schedule_redis.hset(f"redbeat:n{i}", "definition", RAW_DEFINITION.replace('"raw"', f'"n{i}"'))
        schedule_redis.zadd("redbeat::schedule", {f"redbeat:n{i}": 0})
    scheduler.tick()
    assert len(tasks_sent(broker_redis)) == 30


# -- static entries -----------------------------------------------------------------

STATICS = {
    "every-hour": {"task": "tasks.hourly", "schedule": 3600.0, "args": (1,)},
    "nightly": {"task": "tasks.nightly", "schedule": crontab(minute="5", hour="2")},
}


def test_static_entries_are_written_at_the_first_tick(scheduler_for, schedule_redis):
    scheduler = scheduler_for(STATICS)
    assert not schedule_redis.exists("redbeat:nightly")
    scheduler.tick()
    assert schedule_redis.smembers("redbeat::statics") >= {"every-hour", "nightly"}
    definition = json.loads(schedule_redis.hget("redbeat:nightly", "definition"))
    assert definition["schedule"] == {"__type__": "crontab", "minute": "5", "hour": "2", "day_of_week": "*",
                                      "day_of_month": "*", "month_of_year": "*"}
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:every-hour") == pytest.approx(
        time.time() + 3600, abs=5)


def start_and_stop(scheduler):
    scheduler.tick()
    scheduler.close()


def test_static_entries_keep_their_history_across_restarts(scheduler_for, app, schedule_redis):
    start_and_stop(scheduler_for(STATICS))
    ran_at = RedBeatSchedulerEntry.from_name("every-hour", app=app)._default_now()
    RedBeatSchedulerEntry.from_name("every-hour", app=app).reschedule(ran_at)
    schedule_redis.hset("redbeat:every-hour", "meta", json.dumps(
        {**json.loads(schedule_redis.hget("redbeat:every-hour", "meta")), "total_run_count": 41}))
    score = schedule_redis.zscore("redbeat::schedule", "redbeat:every-hour")

    restarted_app = make_app(app.conf.redbeat_redis_url, broker_url=app.conf.broker_url)
    scheduler_for(STATICS, target_app=restarted_app).tick()
    entry = RedBeatSchedulerEntry.from_name("every-hour", app=restarted_app)
    assert entry.total_run_count == 41
    assert entry.last_run_at == ran_at
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:every-hour") == score


def test_changed_static_definition_is_updated_and_rescheduled(scheduler_for, app, schedule_redis):
    start_and_stop(scheduler_for(STATICS))
    changed = dict(STATICS, **{"every-hour": {"task": "tasks.hourly", "schedule": 60.0, "args": (2,)}})
    restarted_app = make_app(app.conf.redbeat_redis_url, broker_url=app.conf.broker_url)
    scheduler = scheduler_for(changed, target_app=restarted_app)
    # Written with score 0 (the score rule of docs/adding-tasks.rst): a tick decides it from its meta.
    tick_until(scheduler, lambda: schedule_redis.zscore("redbeat::schedule", "redbeat:every-hour"),
               message="the edited entry decided")
    entry = RedBeatSchedulerEntry.from_name("every-hour", app=restarted_app)
    assert list(entry.args) == [2]
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:every-hour") == pytest.approx(
        time.time() + 60, abs=5)


def test_removed_static_entries_go_and_runtime_entries_stay(scheduler_for, app, schedule_redis):
    start_and_stop(scheduler_for(STATICS))
    RedBeatSchedulerEntry("made-at-runtime", "t", schedule(60), app=app).save()
    restarted_app = make_app(app.conf.redbeat_redis_url, broker_url=app.conf.broker_url)
    scheduler_for({"nightly": STATICS["nightly"]}, target_app=restarted_app).tick()
    assert not schedule_redis.exists("redbeat:every-hour")
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:every-hour") is None
    assert "every-hour" not in schedule_redis.smembers("redbeat::statics")
    assert schedule_redis.exists("redbeat:made-at-runtime")
    assert schedule_redis.exists("redbeat:nightly")


# -- bad input ------------------------------------------------------------------------

BAD_INPUT = {
    "bad-json": {"definition": '{"name": "bad-json", "task": '},
    "bad-type": {"definition": '{"name": "bad-type", "task": "t", "schedule": {"__type__": "lunar"}}'},
    "no-task": {"definition": '{"name": "no-task", "schedule": {"__type__": "interval", "every": 1}}'},
    "bad-cron": {"definition": '{"name": "bad-cron", "task": "t", "schedule": {"__type__": "crontab",'
                               ' "minute": "99"}}'},
    "not-utf8": {"definition": b'{"name": "\xff\xfe", "task": "t", "schedule": 5}'},
    "no-definition": {"meta": '{"last_run_at": null}'},
    "bad-meta": {"definition": RAW_DEFINITION, "meta": '{"last_run_at": 12}'},
}


def test_bad_entries_are_parked_and_the_good_ones_keep_running(scheduler_for, schedule_redis, broker_redis,
                                                               redis_server, caplog):
    scheduler = scheduler_for({"good": {"task": "tasks.good", "schedule": 0.3}})
    raw = redis_server.client(0, decode=False)  # writes bytes as they are
    for name, fields in BAD_INPUT.items():
        raw.hset(f"redbeat:{name}", mapping=fields)
        raw.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    schedule_redis.zadd("redbeat::schedule", {"redbeat:orphan": 0})
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        tick_until(scheduler, lambda: tasks_sent(broker_redis).count("tasks.good") >= 3, message="good runs")
    assert set(tasks_sent(broker_redis)) == {"tasks.good"}
    for name in BAD_INPUT:
        key = f"redbeat:{name}"
        assert schedule_redis.zscore("redbeat::schedule", key) == -1, name
        reason = json.loads(schedule_redis.hget(key, "parked"))["reason"]
        assert reason, name
        assert f"parked entry {key}," in caplog.text
    assert schedule_redis.hget("redbeat:bad-json", "definition") == '{"name": "bad-json", "task": '
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:orphan") is None
    assert "removing redbeat:orphan " in caplog.text


def test_saving_a_parked_entry_again_unparks_it(scheduler_for, schedule_redis):
    scheduler = scheduler_for()
    schedule_redis.hset("redbeat:p", "definition", '{"name": "p"}')
    schedule_redis.zadd("redbeat::schedule", {"redbeat:p": 0})
    scheduler.tick()
    assert schedule_redis.hexists("redbeat:p", "parked")
    RedBeatSchedulerEntry("p", "tasks.p", schedule(60), app=scheduler.app).save()
    assert not schedule_redis.hexists("redbeat:p", "parked")
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:p") > 0


# -- the lock --------------------------------------------------------------------------

def second_app(app, **settings):
    return make_app(app.conf.redbeat_redis_url, broker_url=app.conf.broker_url, **settings)


def test_standby_dispatches_nothing_and_takes_over_on_clean_shutdown(scheduler_for, app, broker_redis):
    statics = {"fast": {"task": "tasks.fast", "schedule": 0.2}}
    active = scheduler_for(statics)
    active.tick()
    standby = scheduler_for(statics, target_app=second_app(app))
    assert standby.tick() <= 1.0
    assert not standby.lock.held
    broker_redis.delete("celery")
    time.sleep(0.3)
    standby.tick()
    assert tasks_sent(broker_redis) == []

    active.close()
    tick_until(standby, lambda: standby.lock.held, timeout=3, message="standby taking the lock")
    tick_until(standby, lambda: "tasks.fast" in tasks_sent(broker_redis), timeout=3, message="standby dispatching")


def test_standby_takes_over_after_a_crash_within_the_lock_timeout(scheduler_for, app, schedule_redis):
    active = scheduler_for(redbeat_lock_timeout=1)
    active.tick()
    standby = scheduler_for(target_app=second_app(app, redbeat_lock_timeout=1))
    standby.tick()
    assert not standby.lock.held
    started = time.monotonic()
    # The active beat is "dead": it never ticks again, so its lock expires.
    tick_until(standby, lambda: standby.lock.held, timeout=3, message="takeover")
    assert time.monotonic() - started <= 1 + 1.0
    active.lock.held = False  # it is dead: it must not release the new holder's lock at teardown


def test_a_beat_that_lost_its_lock_goes_back_to_standby(scheduler_for, schedule_redis, broker_redis, caplog):
    scheduler = scheduler_for({"fast": {"task": "tasks.fast", "schedule": 0.2}})
    scheduler.tick()
    assert scheduler.lock.held
    schedule_redis.set("redbeat::lock", "someone-else", px=60_000)
    broker_redis.delete("celery")
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        interval = scheduler.tick()
    assert "lost lock redbeat::lock" in caplog.text
    assert not scheduler.lock.held
    assert interval <= 1.0
    assert tasks_sent(broker_redis) == []
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    scheduler.close()
    assert schedule_redis.get("redbeat::lock") == "someone-else"


def test_lock_is_released_on_close(scheduler_for, schedule_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    token = schedule_redis.get("redbeat::lock")
    assert token.startswith(scheduler.lock.token.split(":")[0])
    scheduler.close()
    scheduler.close()
    assert schedule_redis.get("redbeat::lock") is None


def test_without_a_lock_every_beat_dispatches(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for(redbeat_lock_key=None)
    schedule_redis.hset("redbeat:raw", "definition", RAW_DEFINITION)
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 0})
    scheduler.tick()
    assert scheduler.lock is None
    assert schedule_redis.get("redbeat::lock") is None
    assert tasks_sent(broker_redis) == ["tasks.raw"]


# -- Redis outages ------------------------------------------------------------------------

def test_beat_survives_redis_going_away_and_coming_back(tmp_path, caplog):
    from conftest import RedisServer
    server = RedisServer(tmp_path)
    app = make_app(server.url(0), broker_url="memory://",
                   beat_schedule={"s": {"task": "tasks.s", "schedule": 60.0}})
    scheduler = RedBeatScheduler(app=app)
    try:
        scheduler.tick()
        server.stop()
        with caplog.at_level(logging.ERROR, logger="celery.beat"):
            delays = [scheduler.tick() for _ in range(6)]
        assert "is unavailable" in caplog.text
        assert caplog.text.count("is unavailable") == 1
        assert delays == sorted(delays) and delays[-1] <= 1.0
        server.start()  # restarted without its data
        scheduler.tick()
        tick_until(scheduler, lambda: server.client().exists("redbeat:s"), timeout=5, message="beat back")
    finally:
        scheduler.close()
        server.stop()


def test_beat_starts_while_redis_is_down_and_writes_statics_when_it_answers(tmp_path):
    from conftest import RedisServer
    server = RedisServer(tmp_path)
    server.stop()
    app = make_app(server.url(0), beat_schedule={"s": {"task": "tasks.s", "schedule": 60.0}})
    scheduler = RedBeatScheduler(app=app)
    try:
        assert scheduler.tick() <= 1.0
        server.start()
        tick_until(scheduler, lambda: server.client().sismember("redbeat::statics", "s"), timeout=5,
                   message="statics written")
    finally:
        scheduler.close()
        server.stop()


# -- runs in flight ---------------------------------------------------------------------

def test_each_run_has_a_task_id_derived_from_entry_and_scheduled_time(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduled = time.time() - 1.5
    raw_entry(schedule_redis, score=scheduled)
    scheduler.tick()
    [message] = published(broker_redis)
    assert message["id"] == task_id_for("redbeat:raw", scheduled)
    assert schedule_redis.hlen("redbeat::inflight") == 0


def dies_after_claiming(app):
    """A beat that is killed between claiming its runs and publishing them."""
    beat = RedBeatScheduler(app=app)

    def killed(runs, renewed_at):
        beat.lock.held = False  # and never ticks again
        return set()
    beat.ticker.publisher.publish = killed
    return beat


def test_runs_claimed_by_a_beat_that_died_are_published_by_the_next_holder(
        scheduler_for, app, schedule_redis, broker_redis):
    app.conf.update(redbeat_lock_timeout=1)
    dead = dies_after_claiming(app)
    raw_entry(schedule_redis)
    dead.tick()
    assert tasks_sent(broker_redis) == []
    [record] = schedule_redis.hvals("redbeat::inflight")
    task_id = json.loads(record)["task_id"]

    successor = scheduler_for(target_app=second_app(app, redbeat_lock_timeout=1))
    tick_until(successor, lambda: tasks_sent(broker_redis), timeout=5, message="the claimed run published")
    assert [m["id"] for m in published(broker_redis)] == [task_id]
    assert schedule_redis.hlen("redbeat::inflight") == 0
    assert RedBeatSchedulerEntry.from_name("raw", app=app).total_run_count == 1


class BrokerDownFor(RedBeatScheduler):
    failures = 2

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if BrokerDownFor.failures:
            BrokerDownFor.failures -= 1
            raise ConnectionError("broker unreachable")
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def test_a_run_that_failed_to_publish_is_retried_with_the_same_task_id(app, schedule_redis, broker_redis, caplog):
    scheduler = BrokerDownFor(app=app)
    try:
        raw_entry(schedule_redis, "one")
        raw_entry(schedule_redis, "two")
        with caplog.at_level(logging.ERROR, logger="celery.beat"):
            scheduler.tick()
        assert "could not publish" in caplog.text
        assert tasks_sent(broker_redis) == []
        assert schedule_redis.hlen("redbeat::inflight") == 2
        ids = {json.loads(r)["task_id"] for r in schedule_redis.hvals("redbeat::inflight")}
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == 2, timeout=10, message="retries")
        assert {m["id"] for m in published(broker_redis)} == ids
        assert schedule_redis.hlen("redbeat::inflight") == 0
    finally:
        scheduler.close()


def batch_lost_once(app):
    """The connection drops while a batch of messages is sent: none arrives."""
    scheduler = RedBeatScheduler(app=app)
    broker = scheduler.ticker.broker
    real_batch = broker.batch
    failures = [1]

    @contextlib.contextmanager
    def lost_once():
        with real_batch():  # kombu's real batch, on the real broker
            yield
            if failures:
                failures.pop()
                raise ConnectionError("connection lost while sending the batch")
    broker.batch = lost_once
    return scheduler


def test_a_batch_that_failed_to_reach_the_broker_is_retried_whole_with_the_same_task_ids(
        app, schedule_redis, broker_redis, caplog):
    scheduler = batch_lost_once(app)
    try:
        for name in ("one", "two", "three"):
            raw_entry(schedule_redis, name)
        with caplog.at_level(logging.ERROR, logger="celery.beat"):
            scheduler.tick()
        assert "could not publish a batch of 3 runs" in caplog.text
        assert tasks_sent(broker_redis) == []
        ids = {json.loads(r)["task_id"] for r in schedule_redis.hvals("redbeat::inflight")}
        assert len(ids) == 3
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) >= 3, timeout=10, message="the retried batch")
        assert sorted(m["id"] for m in published(broker_redis)) == sorted(ids)
        assert schedule_redis.hlen("redbeat::inflight") == 0
    finally:
        scheduler.close()


def test_publishing_one_message_at_a_time_when_batches_are_turned_off(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for(redbeat_publish_batch_size=1)
    for name in ("one", "two", "three"):
        raw_entry(schedule_redis, name)
    scheduler.tick()
    assert len(tasks_sent(broker_redis)) == 3
    assert schedule_redis.hlen("redbeat::inflight") == 0


def claimed_now(scheduler, schedule_redis, names=("raw",)):
    """Entries due now, decided and claimed by ``scheduler``: its runs in flight, not yet published."""
    for name in names:
        raw_entry(schedule_redis, name)
    batch = scheduler.store.read_due(time.time(), 10, scheduler.lock)
    decider = scheduler.ticker.budget.decider
    decisions = [decider.decide(r, datetime.now(timezone.utc)) for r in batch.records]
    return scheduler.store.claim(decisions, scheduler.lock)


def test_a_beat_whose_lock_was_taken_after_claiming_publishes_nothing(scheduler_for, schedule_redis,
                                                                      broker_redis, caplog):
    scheduler = scheduler_for()
    scheduler.tick()
    claimed = claimed_now(scheduler, schedule_redis)
    schedule_redis.set("redbeat::lock", "another-beat")  # it took the lock while this one was paused
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        scheduler.ticker.publish_claimed(claimed, time.monotonic())
    assert "lost lock redbeat::lock while publishing; leaving 1 runs to the lock holder" in caplog.text
    assert tasks_sent(broker_redis) == []
    assert schedule_redis.hlen("redbeat::inflight") == 1


def test_a_beat_that_kept_its_lock_through_a_long_stall_confirms_it_and_publishes(scheduler_for, schedule_redis,
                                                                                  broker_redis):
    scheduler = scheduler_for(redbeat_lock_timeout=5)
    scheduler.tick()
    claimed = claimed_now(scheduler, schedule_redis)
    scheduler.ticker.publish_claimed(claimed, time.monotonic() - 60)
    assert tasks_sent(broker_redis) == ["tasks.raw"]
    assert schedule_redis.hlen("redbeat::inflight") == 0
    assert schedule_redis.pttl("redbeat::lock") > 4000  # renewed by the check


def lock_taken_while_publishing(app):
    """Another beat takes the lock right after the first message is handed to kombu,
    as if this beat had been paused there past its lock timeout."""
    scheduler = RedBeatScheduler(app=app)
    publisher = scheduler.ticker.publisher
    send = publisher.send

    def send_then_lose_the_lock(entry, run):
        error = send(entry, run)
        scheduler.store.client.set(scheduler.lock.key, "another-beat", px=60_000)  # as a beat writes it
        return error
    publisher.send = send_then_lose_the_lock
    return scheduler


@pytest.mark.parametrize("batch_size, reached_the_broker", [(100, 0), (1, 1)])
def test_a_beat_that_loses_its_lock_while_publishing_sends_nothing_more(
        app, schedule_redis, broker_redis, batch_size, reached_the_broker):
    # In a batch, messages wait in kombu's buffer until the lock is checked
    # before the batch is sent: the whole batch is dropped. One at a time,
    # the first went out before the lock was lost; the others are not sent.
    app.conf.update(redbeat_publish_batch_size=batch_size)
    scheduler = lock_taken_while_publishing(app)
    try:
        scheduler.tick()
        claimed = claimed_now(scheduler, schedule_redis, names=("one", "two", "three"))
        assert scheduler.ticker.broker.buffers() is (batch_size > 1)
        scheduler.ticker.publish_claimed(claimed, time.monotonic())
        assert len(tasks_sent(broker_redis)) == reached_the_broker
        # The runs not sent stay in flight, for the lock holder to publish.
        assert schedule_redis.hlen("redbeat::inflight") == 3 - reached_the_broker
        scheduler.tick()  # the next read finds the lock gone: back to standby
        assert not scheduler.lock.held
        assert len(tasks_sent(broker_redis)) == reached_the_broker
    finally:
        scheduler.close()


def test_beat_warns_when_redis_may_evict_schedule_keys(scheduler_for, schedule_redis, caplog):
    schedule_redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, logger="celery.beat"):
            scheduler_for().tick()
    finally:
        schedule_redis.config_set("maxmemory-policy", "noeviction")
    assert "maxmemory-policy allkeys-lru" in caplog.text


def test_acl_user_and_password_work_and_never_show(redis_server, schedule_redis, caplog):
    schedule_redis.acl_setuser("beat", enabled=True, passwords=["+s3cret-pw"], keys=["redbeat:*"],
                               commands=["+@all"], reset=True)
    url = f"redis://beat:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    app = make_app(url, beat_schedule={"s": {"task": "tasks.s", "schedule": 60.0}})
    scheduler = RedBeatScheduler(app=app)
    try:
        with caplog.at_level(logging.DEBUG, logger="celery.beat"):
            scheduler.tick()
        assert schedule_redis.sismember("redbeat::statics", "s")
        assert "s3cret-pw" not in scheduler.info and "s3cret-pw" not in caplog.text
    finally:
        scheduler.close()
        schedule_redis.acl_deluser("beat")


# -- scheduling options, end to end through the scheduler -------------------------------

def meta_of(schedule_redis, name):
    return json.loads(schedule_redis.hget(f"redbeat:{name}", "meta"))


def test_run_now_dispatches_once_without_moving_the_regular_schedule(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    entry = RedBeatSchedulerEntry("daily", "tasks.daily", crontab(minute="0", hour="3"), app=scheduler.app).save()
    regular = schedule_redis.zscore("redbeat::schedule", "redbeat:daily")
    before = meta_of(schedule_redis, "daily")
    entry.run_now()
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.daily"]
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:daily") == regular
    after = meta_of(schedule_redis, "daily")
    assert after["last_run_at"] == before["last_run_at"]
    assert after["total_run_count"] == 1
    assert not schedule_redis.hexists("redbeat:daily", "run_now")
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.daily"]


def test_run_now_on_an_entry_due_anyway_dispatches_it_once(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    raw_entry(schedule_redis, "fresh")  # never run: due now
    schedule_redis.hset("redbeat:fresh", "run_now", "1")
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.raw"]
    assert not schedule_redis.hexists("redbeat:fresh", "run_now")


def test_a_run_now_that_takes_the_last_run_ends_the_entry_at_its_next_look(scheduler_for, schedule_redis,
                                                                            broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    entry = RedBeatSchedulerEntry("limited", "tasks.limited", schedule(3600), max_runs=1, app=scheduler.app).save()
    entry.run_now()
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.limited"]
    schedule_redis.zadd("redbeat::schedule", {"redbeat:limited": 0})  # beat looks at it now, not in an hour
    scheduler.tick()
    assert json.loads(schedule_redis.hget("redbeat:limited", "definition"))["enabled"] is False
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:limited") == -1
    assert tasks_sent(broker_redis) == ["tasks.limited"]


def test_a_paused_entry_resumes_at_its_next_regular_slot(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for(redbeat_catch_up="skip")
    scheduler.tick()
    entry = RedBeatSchedulerEntry("cadence", "tasks.c", schedule(1.0), app=scheduler.app)
    entry.last_run_at = entry._default_now()
    entry.save()
    entry.enabled = False
    entry.save()
    tick_until(scheduler, lambda: schedule_redis.zscore("redbeat::schedule", "redbeat:cadence") > time.time() + 0.5,
               timeout=5, message="the paused entry moved along its slots")
    assert tasks_sent(broker_redis) == []
    entry.enabled = True
    entry.save()
    tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=5, message="resumed")
    sent = published(broker_redis)[0]
    # The first run after resuming is on a regular slot: a whole number of seconds after the last run.
    offset = (sent["headers"]["redbeat_scheduled"] - entry.last_run_at.timestamp()) % 1.0
    assert min(offset, 1 - offset) < 0.01


def test_catch_up_skip_records_missed_slots_and_dispatches_nothing(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    entry = RedBeatSchedulerEntry("late", "tasks.late", schedule(1.0), catch_up="skip", app=scheduler.app)
    entry.last_run_at = entry._default_now() - timedelta(seconds=10)
    entry.save()
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    status = json.loads(schedule_redis.hget("redbeat:late", "status"))
    assert status["missed"] >= 9
    assert status["next_slot"] > time.time()


def test_catch_up_once_dispatches_one_run(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    entry = RedBeatSchedulerEntry("late", "tasks.late", schedule(1.0), app=scheduler.app)
    entry.last_run_at = entry._default_now() - timedelta(seconds=10)
    entry.save()
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.late"]
    assert json.loads(schedule_redis.hget("redbeat:late", "status"))["last_dispatched_at"] > time.time() - 5


@pytest.mark.parametrize("on_finish", ["disable", "delete"])
def test_after_max_runs_the_entry_is_disabled_or_deleted(scheduler_for, schedule_redis, broker_redis, on_finish):
    scheduler = scheduler_for()
    scheduler.tick()
    RedBeatSchedulerEntry("twice", "tasks.twice", schedule(0.2), max_runs=2, on_finish=on_finish,
                          app=scheduler.app).save()
    tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) >= 2, timeout=5, message="two runs")
    time.sleep(0.5)
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.twice", "tasks.twice"]
    if on_finish == "disable":
        assert json.loads(schedule_redis.hget("redbeat:twice", "definition"))["enabled"] is False
        assert schedule_redis.zscore("redbeat::schedule", "redbeat:twice") == -1
        assert meta_of(schedule_redis, "twice")["total_run_count"] == 2
    else:
        assert not schedule_redis.exists("redbeat:twice")
        assert schedule_redis.zscore("redbeat::schedule", "redbeat:twice") is None


def test_an_entry_whose_last_run_failed_to_publish_is_deleted_once_the_retry_is_published(
        app, schedule_redis, broker_redis):
    BrokerDownFor.failures = 1
    scheduler = BrokerDownFor(app=app)
    try:
        scheduler.tick()
        RedBeatSchedulerEntry("once", "tasks.once", schedule(0.2), max_runs=1, on_finish="delete", app=app).save()
        tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=10, message="the retried last run")
        assert BrokerDownFor.failures == 0  # the first attempt did fail
        wait_for(lambda: not schedule_redis.exists("redbeat:once"), timeout=5, message="the entry deleted")
        assert schedule_redis.zscore("redbeat::schedule", "redbeat:once") is None
        assert tasks_sent(broker_redis) == ["tasks.once"]
    finally:
        scheduler.close()


def test_a_clocked_entry_written_with_redis_commands_runs_once(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    definition = {"name": "once", "task": "tasks.once", "schedule": {"__type__": "clocked", "at": {
        "__type__": "datetime", "year": at.year, "month": at.month, "day": at.day, "hour": at.hour,
        "minute": at.minute, "second": at.second, "microsecond": at.microsecond, "timezone": "UTC"}}}
    schedule_redis.hset("redbeat:once", "definition", json.dumps(definition))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:once": 0})
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=5, message="the one-off run")
    time.sleep(0.3)
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.once"]
    assert json.loads(schedule_redis.hget("redbeat:once", "definition"))["enabled"] is False


# -- regressions from review ------------------------------------------------------------

def test_a_member_naming_a_string_key_costs_only_itself(scheduler_for, schedule_redis, broker_redis, caplog):
    scheduler = scheduler_for()
    scheduler.tick()
    schedule_redis.set("nightly", "someone else's data")
    schedule_redis.zadd("redbeat::schedule", {"nightly": 0})
    raw_entry(schedule_redis)
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.raw"]
    assert schedule_redis.zscore("redbeat::schedule", "nightly") is None
    assert schedule_redis.get("nightly") == "someone else's data"
    assert "removing nightly from the schedule: it is not an entry key under the prefix" in caplog.text


def test_a_hash_with_neither_definition_nor_meta_is_parked(scheduler_for, schedule_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    schedule_redis.hset("redbeat:half", "status", "{}")
    schedule_redis.zadd("redbeat::schedule", {"redbeat:half": 0})
    scheduler.tick()
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:half") == -1
    assert "definition" in json.loads(schedule_redis.hget("redbeat:half", "parked"))["reason"]


@pytest.mark.parametrize("schedule_value", [0, -5])
def test_a_plain_number_schedule_must_be_positive(scheduler_for, schedule_redis, broker_redis, schedule_value):
    scheduler = scheduler_for()
    scheduler.tick()
    schedule_redis.hset("redbeat:flood", "definition", json.dumps({"name": "flood", "task": "t",
                                                                   "schedule": schedule_value}))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:flood": 0})
    scheduler.tick()
    assert tasks_sent(broker_redis) == []
    assert "at least 0.001 seconds" in json.loads(schedule_redis.hget("redbeat:flood", "parked"))["reason"]


def test_bad_data_never_makes_tick_raise(scheduler_for, app, schedule_redis, caplog):
    app.conf.beat_schedule = {"s": {"task": "tasks.s", "schedule": 60.0}}
    scheduler = scheduler_for({"s": {"task": "tasks.s", "schedule": 60.0}})
    scheduler.tick()
    bad_meta = {"last_run_at": {"__type__": "datetime", "year": 2026, "month": 1, "day": 1, "timezone": 90000}}
    schedule_redis.hset("redbeat:s", "meta", json.dumps(bad_meta))
    schedule_redis.hset("redbeat::inflight", "x", json.dumps({"task_id": "x", "key": "redbeat:s", "scheduled": 1,
                                                             "claimed_at": 1e20, "token": "t", "retry_at": "soon"}))
    raw_entry(schedule_redis, "huge", every=1e300)
    scheduler.ticker.statics.synced = False
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        for _ in range(3):
            assert scheduler.tick() >= 0
    assert not schedule_redis.hexists("redbeat::inflight", "x")
    assert "unreadable in-flight records" in caplog.text


class RejectsOneMessage(RedBeatScheduler):
    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if entry.name == "bad":
            raise ValueError("countdown must be a number")
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def test_a_message_the_broker_rejects_does_not_hold_back_the_others(app, schedule_redis, broker_redis):
    scheduler = RejectsOneMessage(app=app)
    try:
        raw_entry(schedule_redis, "bad", score=1)
        raw_entry(schedule_redis, "good", score=2)
        scheduler.tick()
        assert [m["argsrepr"] for m in published(broker_redis)] == ["[7]"]
        records = [json.loads(r) for r in schedule_redis.hvals("redbeat::inflight")]
        assert [(r["key"], r["attempts"]) for r in records] == [("redbeat:bad", 1)]
    finally:
        scheduler.close()


def test_without_a_lock_two_beats_never_resume_the_same_run_twice(app, schedule_redis, broker_redis):
    app.conf.update(redbeat_lock_key=None)
    first = dies_after_claiming(app)
    first.lock = None
    first.ticker.publisher.publish = lambda runs, renewed_at: set()
    raw_entry(schedule_redis)
    first.tick()
    record = json.loads(schedule_redis.hvals("redbeat::inflight")[0])
    record["retry_at"] = 0
    schedule_redis.hset("redbeat::inflight", record["task_id"], json.dumps(record))
    beats = [RedBeatScheduler(app=second_app(app, redbeat_lock_key=None)) for _ in range(2)]
    try:
        for beat in beats:
            beat.tick()
        assert [m["id"] for m in published(broker_redis)] == [record["task_id"]]
    finally:
        for beat in beats:
            beat.close()


def test_update_from_dict_keeps_the_history_of_existing_entries(scheduler_for, schedule_redis):
    scheduler = scheduler_for()
    entry = RedBeatSchedulerEntry("hist", "tasks.h", schedule(600), app=scheduler.app)
    entry.last_run_at = entry._default_now() - timedelta(seconds=300)
    entry.save()
    score = schedule_redis.zscore("redbeat::schedule", "redbeat:hist")
    scheduler.update_from_dict({"hist": {"task": "tasks.h2", "schedule": 600.0}})
    # Written with score 0 (the score rule of docs/adding-tasks.rst): a tick decides it from its meta.
    tick_until(scheduler, lambda: schedule_redis.zscore("redbeat::schedule", "redbeat:hist"),
               message="the edited entry decided")
    assert json.loads(schedule_redis.hget("redbeat:hist", "definition"))["task"] == "tasks.h2"
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:hist") == pytest.approx(score, abs=1)


def test_celery_redbeat_2_names_still_import():
    from redbeat.schedulers import REDBEAT_REDIS_KEY, acquire_distributed_beat_lock, ensure_conf, get_redis  # noqa

    assert RedBeatScheduler.lock_timeout == 10
    assert acquire_distributed_beat_lock(sender=None) is None
    assert REDBEAT_REDIS_KEY == "redbeat_redis"


def test_get_redis_defaults_to_the_current_app(app):
    from redbeat.schedulers import get_redis

    with app.connection_for_write():
        app.set_current()
        assert get_redis().connection_pool.connection_kwargs["db"] == 0


def test_entry_rank(scheduler_for, schedule_redis):
    scheduler = scheduler_for()
    raw_entry(schedule_redis, "first", score=1)
    raw_entry(schedule_redis, "second", score=2)
    assert RedBeatSchedulerEntry.from_name("second", app=scheduler.app).rank == 1


def test_each_dispatch_is_recorded_in_a_capped_history(scheduler_for, schedule_redis):
    scheduler = scheduler_for({"fast": {"task": "tasks.fast", "schedule": 0.1}}, redbeat_history_size=3)
    tick_until(scheduler, lambda: RedBeatSchedulerEntry.from_name("fast", app=scheduler.app).total_run_count >= 5,
               message="five runs")
    history = scheduler.store.history("redbeat:fast")
    assert len(history) == 3
    newest = history[0]
    assert newest["outcome"] == "published"
    assert newest["dispatched"] >= newest["scheduled"]
    assert newest["lateness"] == pytest.approx(newest["dispatched"] - newest["scheduled"], abs=1e-5)
    assert newest["task_id"] == task_id_for("redbeat:fast", newest["scheduled"])


def test_the_active_beat_keeps_a_heartbeat(scheduler_for, schedule_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    heartbeat = json.loads(schedule_redis.get("redbeat::heartbeat"))
    assert heartbeat["token"] == scheduler.lock.token
    assert heartbeat["last_tick"] == pytest.approx(time.time(), abs=5)
    assert heartbeat["pid"] > 0 and heartbeat["version"]
    assert "stopped_at" not in heartbeat


def test_a_beat_that_closes_marks_only_its_own_heartbeat_stopped(scheduler_for, schedule_redis):
    first, second = scheduler_for(), scheduler_for()
    first.tick()
    second.close()  # a standby: the heartbeat is the active beat's
    assert "stopped_at" not in json.loads(schedule_redis.get("redbeat::heartbeat"))
    first.close()
    heartbeat = json.loads(schedule_redis.get("redbeat::heartbeat"))
    assert heartbeat["token"] == first.lock.token
    assert heartbeat["stopped_at"] == pytest.approx(time.time(), abs=5)
    assert schedule_redis.ttl("redbeat::heartbeat") > 0


# -- regressions from the second review ------------------------------------------------

def test_a_never_run_entry_with_jitter_runs(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    raw_entry(schedule_redis, every=1, jitter=0.5)
    tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) >= 2, timeout=6, message="jittered runs")


def test_an_edited_schedule_is_not_held_back_by_the_old_next_slot(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    raw_entry(schedule_redis, "edited", every=3600)
    scheduler.tick()  # runs once; next slot in an hour
    assert len(tasks_sent(broker_redis)) == 1
    definition = json.loads(schedule_redis.hget("redbeat:edited", "definition"))
    definition["schedule"]["every"] = 0.3
    schedule_redis.hset("redbeat:edited", "definition", json.dumps(definition))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:edited": 0})
    tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) >= 2, timeout=5, message="the edited entry")


def test_catch_up_all_sends_each_run_with_its_own_task_id(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    entry = RedBeatSchedulerEntry("all", "tasks.all", schedule(1.0), catch_up="all", app=scheduler.app)
    entry.last_run_at = entry._default_now() - timedelta(seconds=3.5)
    entry.save()
    scheduler.tick()
    messages = published(broker_redis)
    assert len(messages) == 3
    assert len({m["id"] for m in messages}) == 3
    assert {m["id"] for m in messages} == {task_id_for("redbeat:all", m["headers"]["redbeat_scheduled"])
                                          for m in messages}


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "1"])
def test_any_run_now_value_gives_one_run(scheduler_for, schedule_redis, broker_redis, value):
    scheduler = scheduler_for()
    scheduler.tick()
    RedBeatSchedulerEntry("good", "tasks.good", schedule(3600), app=scheduler.app).save()
    schedule_redis.hset("redbeat:good", "run_now", value)
    schedule_redis.zadd("redbeat::schedule", {"redbeat:good": 0})
    scheduler.tick()
    [message] = published(broker_redis)
    assert message["headers"]["redbeat_scheduled"] > 1e9


def test_headers_that_are_not_an_object_cost_only_their_run(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    raw_entry(schedule_redis, "bad", score=1, options={"headers": ["x"]})
    raw_entry(schedule_redis, "good", score=2)
    scheduler.tick()
    assert [m["headers"]["redbeat_key"] for m in published(broker_redis)] == ["redbeat:good"]
    # Refused when loaded (docs/format.rst), so it never takes a run in flight.
    assert "'options.headers' must be an object" in json.loads(schedule_redis.hget("redbeat:bad", "parked"))["reason"]
    assert schedule_redis.hlen("redbeat::inflight") == 0


def test_a_paused_static_entry_stays_paused_across_a_resync(scheduler_for, schedule_redis):
    scheduler = scheduler_for({"s": {"task": "tasks.s", "schedule": 60.0}})
    scheduler.tick()
    definition = json.loads(schedule_redis.hget("redbeat:s", "definition")) | {"enabled": False}
    schedule_redis.hset("redbeat:s", "definition", json.dumps(definition))
    scheduler.ticker.statics.synced = False
    scheduler.tick()
    assert json.loads(schedule_redis.hget("redbeat:s", "definition"))["enabled"] is False


def test_an_interval_far_behind_runs_its_newest_slot(app):
    from redbeat.planning import Policy, plan_runs

    now = datetime(2026, 5, 1, tzinfo=timezone.utc)
    result = plan_runs("redbeat:k", schedule(1.0), Policy(), now - timedelta(days=1, seconds=0.5), None, 0, now)
    assert result.runs == [now - timedelta(seconds=0.5)]
    assert result.missed == 86399


def test_re_saving_an_existing_entry_does_not_push_it_back(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    entry = RedBeatSchedulerEntry("upserted", "tasks.u", schedule(1.0), app=scheduler.app)
    entry.last_run_at = entry._default_now() - timedelta(seconds=5)
    entry.save()
    # An app that saves its entries from scratch every few seconds (fresh objects "ran now").
    RedBeatSchedulerEntry("upserted", "tasks.u", schedule(1.0), app=scheduler.app).save()
    # Due since its stored last run: scored now, its real next run, not pushed back a second.
    assert 0 < schedule_redis.zscore("redbeat::schedule", "redbeat:upserted") <= time.time()
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.u"]


# -- regressions from the third review ---------------------------------------------------

def test_a_history_key_of_another_type_does_not_stop_dispatch(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for(redbeat_lock_timeout=2)
    raw_entry(schedule_redis, "a")
    schedule_redis.set("redbeat::history:a", "someone else's string")
    scheduler.tick()
    raw_entry(schedule_redis, "b", every=0.2)
    tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) >= 4, timeout=10, message="b keeps running")
    assert schedule_redis.get("redbeat::history:a") == "someone else's string"
    assert schedule_redis.hlen("redbeat::inflight") == 0


def key_turns_into_a_string(app):
    """Between reading and claiming, another program replaces a hash with a string."""
    scheduler = RedBeatScheduler(app=app)
    budget = scheduler.ticker.budget
    decide_batch = budget.decide_batch

    def then_b_turns_into_a_string(records, now, renewed_at, *newest_events):
        decisions = decide_batch(records, now, renewed_at, *newest_events)
        client = scheduler.store.client
        if client.type("redbeat:b") == b"hash":
            client.delete("redbeat:b")
            client.set("redbeat:b", "a string now")
        return decisions
    budget.decide_batch = then_b_turns_into_a_string
    return scheduler


def test_a_key_that_changed_type_before_the_claim_costs_no_other_entry_its_run(app, schedule_redis, broker_redis):
    raw_entry(schedule_redis, "a")
    schedule_redis.hset("redbeat:b", "note", "no definition yet")
    schedule_redis.zadd("redbeat::schedule", {"redbeat:b": 1})
    scheduler = key_turns_into_a_string(app)
    try:
        tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=5, message="a's run")
        scheduler.tick()
        assert tasks_sent(broker_redis) == ["tasks.raw"]
        assert schedule_redis.hlen("redbeat::inflight") == 0
        assert schedule_redis.get("redbeat:b") == "a string now"
        assert schedule_redis.zscore("redbeat::schedule", "redbeat:b") is None  # dropped, the string kept
    finally:
        scheduler.close()


@pytest.mark.parametrize("batch_size, most_copies", [(1, 1), (100, 2)])
def test_a_message_the_broker_refuses_costs_only_its_own_run_which_is_given_up(scheduler_for, schedule_redis,
                                                                               broker_redis, batch_size, most_copies):
    broker_redis.set("refusing", "a string where a queue should be")  # LPUSH answers WRONGTYPE
    scheduler = scheduler_for(redbeat_publish_batch_size=batch_size)
    raw_entry(schedule_redis, "a-refused", options={"queue": "refusing"})  # read first, the others after it
    for name in ("good1", "good2", "good3"):
        raw_entry(schedule_redis, name)

    def good_ids():
        return [m["id"] for m in published(broker_redis)]
    def refused():
        return [json.loads(r) for r in schedule_redis.lrange("redbeat::history:a-refused", 0, -1)]
    tick_until(scheduler, lambda: len(set(good_ids())) == 3 and refused(),
               timeout=10, message="the three good runs published, the refused one given up")
    assert max(good_ids().count(task_id) for task_id in good_ids()) <= most_copies
    # A refusal is no passing failure: the run is given up (alone, after a refused batch), not retried.
    [record] = refused()
    assert record["outcome"] == "given-up" and record["reason"].startswith("refused-by-broker: ResponseError: ")
    assert "WRONGTYPE" in record["reason"]
    assert schedule_redis.hlen("redbeat::inflight") == 0


def last_runs_resumed_one_failing(app):
    """The first of two resumed runs is published, the second fails once."""
    scheduler = RedBeatScheduler(app=app)
    publisher = scheduler.ticker.publisher
    send = publisher.send
    sends = []

    def second_send_fails(entry, run):
        sends.append(run)
        if len(sends) == 2:
            return ConnectionError("broker unreachable")
        return send(entry, run)
    publisher.send = second_send_fails
    return scheduler


def test_an_entry_deleted_on_finish_waits_for_every_last_run_in_flight(app, schedule_redis, broker_redis):
    app.conf.update(redbeat_lock_timeout=1)
    dead = dies_after_claiming(app)
    dead.tick()
    entry = RedBeatSchedulerEntry("last2", "tasks.last2", schedule(1.0), catch_up="all", max_runs=2,
                                  on_finish="delete", app=app)
    entry.last_run_at = entry._default_now() - timedelta(seconds=2.5)
    entry.save()
    dead.tick()
    assert schedule_redis.hlen("redbeat::inflight") == 2 and tasks_sent(broker_redis) == []
    successor = last_runs_resumed_one_failing(second_app(app, redbeat_lock_timeout=1))
    try:
        tick_until(successor, lambda: len(tasks_sent(broker_redis)) == 2, timeout=15, message="both last runs")
        wait_for(lambda: not schedule_redis.exists("redbeat:last2"), timeout=5, message="the entry deleted")
        assert schedule_redis.hlen("redbeat::inflight") == 0
    finally:
        successor.close()


def test_an_unreadable_status_costs_nothing_but_itself(scheduler_for, schedule_redis, broker_redis):
    scheduler = scheduler_for()
    raw_entry(schedule_redis, "deep")
    schedule_redis.hset("redbeat:deep", "status", "[" * 100_000)  # deeper than json can follow
    scheduler.tick()
    assert tasks_sent(broker_redis) == ["tasks.raw"]
    assert json.loads(schedule_redis.hget("redbeat:deep", "status"))["last_dispatched_at"] > 0


def test_an_entry_to_delete_waits_for_its_last_run_in_flight_when_looked_at_again(app, schedule_redis,
                                                                                  broker_redis):
    BrokerDownFor.failures = 1
    scheduler = BrokerDownFor(app=app)
    try:
        scheduler.tick()
        RedBeatSchedulerEntry("once", "tasks.once", schedule(0.2), max_runs=1, on_finish="delete", app=app).save()
        tick_until(scheduler, lambda: BrokerDownFor.failures == 0, timeout=5, message="the failed last run")
        schedule_redis.zadd("redbeat::schedule", {"redbeat:once": 0})  # looked at again while it waits
        scheduler.tick()
        assert schedule_redis.exists("redbeat:once")
        tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=10, message="the retried last run")
        wait_for(lambda: not schedule_redis.exists("redbeat:once"), timeout=5, message="the entry deleted")
    finally:
        scheduler.close()


@pytest.mark.parametrize("write", [
    lambda client: client.set("redbeat::lock", "left by hand"),  # a string that never expires
    lambda client: client.hset("redbeat::lock", "owner", "someone"),
    lambda client: client.rpush("redbeat::lock", "x"),
])
def test_a_lock_key_that_no_beat_wrote_is_replaced(scheduler_for, schedule_redis, broker_redis, caplog, write):
    write(schedule_redis)
    raw_entry(schedule_redis)
    scheduler = scheduler_for()
    with caplog.at_level(logging.ERROR, logger="celery.beat"):
        tick_until(scheduler, lambda: tasks_sent(broker_redis), message="a run under the replaced lock")
    assert "lock key redbeat::lock held a" in caplog.text
    assert schedule_redis.get("redbeat::lock") == scheduler.lock.token
    assert 0 < schedule_redis.pttl("redbeat::lock") <= scheduler.lock.ttl_ms


def test_a_lock_string_with_an_expiry_is_another_beats_and_is_left_alone(scheduler_for, schedule_redis):
    schedule_redis.set("redbeat::lock", "another-beat", px=60_000)
    scheduler = scheduler_for()
    scheduler.tick()
    assert scheduler.lock.held is False
    assert schedule_redis.get("redbeat::lock") == "another-beat"


# -- runs waiting in flight follow their entry's policy ----------------------------------

class BrokerSwitch(RedBeatScheduler):
    """A broker that refuses every connection while the test sets ``down``."""

    down = False

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if self.down:
            raise ConnectionError("broker unreachable")
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


class SlowBroker(RedBeatScheduler):
    """A broker that takes 0.6 s to accept each message."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        time.sleep(0.6)
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def left_in_flight(schedule_redis, key, slots, run_now=()):
    """Runs of ``key`` as a beat that died after claiming them leaves them in flight."""
    for slot in slots:
        record = {"task_id": task_id_for(key, slot), "key": key, "scheduled": slot, "claimed_at": slot,
                  "token": "gone-host:1:dead", "retry_at": slot + 10, "attempts": 0}
        schedule_redis.hset("redbeat::inflight", record["task_id"],
                            json.dumps(record | ({"run_now": True} if slot in run_now else {})))


def saved_entry(app, name, last_run_at, **options):
    """An hourly entry whose last slot was ``last_run_at`` (UNIX seconds): not due again for an hour."""
    entry = RedBeatSchedulerEntry(name, f"tasks.{name}", schedule(3600), app=app, **options)
    entry.last_run_at = datetime.fromtimestamp(last_run_at, timezone.utc)
    return entry.save()


def slots_sent(broker):
    return [m["headers"]["redbeat_scheduled"] for m in published(broker)]


def test_a_run_whose_deadline_passes_while_it_waits_for_the_broker_is_recorded_missed(app, schedule_redis,
                                                                                     broker_redis):
    scheduler = BrokerSwitch(app=app)
    scheduler.down = True
    try:
        raw_entry(schedule_redis, "quote", starting_deadline=0.5)
        scheduler.tick()
        [record] = [json.loads(r) for r in schedule_redis.hvals("redbeat::inflight")]
        scheduler.down = False  # back before the retry, which comes a second later: past the deadline
        tick_until(scheduler, lambda: schedule_redis.hlen("redbeat::inflight") == 0, timeout=10,
                   message="the waiting run settled")
        assert tasks_sent(broker_redis) == []
        [entry] = scheduler.store.history("redbeat:quote")
        assert entry["task_id"] == record["task_id"] and entry["outcome"] == "missed"
        assert entry["reason"] == "its starting deadline passed while it waited in flight"
        status = json.loads(schedule_redis.hget("redbeat:quote", "status"))
        assert status["missed"] == 1 and status["last_missed_at"] == record["scheduled"]
    finally:
        scheduler.close()


def test_a_run_whose_deadline_passes_while_its_batch_is_published_is_missed_not_sent_late(app, schedule_redis,
                                                                                         broker_redis):
    scheduler = SlowBroker(app=app)
    try:
        for name in ("a", "b", "c"):
            raw_entry(schedule_redis, name, starting_deadline=0.5)
        scheduler.tick()
        assert len(published(broker_redis)) == 1
        outcomes = sorted(scheduler.store.history(f"redbeat:{name}")[0]["outcome"] for name in "abc")
        assert outcomes == ["missed", "missed", "published"]
        assert schedule_redis.hlen("redbeat::inflight") == 0
    finally:
        scheduler.close()


@pytest.mark.parametrize("catch_up, sent", [("skip", [2]), ("once", [2]), ("all", [1, 2])])
def test_runs_a_dead_beat_left_in_flight_follow_their_entrys_catch_up_policy(scheduler_for, app, schedule_redis,
                                                                            broker_redis, catch_up, sent):
    now = time.time()
    slots = [now - 3, now - 2, now - 1]
    saved_entry(app, "sync", slots[-1], catch_up=catch_up, catch_up_max=2)
    left_in_flight(schedule_redis, "redbeat:sync", slots)
    scheduler = scheduler_for()
    scheduler.tick()
    assert slots_sent(broker_redis) == [slots[i] for i in sent]
    assert schedule_redis.hlen("redbeat::inflight") == 0
    history = {record["scheduled"]: record for record in scheduler.store.history("redbeat:sync")}
    missed = [slot for i, slot in enumerate(slots) if i not in sent]
    for slot in missed:
        assert history[slot]["outcome"] == "missed"
        assert history[slot]["reason"].startswith(f"catch_up {catch_up} publishes the newest")
    assert json.loads(schedule_redis.hget("redbeat:sync", "status"))["missed"] == len(missed)


def test_a_run_now_request_waiting_in_flight_is_published_however_late_and_a_slot_is_not(
        scheduler_for, app, schedule_redis, broker_redis):
    now = time.time()
    saved_entry(app, "quote", now - 60, starting_deadline=1)
    left_in_flight(schedule_redis, "redbeat:quote", [now - 60, now - 30], run_now={now - 30})
    scheduler = scheduler_for()
    scheduler.tick()
    assert slots_sent(broker_redis) == [now - 30]
    history = {record["scheduled"]: record["outcome"] for record in scheduler.store.history("redbeat:quote")}
    assert history == {now - 60: "missed", now - 30: "published"}


def test_claiming_pauses_while_too_many_runs_wait_in_flight_and_says_so(app, schedule_redis, broker_redis, caplog):
    app.conf.update(redbeat_max_in_flight=3, redbeat_claim_batch_size=2)
    scheduler = BrokerSwitch(app=app)
    scheduler.down = True
    try:
        for name in "abcde":
            raw_entry(schedule_redis, name)
        with caplog.at_level(logging.INFO, logger="celery.beat"):
            scheduler.tick()  # two batches of two claimed, the third finds four waiting
            assert schedule_redis.hlen("redbeat::inflight") == 4
            assert schedule_redis.zscore("redbeat::schedule", "redbeat:e") == 0  # still due
            scheduler.tick()
            heartbeat = json.loads(schedule_redis.get("redbeat::heartbeat"))
            assert heartbeat["claiming_paused"] == "4 runs waiting in flight (redbeat_max_in_flight is 3)"
            assert heartbeat["claiming_paused_since"] == pytest.approx(time.time(), abs=10)
            assert schedule_redis.hlen("redbeat::inflight") == 4
            scheduler.down = False
            tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == 5, timeout=15,
                       message="all five runs once the broker takes them")
        assert caplog.text.count("claiming no new runs") == 1
        assert caplog.text.count("claiming runs again") == 1
        scheduler.tick()
        assert "claiming_paused" not in json.loads(schedule_redis.get("redbeat::heartbeat"))
    finally:
        scheduler.close()


def test_a_run_recorded_again_by_a_close_in_the_middle_of_a_tick_is_in_its_history_once(scheduler_for,
                                                                                        schedule_redis):
    scheduler = scheduler_for()
    raw_entry(schedule_redis)
    scheduler.tick()
    [record] = scheduler.store.history("redbeat:raw")
    # Celery's SIGTERM handler closes the scheduler wherever the tick is: here, after the
    # runs were recorded in Redis and before the tick forgot that it had to.
    run = InFlight(task_id=record["task_id"], key="redbeat:raw", scheduled=record["scheduled"],
                   claimed_at=record["scheduled"], token="", retry_at=0)
    scheduler.outcomes.unrecorded = [(run, "published", record["dispatched"])]
    scheduler.close()
    assert scheduler.store.history("redbeat:raw") == [record]


# -- review 4 ---------------------------------------------------------------------------

def test_a_static_entry_whose_key_holds_another_type_costs_only_itself(scheduler_for, schedule_redis, broker_redis,
                                                                       caplog):
    schedule_redis.set("redbeat:job", "someone else's string")
    scheduler = scheduler_for({"job": {"task": "tasks.job", "schedule": 3600},
                               "canary": {"task": "tasks.canary", "schedule": 1}})
    with caplog.at_level(logging.ERROR, logger="celery.beat"):
        tick_until(scheduler, lambda: "tasks.canary" in tasks_sent(broker_redis), message="the canary's run")
    assert schedule_redis.get("redbeat:job") == "someone else's string"
    assert "static entry job not written: its key redbeat:job holds another type" in caplog.text


def test_a_lock_and_an_in_flight_key_both_of_the_wrong_type_do_not_stop_beat(scheduler_for, schedule_redis,
                                                                             broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    schedule_redis.delete("redbeat::lock")
    schedule_redis.hset("redbeat::lock", "x", "1")
    schedule_redis.set("redbeat::inflight", "junk")
    raw_entry(schedule_redis)
    tick_until(scheduler, lambda: tasks_sent(broker_redis), message="a run after both keys are fixed by beat")
    assert schedule_redis.type("redbeat::inflight") in ("hash", "none")


def test_an_entry_key_that_is_not_utf8_is_parked_not_run_under_another_name(scheduler_for, schedule_redis,
                                                                            broker_redis):
    raw = schedule_redis.connection_pool.connection_kwargs  # same server, bytes in and out
    client = __import__("redis").Redis(host=raw["host"], port=raw["port"], db=raw["db"])
    for suffix in (b"\xff", b"\xfe"):
        client.hset(b"redbeat:job" + suffix, "definition", RAW_DEFINITION)
        client.zadd("redbeat::schedule", {b"redbeat:job" + suffix: 0})
    raw_entry(schedule_redis)
    scheduler = scheduler_for()
    tick_until(scheduler, lambda: tasks_sent(broker_redis), message="the good entry's run")
    assert tasks_sent(broker_redis) == ["tasks.raw"]
    for suffix in (b"\xff", b"\xfe"):
        assert b"not valid UTF-8" in client.hget(b"redbeat:job" + suffix, "parked")


def test_a_claim_batch_of_one_still_reaches_a_backlog_and_zero_is_refused(app, schedule_redis):
    from redbeat.client import get_store
    from redbeat.config import ConfigurationError, RedBeatConfig
    store = get_store(app)
    now = 1_800_000_000.0
    schedule_redis.zadd("redbeat::schedule", {"redbeat:old": 1, "redbeat:new": now})
    assert [r.key_text for r in store.read_due(now, 2).records] == ["redbeat:new", "redbeat:old"]
    app.conf.redbeat_claim_batch_size = -1
    with pytest.raises(ConfigurationError, match="redbeat_claim_batch_size"):
        RedBeatConfig(app)


def test_a_run_in_flight_whose_entry_key_became_a_string_is_recorded_missed(scheduler_for, schedule_redis,
                                                                            broker_redis):
    scheduler = scheduler_for()
    scheduler.tick()
    now = time.time()
    key = "redbeat:victim"
    record = {"task_id": task_id_for(key, now - 1), "key": key, "scheduled": now - 1, "claimed_at": now - 1,
              "token": "gone-host:1:dead", "retry_at": now - 1, "attempts": 0}
    schedule_redis.hset("redbeat::inflight", record["task_id"], json.dumps(record))
    schedule_redis.set(key, "not a hash")
    raw_entry(schedule_redis)
    tick_until(scheduler, lambda: schedule_redis.hlen("redbeat::inflight") == 0 and tasks_sent(broker_redis),
               message="the run settled and the canary ran")
    assert scheduler.health.failing_since is None
    assert "tasks.raw" in tasks_sent(broker_redis) and len(tasks_sent(broker_redis)) == 1


def test_a_lock_key_that_is_an_entrys_hash_is_never_deleted(app, schedule_redis, caplog):
    from redbeat import RedBeatScheduler
    app.conf.update(redbeat_lock_key="job", beat_schedule={})
    schedule_redis.hset("redbeat:job", "definition", RAW_DEFINITION)
    scheduler = RedBeatScheduler(app=app)
    try:
        with caplog.at_level(logging.ERROR, logger="celery.beat"):
            scheduler.tick()
        assert schedule_redis.hget("redbeat:job", "definition") == RAW_DEFINITION
        assert "holds a schedule entry's hash" in caplog.text
    finally:
        scheduler.close()


def test_an_entry_slow_to_decide_once_is_warned_about_and_parked_only_the_second_time(
        scheduler_for, schedule_redis, broker_redis, caplog, monkeypatch):
    from redbeat import budget
    monkeypatch.setattr(budget, "MIN_ENTRY_CPU", 0.0)
    monkeypatch.setattr(budget, "ENTRY_CPU_FRACTION", 0.0)
    scheduler = scheduler_for()
    raw_entry(schedule_redis, every=0.2)
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        tick_until(scheduler, lambda: tasks_sent(broker_redis), message="the first run, despite the cost")
        assert schedule_redis.hget("redbeat:raw", "parked") is None
        assert "it is parked if that happens again" in caplog.text
        tick_until(scheduler, lambda: schedule_redis.hget("redbeat:raw", "parked"), message="parked the second time")
    assert "twice" in json.loads(schedule_redis.hget("redbeat:raw", "parked"))["reason"]


def test_a_max_interval_set_after_the_first_tick_bounds_the_sleep(scheduler_for):
    scheduler = scheduler_for(redbeat_lock_timeout=300)
    assert scheduler.tick() == pytest.approx(100)  # nothing due: a third of the lock timeout
    scheduler.max_interval = 2
    assert scheduler.tick() <= 2


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
