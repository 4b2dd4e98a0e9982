"""Unit tests of RedBeatSchedulerEntry against fakeredis, and of what its
options may put in a message, published through a real Redis broker."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from importlib.resources import files

import jsonschema
import pytest
from celery import Celery
from celery.schedules import crontab, schedule
from click.testing import CliRunner
from conftest import published

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.cli import redbeat
from redbeat.config import MAX_CATCH_UP
from redbeat.decoder import DecodeError, to_timestamp
from redbeat.entry import PROTOCOL_HEADERS, RESERVED_HEADERS, RESERVED_OPTIONS
from redbeat.records import InFlight
from redbeat.runs import task_id_for
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


# -- options that would override Celery's task protocol --------------------------

def definition_with(**fields):
    return json.dumps({"name": "x", "task": "adv.t", "schedule": 60, **fields})


def test_the_refused_headers_are_every_header_celery_sets():
    message = Celery(set_as_current=False).amqp.as_task_v2("an-id", "a.task")
    assert PROTOCOL_HEADERS == set(message.headers)


@pytest.mark.parametrize("header", sorted(RESERVED_HEADERS))
def test_a_header_the_protocol_or_redbeat_owns_is_refused_naming_it_and_the_list(header):
    with pytest.raises(DecodeError) as refused:
        RedBeatSchedulerEntry.decode_definition(definition_with(options={"headers": {header: "x", "tenant": "a"}}))
    message = str(refused.value)
    assert f"sets headers.{header}," in message
    assert "headers " + ", ".join(sorted(RESERVED_HEADERS)) in message


@pytest.mark.parametrize("option", sorted(RESERVED_OPTIONS))
def test_an_option_that_sets_a_protocol_header_or_the_task_id_is_refused(option):
    with pytest.raises(DecodeError, match=f"sets {option},"):
        RedBeatSchedulerEntry.decode_definition(definition_with(options={option: "x"}))


def test_headers_must_be_an_object_and_other_headers_and_options_pass():
    with pytest.raises(DecodeError, match="'options.headers' must be an object"):
        RedBeatSchedulerEntry.decode_definition(definition_with(options={"headers": ["task"]}))
    options = {"queue": "q", "expires": 30, "priority": 3, "headers": {"tenant": "acme", "Task": "case matters"}}
    assert RedBeatSchedulerEntry.decode_definition(definition_with(options=options))["options"] == options


def test_save_refuses_what_beat_would_park_and_writes_nothing(fake_app):
    entry = RedBeatSchedulerEntry("x", "adv.t", schedule(60), options={"headers": {"task": "adv.secret"}},
                                  app=fake_app)
    with pytest.raises(DecodeError, match="headers.task"):
        entry.save()
    with pytest.raises(DecodeError, match="sets task_id"):
        RedBeatSchedulerEntry.save_many([RedBeatSchedulerEntry("y", "adv.t", schedule(60), options={
            "task_id": "fixed"}, app=fake_app)], app=fake_app)
    assert not fake_app.redbeat_redis.exists("redbeat:x", "redbeat:y")


def test_the_add_command_refuses_a_protocol_header_in_one_line(redis_url, schedule_redis, tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"name": "x", "task": "adv.t", "schedule": 60, "options": {"headers": {"id": "fixed"}}}))
    result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, "add", "--file", str(path)])
    assert result.exit_code == 1
    assert "invalid entry: definition field 'options' sets headers.id," in result.output
    assert "Traceback" not in result.output and not schedule_redis.exists("redbeat:x")


@pytest.fixture
def beat(app):
    scheduler = RedBeatScheduler(app=app)
    yield scheduler
    scheduler.close()


def test_an_entry_setting_the_task_header_is_parked_and_never_published(beat, schedule_redis, broker_redis):
    for name, options in {"adv": {"headers": {"task": "adv.secret", "id": "fixed"}},
                          "canary": {"headers": {"tenant": "acme"}}}.items():
        schedule_redis.hset(f"redbeat:{name}", "definition", json.dumps(
            {"name": name, "task": "adv.t", "schedule": 3600, "options": options}))
        schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    beat.tick()
    [message] = published(broker_redis)
    headers = message["headers"]
    assert headers["task"] == "adv.t" and headers["redbeat_key"] == "redbeat:canary"
    assert headers["tenant"] == "acme" and headers["id"] == headers["root_id"] != "fixed"
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:adv") == -1
    reason = json.loads(schedule_redis.hget("redbeat:adv", "parked"))["reason"]
    assert "sets headers.id, headers.task," in reason


def test_publishing_drops_protocol_headers_that_slipped_through(beat, broker_redis, caplog):
    """Defence in depth: an entry built without loading it (a subclass, a plug-in)."""
    entry = RedBeatSchedulerEntry("adv", "adv.t", schedule(60), app=beat.app, options={
        "task_id": "fixed", "shadow": "adv.shown", "root_id": "r",
        "headers": {"task": "adv.secret", "id": "fixed", "redbeat_key": "redbeat:other", "tenant": "acme"}})
    scheduled = time.time()
    run = InFlight(task_id=task_id_for("redbeat:adv", scheduled), key="redbeat:adv", scheduled=scheduled,
                   claimed_at=scheduled, token="t", retry_at=scheduled + 10)
    with caplog.at_level(logging.ERROR, logger="celery.beat"):
        assert beat.ticker.publisher.send(entry, run) is None
    [message] = published(broker_redis)
    headers = message["headers"]
    assert headers["task"] == "adv.t" and headers["id"] == headers["root_id"] == run.task_id
    assert headers["shadow"] is None and headers["redbeat_key"] == "redbeat:adv" and headers["tenant"] == "acme"
    assert ("entry adv sets root_id, shadow, task_id, headers.id, headers.redbeat_key, headers.task, which"
            in caplog.text)


# -- numbers in scheduling options: finite, in range, never booleans --------------

@pytest.mark.parametrize("field, value, words", [
    ("starting_deadline", float("nan"), "'starting_deadline' must be a number of seconds, at least 0 .*, not nan"),
    ("starting_deadline", float("inf"), "'starting_deadline' must be a number of seconds, at least 0"),
    ("starting_deadline", -2, "'starting_deadline' must be a number of seconds, at least 0"),
    ("starting_deadline", True, "'starting_deadline' must be a number of seconds"),
    ("jitter", float("nan"), "'jitter' must be a number of seconds from 0 to 86400"),
    ("jitter", 1e9, "'jitter' must be a number of seconds from 0 to 86400"),
    ("jitter", False, "'jitter' must be a number"),
    ("catch_up_max", MAX_CATCH_UP + 1, f"'catch_up_max' must be a whole number from 0 to {MAX_CATCH_UP}"),
    ("catch_up_max", 10**30, "'catch_up_max' must be a whole number from 0 to"),
    ("catch_up_max", 5.5, "'catch_up_max' must be a whole number"),
    ("catch_up_max", True, "'catch_up_max' must be a whole number"),
    ("max_runs", -2, r"'max_runs' must be a whole number, at least 1 \(-1 or null: no limit\)"),
    ("max_runs", float("nan"), "'max_runs' must be a whole number"),
    ("max_runs", True, "'max_runs' must be a whole number"),
    ("start_at", {"__type__": "datetime", "year": 1, "month": 1, "day": 1, "timezone": -3600},
     "'start_at' must be between 1970 and 9999"),
    ("end_at", {"__type__": "datetime", "year": 9999, "month": 12, "day": 31, "hour": 23, "timezone": -7200},
     "'end_at' must be between 1970 and 9999"),
])
def test_ambiguous_or_unbounded_option_values_are_refused_naming_field_and_range(field, value, words):
    with pytest.raises(DecodeError, match=words):
        RedBeatSchedulerEntry.decode_definition(definition_with(**{field: value}))


def test_end_at_before_start_at_is_refused():
    def moment(year):
        return {"__type__": "datetime", "year": year, "month": 1, "day": 1}
    with pytest.raises(DecodeError, match="'end_at' must not be before 'start_at'"):
        RedBeatSchedulerEntry.decode_definition(definition_with(start_at=moment(2027), end_at=moment(2026)))


@pytest.mark.parametrize("value", [None, -1])
def test_max_runs_null_or_minus_one_means_no_limit(fake_app, value):
    fields = RedBeatSchedulerEntry.decode_definition(definition_with(max_runs=value))
    loaded = RedBeatSchedulerEntry(app=fake_app, **fields)
    built = RedBeatSchedulerEntry("y", "t", schedule(60), max_runs=value, app=fake_app)
    for entry in (loaded, built):
        entry.total_run_count = 10**6
        assert entry.policy().max_runs is None and entry.score > 0


def test_one_entry_replays_at_most_the_catch_up_maximum_per_look(fake_app):
    fields = RedBeatSchedulerEntry.decode_definition(json.dumps({
        "name": "fast", "task": "t", "schedule": {"__type__": "interval", "every": 0.001},
        "catch_up": "all", "catch_up_max": MAX_CATCH_UP}))
    entry = RedBeatSchedulerEntry(app=fake_app, **fields)
    now = datetime.now(UTC)
    entry.last_run_at = now - timedelta(hours=1)
    plan = entry.plan(now)
    assert len(plan.runs) == MAX_CATCH_UP and plan.missed > 3_000_000


def test_the_schema_refuses_what_beat_refuses_and_names_the_same_lists():
    schema = json.loads((files("redbeat") / "schema.json").read_text())
    options = schema["$defs"]["options"]
    assert set(options["propertyNames"]["not"]["enum"]) == RESERVED_OPTIONS
    assert set(options["properties"]["headers"]["propertyNames"]["not"]["enum"]) == RESERVED_HEADERS
    validator = jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/definition"})
    interval = {"__type__": "interval", "every": 5}
    good = [{"options": {"headers": {"tenant": "acme"}, "expires": 30}}, {"max_runs": -1}, {"max_runs": None},
            {"catch_up_max": MAX_CATCH_UP}, {"jitter": 86400}, {"schedule": {**interval, "relative": True}}]
    bad = [{"options": {"headers": {"task": "adv.secret"}}}, {"options": {"task_id": "fixed"}},
           {"options": {"headers": "task"}}, {"catch_up_max": MAX_CATCH_UP + 1}, {"max_runs": -2},
           {"jitter": 86401}, {"starting_deadline": -2}, {"max_runs": 0},
           {"schedule": {**interval, "relative": "false"}},
           {"schedule": {"__type__": "interval", "every": 1e12}}, {"schedule": 1e12}]
    for fields in good:
        definition = {"name": "x", "task": "adv.t", "schedule": 60, **fields}
        validator.validate(definition)
        RedBeatSchedulerEntry.decode_definition(json.dumps(definition))
    for fields in bad:
        definition = {"name": "x", "task": "adv.t", "schedule": 60, **fields}
        assert not validator.is_valid(definition), fields
        with pytest.raises(DecodeError):
            RedBeatSchedulerEntry.decode_definition(json.dumps(definition))
