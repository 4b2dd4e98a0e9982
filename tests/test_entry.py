"""Unit tests of RedBeatSchedulerEntry against fakeredis."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from celery.schedules import crontab, schedule

from redbeat import RedBeatSchedulerEntry
from redbeat.decoder import DecodeError, to_timestamp
from redbeat.schedules import rrule
from redbeat.slots import next_slot

UTC = timezone.utc


def stored(app, key):
    return app.redbeat_redis.hgetall(key)


def test_save_writes_the_hash_and_the_score(fake_app):
    entry = RedBeatSchedulerEntry("report", "tasks.report", schedule(60), args=[1, 2], kwargs={"x": 1},
                                  options={"queue": "q"}, app=fake_app).save()
    assert entry.key == "redbeat:report"
    fields = stored(fake_app, "redbeat:report")
    definition = json.loads(fields["definition"])
    assert definition == {"name": "report", "task": "tasks.report", "args": [1, 2], "kwargs": {"x": 1},
                          "options": {"queue": "q"}, "enabled": True,
                          "schedule": {"__type__": "interval", "every": 60.0, "relative": False}}
    meta = json.loads(fields["meta"])
    assert meta["total_run_count"] == 0
    assert meta["last_run_at"]["__type__"] == "datetime"
    score = fake_app.redbeat_redis.zscore("redbeat::schedule", "redbeat:report")
    assert score == pytest.approx(to_timestamp(entry.last_run_at) + 60, abs=0.01)


def test_from_key_and_from_name_load_what_was_saved(fake_app):
    RedBeatSchedulerEntry("a", "tasks.a", crontab(minute="5"), args=["x"], app=fake_app).save()
    by_key = RedBeatSchedulerEntry.from_key("redbeat:a", app=fake_app)
    by_name = RedBeatSchedulerEntry.from_name("a", app=fake_app)
    for entry in (by_key, by_name):
        assert entry.name == "a" and entry.task == "tasks.a" and list(entry.args) == ["x"]
        assert entry.schedule == crontab(minute="5")
        assert entry.enabled is True


def test_loading_a_missing_entry_raises_key_error(fake_app):
    with pytest.raises(KeyError):
        RedBeatSchedulerEntry.from_key("redbeat:nope", app=fake_app)
    with pytest.raises(KeyError):
        RedBeatSchedulerEntry.from_name("nope", app=fake_app)


def test_generate_key_uses_the_prefix(fake_app):
    assert RedBeatSchedulerEntry.generate_key(fake_app, "n") == "redbeat:n"


def test_saving_again_keeps_the_run_history(fake_app):
    entry = RedBeatSchedulerEntry("h", "tasks.h", schedule(10), app=fake_app).save()
    ran_at = datetime(2026, 1, 1, tzinfo=UTC)
    entry.reschedule(ran_at)
    RedBeatSchedulerEntry("h", "tasks.other", schedule(10), app=fake_app).save()
    loaded = RedBeatSchedulerEntry.from_name("h", app=fake_app)
    assert loaded.task == "tasks.other"
    assert loaded.last_run_at == ran_at


def test_entry_without_meta_has_never_run_and_is_due_now(fake_app):
    fake_app.redbeat_redis.hset("redbeat:raw", "definition",
                                '{"name": "raw", "task": "t", "schedule": {"__type__": "interval", "every": 5}}')
    entry = RedBeatSchedulerEntry.from_name("raw", app=fake_app)
    assert entry.last_run_at is None
    assert entry.total_run_count == 0
    assert entry.due_at <= datetime.now(UTC)
    assert entry.is_due().is_due


def test_meta_written_by_celery_redbeat_2_without_count_loads(fake_app):
    client = fake_app.redbeat_redis
    client.hset("redbeat:old", mapping={
        "definition": '{"name": "old", "task": "t", "schedule": {"__type__": "interval", "every": 5,'
                      ' "relative": false}, "args": [], "kwargs": {}, "options": {}, "enabled": true}',
        "meta": '{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 1, "day": 1, "hour": 0,'
                ' "minute": 0, "second": 0, "microsecond": 0, "timezone": "Europe/Paris"}}',
    })
    entry = RedBeatSchedulerEntry.from_name("old", app=fake_app)
    assert entry.last_run_at == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert entry.total_run_count == 0


def test_unknown_definition_fields_are_ignored(fake_app):
    fake_app.redbeat_redis.hset("redbeat:x", "definition", json.dumps({
        "name": "x", "task": "t", "schedule": {"__type__": "interval", "every": 5}, "future_field": 1}))
    assert RedBeatSchedulerEntry.from_name("x", app=fake_app).task == "t"


@pytest.mark.parametrize("definition, words", [
    ('{"name": "x"', "not valid JSON"),
    (b'\xff\xfe{}', "not valid UTF-8"),
    ('[1, 2]', "must be a JSON object"),
    ('{"name": "x", "schedule": {"__type__": "interval", "every": 5}}', "'task' is missing"),
    ('{"name": "x", "task": "t"}', "'schedule' is missing"),
    ('{"name": "x", "task": "t", "schedule": {"__type__": "lunar"}}', "unknown __type__ 'lunar'"),
    ('{"name": "x", "task": "t", "schedule": {"__type__": "crontab", "hour": "25"}}', "bad crontab"),
    ('{"name": "x", "task": "t", "schedule": 5, "args": {"a": 1}}', "'args' must be a list"),
    ('{"name": "x", "task": "t", "schedule": 5, "enabled": "no"}', "'enabled' must be true or false"),
])
def test_malformed_definitions_raise_naming_the_problem(definition, words):
    with pytest.raises(DecodeError, match=words):
        RedBeatSchedulerEntry.decode_definition(definition)


def test_malformed_meta_raises_naming_the_field():
    with pytest.raises(DecodeError, match="last_run_at"):
        RedBeatSchedulerEntry.decode_meta('{"last_run_at": "yesterday"}')
    assert RedBeatSchedulerEntry.decode_meta(None) == {"last_run_at": None, "total_run_count": 0}


def test_delete_removes_hash_and_score(fake_app):
    entry = RedBeatSchedulerEntry("d", "t", schedule(5), app=fake_app).save()
    entry.delete()
    assert not fake_app.redbeat_redis.exists("redbeat:d")
    assert fake_app.redbeat_redis.zscore("redbeat::schedule", "redbeat:d") is None


def test_next_records_a_run_and_moves_the_score(fake_app):
    entry = RedBeatSchedulerEntry("n", "t", schedule(30), app=fake_app).save()
    ran_at = datetime.now(UTC)
    following = entry.next(last_run_at=ran_at)
    assert following.total_run_count == 1
    meta = RedBeatSchedulerEntry.load_meta("redbeat:n", app=fake_app)
    assert meta == {"last_run_at": ran_at, "total_run_count": 1}
    score = fake_app.redbeat_redis.zscore("redbeat::schedule", "redbeat:n")
    assert score == pytest.approx(to_timestamp(ran_at) + 30, abs=0.01)


def test_finished_schedule_scores_minus_one(fake_app):
    start = datetime(2020, 1, 1, tzinfo=UTC)
    entry = RedBeatSchedulerEntry("once", "t", rrule("DAILY", dtstart=start, count=1), app=fake_app)
    entry.last_run_at = start
    assert entry.due_at is None
    assert entry.score == -1


def test_disabled_entry_is_never_due(fake_app):
    entry = RedBeatSchedulerEntry("off", "t", schedule(1), enabled=False, app=fake_app)
    entry.last_run_at = datetime(2000, 1, 1, tzinfo=UTC)
    assert entry.is_due() == (False, 5.0)


def test_next_slot_depends_only_on_the_given_instant():
    last = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert next_slot(schedule(60), last) == datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    assert next_slot(crontab(minute="*/15"), last) == datetime(2026, 3, 1, 12, 15, tzinfo=UTC)
    rule = rrule("HOURLY", dtstart=datetime(2026, 3, 1, tzinfo=UTC), count=13)
    assert next_slot(rule, last) is None
    assert next_slot(rule, last - timedelta(hours=1)) == last


def test_save_many_writes_like_save(fake_app):
    entries = [RedBeatSchedulerEntry(f"bulk-{i}", "t", schedule(60), args=[i], app=fake_app) for i in range(2500)]
    assert RedBeatSchedulerEntry.save_many(entries, app=fake_app) == 2500
    assert fake_app.redbeat_redis.zcard("redbeat::schedule") == 2500
    loaded = RedBeatSchedulerEntry.from_name("bulk-1234", app=fake_app)
    assert list(loaded.args) == [1234]
