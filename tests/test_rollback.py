"""Rolling back to celery-redbeat 2.x without an outage (docs/migrating.rst):
``redbeat rollback-to-2`` against the real 2.4.2 (in its own virtualenv, as in
test_compat_redbeat2.py), and the pure plans it writes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import tasks_sent, tick_until
from test_compat_redbeat2 import redbeat2_python, run_old  # noqa: F401  (a fixture)

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.cli import redbeat
from redbeat.rollback import REDBEAT_OPTIONS, SIDE_FIELD, Action, plan_definition, plan_entry, plan_meta, plan_undo
from redbeat.validation import OPTIONAL_FIELDS

EVERY_SECOND = {"__type__": "interval", "every": 1, "relative": False}
MINUTELY = {"__type__": "crontab", "minute": "*"}
PARIS = "Europe/Paris"
JAN_2020 = {"__type__": "datetime", "year": 2020, "month": 1, "day": 1, "timezone": "UTC"}


def definition(name: str, schedule: object, **fields: object) -> dict:
    return {"name": name, "task": f"t.{name}", "schedule": schedule, **fields}


# -- the plans: pure functions of the stored text -------------------------------------------

def test_every_redbeat_option_is_dropped_saying_what_2x_does_instead():
    assert set(REDBEAT_OPTIONS) == set(OPTIONAL_FIELDS)
    for option, words in REDBEAT_OPTIONS.items():
        action, reasons, written = plan_definition(json.dumps(definition("e", EVERY_SECOND, **{option: 1})), "e")
        assert action is Action.REWRITE and reasons == (f"{option} dropped: {words}",)
        assert json.loads(written) == definition("e", EVERY_SECOND)


@pytest.mark.parametrize("schedule, kept, why", [
    ({**MINUTELY, "timezone": PARIS}, MINUTELY, "runs it in the app's timezone"),
    ({**MINUTELY, "hour": None}, MINUTELY, "same meaning"),
    ({"__type__": "rrule", "freq": 5, "dtstart": 1700000000, "timezone": PARIS},
     {"__type__": "rrule", "freq": 5, "dtstart": 1700000000}, "at dtstart's UTC offset"),
    ({"__type__": "rrule", "freq": 5, "dtstart": JAN_2020},
     {"__type__": "rrule", "freq": 5, "dtstart": 1577836800.0, "dtstart_tz": 0}, "as 2.x reads it"),
    ({"__type__": "rrule", "freq": 2, "byweekday": [{"__type__": "weekday", "wkday": 0, "x": 1}]},
     {"__type__": "rrule", "freq": 2, "byweekday": [{"__type__": "weekday", "wkday": 0}]}, "weekday field x"),
    ({"__type__": "interval", "every": 5}, {"__type__": "interval", "every": 5, "relative": False},
     "out of its schedule for good"),
])
def test_schedules_2x_cannot_build_are_written_in_a_form_it_can(schedule, kept, why):
    action, reasons, written = plan_definition(json.dumps(definition("e", schedule)), "e")
    assert action is Action.REWRITE and why in "; ".join(reasons)
    assert json.loads(written)["schedule"] == kept
    assert plan_definition(written, "e")[0] is Action.KEEP  # one rewrite is enough


def test_typed_values_anywhere_in_a_definition_are_made_readable():
    args = [{"__type__": "datetime", "year": 2020, "month": 1, "day": 1, "timezone": None}]
    action, reasons, written = plan_definition(json.dumps(definition("e", 60, args=args, note="x")), "e")
    assert action is Action.REWRITE
    assert json.loads(written)["args"][0]["timezone"] == "UTC" and "note" not in json.loads(written)
    assert any("'note' unknown to 2.x" in reason for reason in reasons)


@pytest.mark.parametrize("schedule", [
    {"__type__": "clocked", "at": JAN_2020},
    {"__type__": "solar", "event": "sunset", "lat": 48.85, "lon": 2.35},
    {"__type__": "nonesuch"}, "every day", None,
])
def test_entries_no_2x_schedule_can_stand_for_are_held(schedule):
    action, reasons, written = plan_definition(json.dumps(definition("e", schedule)), "e")
    assert action is Action.HOLD and written is None and "not run under 2.x" in reasons[0]


def test_a_name_other_than_the_keys_is_written_as_the_keys():
    for stored in (definition("other", 60), {"task": "t", "schedule": 60}):
        action, reasons, written = plan_definition(json.dumps(stored), "e")
        assert action is Action.REWRITE and "every tick" in reasons[0] and json.loads(written)["name"] == "e"


def test_plain_definitions_and_entries_2x_never_reads_are_left_alone():
    plain = json.dumps(definition("e", EVERY_SECOND, args=[1], options={"queue": "q"}, enabled=False)).encode()
    assert plan_entry("redbeat:e", "e", 0.0, {"definition": plain, "status": b"{}", "run_now": b"1"}).action \
        is Action.KEEP
    assert plan_definition(json.dumps(definition("e", 60.5)), "e")[0] is Action.KEEP
    jittered = json.dumps(definition("e", 60, jitter=3)).encode()
    assert plan_entry("redbeat:e", "e", -1.0, {"definition": jittered}).action is Action.SKIP
    assert plan_entry("redbeat:e", "e", 0.0, {"meta": b"{}"}).action is Action.SKIP
    assert plan_entry("redbeat:e", "e", 0.0, {"definition": jittered, SIDE_FIELD: b"{}"}).action is Action.KEEP


def test_an_entry_whose_key_is_not_utf8_is_held():
    """2.x reads the schedule with decode_responses: one such member fails its whole tick."""
    key = b"redbeat:caf\xe9".decode("utf-8", "surrogateescape")
    plan = plan_entry(key, key[8:], 0.0, {"definition": json.dumps(definition(key[8:], 60)).encode()})
    assert plan.action is Action.HOLD and "not valid UTF-8" in plan.reasons[0]


@pytest.mark.parametrize("meta, why", [
    ({"last_run_at": None, "total_run_count": 2, "note": "x"}, "meta field note"),
    ({"total_run_count": 2}, "without last_run_at"),
])
def test_meta_2x_cannot_read_is_rewritten_keeping_the_run_count(meta, why):
    reasons, written = plan_meta(json.dumps(meta).encode())
    assert why in "; ".join(reasons)
    assert json.loads(written) == {"last_run_at": None, "total_run_count": 2}
    assert plan_meta(written.encode()) == ((), None)
    assert plan_meta(b"not json") == ((), None)  # RedBeat parks it: left to it


def test_undo_keeps_a_definition_edited_under_2x():
    original = json.dumps(definition("e", 60, jitter=3))
    side = json.dumps({"definition": original, "written": json.dumps(definition("e", 60))}).encode()
    assert plan_undo("redbeat:e", side, json.dumps(definition("e", 60.0)).encode()).restore == original
    edited = plan_undo("redbeat:e", side, json.dumps(definition("e", 30)).encode())
    assert edited.restore is None and "edited since the rollback" in edited.note
    assert plan_undo("redbeat:e", b"junk", None).restore is None


# -- with the real celery-redbeat 2.4.2 ------------------------------------------------------

SCHEDULE = {
    "plain": definition("plain", EVERY_SECOND, options={"queue": "celery"}),
    "plain-cron": definition("plain-cron", MINUTELY),
    "jittered": definition("jittered", EVERY_SECOND, jitter=0.2, catch_up="skip", max_runs=100,
                           starting_deadline=600),
    "zoned-cron": definition("zoned-cron", {**MINUTELY, "timezone": PARIS}),
    "zoned-rrule": definition("zoned-rrule", {"__type__": "rrule", "freq": "MINUTELY", "dtstart": 1700000000,
                                              "timezone": PARIS}),
    "no-relative": definition("no-relative", {"__type__": "interval", "every": 1}),
    "odd-meta": definition("odd-meta", EVERY_SECOND),
    "clocked": definition("clocked", {"__type__": "clocked", "at": JAN_2020}),
}
ODD_META = json.dumps({"last_run_at": None, "total_run_count": 0, "note": "written by a dashboard"})
REWRITTEN = {"jittered", "zoned-cron", "zoned-rrule", "no-relative", "odd-meta"}


@pytest.fixture
def rollback_cli(redis_url):
    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output
    return run


def snapshot(client) -> dict:
    """Every key of the database with its content."""
    dump = {}
    for key in client.keys("*"):
        kind = client.type(key)
        dump[key] = {"hash": client.hgetall, "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                     "string": client.get}[kind](key)
    return dump


def stored(client, name: str) -> dict:
    return client.hgetall(f"redbeat:{name}")


def test_a_schedule_using_redbeat_options_rolls_back_to_2x_and_forward_again(
        redbeat2_python, rollback_cli, app, redis_url, schedule_redis, broker_redis):  # noqa: F811
    for name, stored_definition in SCHEDULE.items():
        schedule_redis.hset(f"redbeat:{name}", "definition", json.dumps(stored_definition))
        schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    schedule_redis.hset("redbeat:odd-meta", "meta", ODD_META)
    schedule_redis.hset("other:data", "definition", json.dumps(SCHEDULE["jittered"]))  # not ours: never touched

    # 2.4.2's tick fails on this schedule and sends nothing: its beat process would end.
    before = run_old(redbeat2_python, redis_url, "tick")
    assert before["error"].startswith(("TypeError", "AttributeError")) and before["sent"] == []
    assert "2x-unreadable" in rollback_cli("doctor")  # a notice: exit 0

    untouched = snapshot(schedule_redis)
    dry_run = rollback_cli("rollback-to-2")
    assert snapshot(schedule_redis) == untouched
    assert "Dry run" in dry_run and "1 held entries will not run under celery-redbeat 2.x" in dry_run
    assert "crontab timezone 'Europe/Paris' dropped: 2.x runs it in the app's timezone" in dry_run

    assert "Applied" in rollback_cli("rollback-to-2", "--apply")
    prepared = snapshot(schedule_redis)
    assert "nothing to do" in rollback_cli("rollback-to-2", "--apply")
    assert snapshot(schedule_redis) == prepared
    assert prepared["other:data"] == untouched["other:data"]
    assert "rolled-back" in rollback_cli("doctor", code=1)

    # 2.4.2 ticks, and sends every entry but the held one.
    after = run_old(redbeat2_python, redis_url, "tick")
    assert after["error"] is None
    assert sorted(after["sent"]) == sorted(set(SCHEDULE) - {"clocked"})
    ran_under_2x = {name: json.loads(stored(schedule_redis, name)["meta"]) for name in REWRITTEN}
    assert all(meta["total_run_count"] == 1 for meta in ran_under_2x.values())

    ran = snapshot(schedule_redis)
    assert "put back" in rollback_cli("rollback-to-2", "--undo")
    assert snapshot(schedule_redis) == ran
    assert "Undone" in rollback_cli("rollback-to-2", "--undo", "--apply")
    assert "nothing to do" in rollback_cli("rollback-to-2", "--undo", "--apply")
    for name in REWRITTEN:
        fields = stored(schedule_redis, name)
        assert json.loads(fields["definition"]) == SCHEDULE[name] and SIDE_FIELD not in fields
        assert json.loads(fields["meta"]) == ran_under_2x[name]  # the runs 2.x recorded are kept
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:clocked") == 0
    assert not schedule_redis.exists("redbeat::held-for-3")

    # RedBeat's beat runs everything again, with its own options and 2.x's last runs.
    zoned = RedBeatSchedulerEntry.from_name("zoned-cron", app=app)
    assert zoned.schedule.timezone == PARIS and zoned.total_run_count == 1
    assert RedBeatSchedulerEntry.from_name("jittered", app=app).jitter == 0.2
    scheduler = RedBeatScheduler(app=app)
    try:
        tick_until(scheduler, lambda: {"t.plain", "t.jittered", "t.no-relative", "t.odd-meta", "t.clocked"}
                   <= set(tasks_sent(broker_redis)), message="RedBeat dispatching every entry")
    finally:
        scheduler.close()
    assert RedBeatSchedulerEntry.from_name("jittered", app=app).total_run_count >= 2
    kinds = {finding["kind"] for finding in json.loads(rollback_cli("doctor", "--json"))}
    assert kinds == {"2x-unreadable", "finished"}  # the clocked one-off has run: it is done, nothing wrong
