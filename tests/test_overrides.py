"""Celery's publish hooks (maybe_due, apply_entry, apply_async) overridden or replaced:
called once per run published, with that run's message, as celery-redbeat 2.x's
tick called them; a real redis-server is the schedule and the broker."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from conftest import published, raw_entry, tasks_sent, tick_until

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry

NAMES = ("one", "two", "three")


class Recording(RedBeatScheduler):
    """Records (hook, entry name, task, task id) for every call of the hook it overrides."""

    calls: list[tuple[str, str, str, str | None]]

    def record(self, hook: str, entry) -> None:
        self.calls.append((hook, entry.name, entry.task, (entry.options or {}).get("task_id")))


class OverridesMaybeDue(Recording):
    def maybe_due(self, entry, producer=None):
        self.record("maybe_due", entry)
        return super().maybe_due(entry, producer=producer)


class OverridesApplyEntry(Recording):
    def apply_entry(self, entry, producer=None):
        self.record("apply_entry", entry)
        return super().apply_entry(entry, producer=producer)


class OverridesApplyAsync(Recording):
    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        self.record("apply_async", entry)
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def each_run_once(scheduler: Recording, hook: str, broker_redis) -> None:
    """Every message published went through ``hook`` exactly once, with its own entry and task id."""
    messages = published(broker_redis)
    assert len(messages) == len(NAMES)
    expected = sorted((hook, m["headers"]["redbeat_key"].split(":", 1)[1], m["task"], m["id"]) for m in messages)
    assert sorted(scheduler.calls) == expected


@pytest.mark.parametrize("batch_size", [1, 100])
@pytest.mark.parametrize(("cls", "hook"), [(OverridesMaybeDue, "maybe_due"), (OverridesApplyEntry, "apply_entry"),
                                           (OverridesApplyAsync, "apply_async")])
def test_an_overridden_hook_is_called_once_per_run_published(app, schedule_redis, broker_redis, cls, hook,
                                                             batch_size):
    app.conf.update(redbeat_publish_batch_size=batch_size)
    for name in NAMES:
        raw_entry(schedule_redis, name)
    scheduler = cls(app=app)
    scheduler.calls = []
    try:
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == len(NAMES), timeout=10, message="3 runs")
        scheduler.tick()  # nothing more is due: no more calls
        each_run_once(scheduler, hook, broker_redis)
    finally:
        scheduler.close()


@pytest.mark.parametrize("hook", ["maybe_due", "apply_entry", "apply_async"])
def test_a_hook_replaced_on_the_class_is_called_once_per_run_and_no_more_once_put_back(
        app, schedule_redis, broker_redis, monkeypatch, hook):
    # As sentry-sdk does (on the class), or a test (on the instance), after beat started ticking.
    for name in NAMES:
        raw_entry(schedule_redis, name)
    scheduler = Recording(app=app)
    scheduler.calls = []
    assert scheduler.ticker  # built before the hook is replaced, as in a beat that runs
    original = getattr(RedBeatScheduler, hook)

    def wrapper(self, entry, *args, **kwargs):
        self.record(hook, entry)
        return original(self, entry, *args, **kwargs)
    monkeypatch.setattr(RedBeatScheduler, hook, wrapper)
    try:
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == len(NAMES), timeout=10, message="3 runs")
        each_run_once(scheduler, hook, broker_redis)
        monkeypatch.undo()
        scheduler.calls.clear()
        for name in NAMES:
            RedBeatSchedulerEntry.from_name(name, app=app).run_now()
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == 2 * len(NAMES), timeout=10,
                   message="3 more runs")
        assert scheduler.calls == []  # replaced back: the hook is RedBeat's again
    finally:
        scheduler.close()


def test_maybe_due_replaced_on_the_instance_is_called_once_per_run(app, schedule_redis, broker_redis):
    for name in NAMES:
        raw_entry(schedule_redis, name)
    scheduler = Recording(app=app)
    scheduler.calls = []
    own = scheduler.maybe_due

    def maybe_due(entry, producer=None):
        scheduler.record("maybe_due", entry)
        return own(entry, producer=producer)
    scheduler.maybe_due = maybe_due
    try:
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == len(NAMES), timeout=10, message="3 runs")
        each_run_once(scheduler, "maybe_due", broker_redis)
    finally:
        scheduler.close()


def test_the_hooks_are_looked_at_once_per_batch_and_left_out_when_none_is_replaced(app, schedule_redis,
                                                                                   broker_redis):
    app.conf.update(redbeat_publish_batch_size=2)
    for name in NAMES:
        raw_entry(schedule_redis, name)
    scheduler = RedBeatScheduler(app=app)
    broker = scheduler.ticker.broker
    answers = []

    def sender():
        answers.append(type(scheduler)._message_sender(scheduler))
        return answers[-1]
    broker.sender = sender
    try:
        tick_until(scheduler, lambda: len(tasks_sent(broker_redis)) == len(NAMES), timeout=10, message="3 runs")
        assert answers == [scheduler._send_message] * 2  # 3 runs in batches of 2
    finally:
        scheduler.close()


class TwoStyleMaybeDue(Recording):
    """A maybe_due written for celery-redbeat 2.x: asks the entry, then apply_async with advance=True."""

    def maybe_due(self, entry, **kwargs):
        is_due, next_time_to_run = entry.is_due()
        if is_due:
            self.record("maybe_due", entry)
            self.apply_async(entry, **kwargs)
        return next_time_to_run


def test_a_2x_style_maybe_due_publishes_each_run_once_and_records_it_once(app, schedule_redis, broker_redis):
    raw_entry(schedule_redis, "one", every=60)
    scheduler = TwoStyleMaybeDue(app=app)
    scheduler.calls = []
    try:
        tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=10, message="the run")
        scheduler.tick()
        [message] = published(broker_redis)
        assert scheduler.calls == [("maybe_due", "one", "tasks.raw", message["id"])]
        # apply_async(advance=True) does not record the run a second time: the claim did.
        assert RedBeatSchedulerEntry.from_name("one", app=app).total_run_count == 1
    finally:
        scheduler.close()


class BrokerDownOnce(Recording):
    failures = 1

    def maybe_due(self, entry, producer=None):
        self.record("maybe_due", entry)
        return super().maybe_due(entry, producer=producer)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def test_a_failure_under_an_overridden_maybe_due_is_retried_with_the_same_task_id(app, schedule_redis,
                                                                                  broker_redis):
    raw_entry(schedule_redis, "one")
    scheduler = BrokerDownOnce(app=app)
    scheduler.calls = []
    try:
        scheduler.tick()
        assert tasks_sent(broker_redis) == []
        [record] = schedule_redis.hvals("redbeat::inflight")
        task_id = json.loads(record)["task_id"]
        tick_until(scheduler, lambda: tasks_sent(broker_redis), timeout=10, message="the retry")
        assert [m["id"] for m in published(broker_redis)] == [task_id]
        assert [call[3] for call in scheduler.calls] == [task_id, task_id]
    finally:
        scheduler.close()


class SecondsToNext(Recording):
    def maybe_due(self, entry, producer=None):
        seconds = super().maybe_due(entry, producer=producer)
        self.calls.append(("returned", entry.name, entry.task, seconds))
        return seconds


def test_maybe_due_of_a_claimed_run_returns_the_seconds_to_the_next_run(app, schedule_redis, broker_redis):
    raw_entry(schedule_redis, "one", every=60)
    scheduler = SecondsToNext(app=app)
    scheduler.calls = []
    try:
        tick_until(scheduler, lambda: scheduler.calls, timeout=10, message="the run")
        [(_, name, _, seconds)] = scheduler.calls
        assert name == "one"
        assert 55 < seconds <= 60
    finally:
        scheduler.close()


def test_maybe_due_of_an_entry_beat_did_not_claim_asks_whether_it_is_due(app, schedule_redis, broker_redis):
    scheduler = RedBeatScheduler(app=app)
    try:
        an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
        due = RedBeatSchedulerEntry("due", "tasks.raw", 60, app=app, last_run_at=an_hour_ago)
        assert 59 < scheduler.maybe_due(due, producer=scheduler.producer) <= 60
        assert tasks_sent(broker_redis) == ["tasks.raw"]
        not_due = RedBeatSchedulerEntry("later", "tasks.raw", 60, app=app,
                                        last_run_at=datetime.now(timezone.utc))
        assert 0 < scheduler.maybe_due(not_due) <= 60
        assert tasks_sent(broker_redis) == ["tasks.raw"]
    finally:
        scheduler.close()
