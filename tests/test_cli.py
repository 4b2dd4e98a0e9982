"""The command line against a real redis-server: entries written by raw Redis
commands and by the commands themselves, and a real beat for status and history."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import Processes, wait_for

from redbeat import specs
from redbeat.cli import redbeat
from redbeat.decoder import dumps, loads
from redbeat.slots import next_slot

RAW = {"name": "raw", "task": "tasks.raw", "schedule": {"__type__": "interval", "every": 30}, "args": [1]}


@pytest.fixture
def cli(redis_url):
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output
    return run


def test_list_shows_entries_written_with_raw_redis_commands(cli, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps(RAW))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 0})
    schedule_redis.hset("redbeat:broken", "definition", '{"name":')
    schedule_redis.zadd("redbeat::schedule", {"redbeat:broken": 0})
    output = cli("list")
    assert output.splitlines()[0].split() == ["NAME", "TASK", "SCHEDULE", "ENABLED", "NEXT", "RUN", "LAST", "RUN",
                                              "RUNS", "PARKED"]
    assert "every 30s" in output and "now (score 0)" in output and "not valid JSON" in output
    listed = json.loads(cli("list", "--json"))
    assert {item["name"] for item in listed} == {"raw", "broken"}
    assert [item["name"] for item in json.loads(cli("list", "--json", "--task", "tasks.raw"))] == ["raw"]
    assert [item["name"] for item in json.loads(cli("list", "--json", "--match", "br*"))] == ["broken"]


def test_add_from_options_and_show(cli, schedule_redis):
    cli("add", "report", "--task", "reports.weekly", "--cron", "5 2 * * 1", "--timezone", "Europe/Paris",
        "--args", "[1, 2]", "--queue", "reports", "--option", "jitter=30")
    definition = json.loads(schedule_redis.hget("redbeat:report", "definition"))
    assert definition["schedule"] == {"__type__": "crontab", "minute": "5", "hour": "2", "day_of_month": "*",
                                      "month_of_year": "*", "day_of_week": "1", "timezone": "Europe/Paris"}
    assert definition["options"] == {"queue": "reports"} and definition["jitter"] == 30
    shown = json.loads(cli("show", "report", "--json"))
    assert shown["schedule"] == "at 02:05 Mon in Europe/Paris"
    assert len(shown["next_runs"]) == 5
    assert all("+01:00" in run["local"] for run in shown["next_runs"])
    text = cli("show", "report")
    assert "next runs:" in text and "CET" in text


@pytest.mark.parametrize("args, words, code", [
    (["--task", "t", "--every", "10", "--cron", "* * * * *"], "exactly one of", 2),
    (["--task", "t", "--cron", "61 * * * *"], "--cron: minute field '61' is out of range 0-59", 2),
    (["--every", "10"], "'task' is missing", 1),
    (["--task", "t", "--every", "10", "--args", "{oops"], "--args must be JSON", 2),
    (["--task", "t", "--every", "10", "--option", 'catch_up="maybe"'], "'catch_up' must be one of", 1),
    (["--task", "t", "--cron", "* * *"], "five fields", 2),
])
def test_add_refuses_invalid_input_naming_the_field(cli, args, words, code):
    assert words in cli("add", "x", *args, code=code)


def test_add_from_a_file_and_refuse_duplicates(cli, tmp_path, schedule_redis):
    path = tmp_path / "entry.json"
    path.write_text(json.dumps({**RAW, "name": "from-file"}))
    cli("add", "--file", str(path))
    assert schedule_redis.exists("redbeat:from-file")
    assert "exists already" in cli("add", "--file", str(path), code=1)


def test_rrule_and_one_off_entries(cli, schedule_redis):
    cli("add", "weekly", "--task", "t", "--rrule", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9", "--timezone", "Asia/Tokyo")
    runs = json.loads(cli("show", "weekly", "--json"))["next_runs"]
    assert all(run["local"].endswith("09:00:00+09:00") for run in runs)
    cli("add", "launch", "--task", "t", "--at", "2030-01-01T10:00:00+01:00")
    assert json.loads(cli("show", "launch", "--json"))["next_run"] == "2030-01-01T09:00:00+00:00"


def test_pause_resume_run_now_edit_remove(cli, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps(RAW))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 100})
    cli("pause", "raw")
    assert json.loads(schedule_redis.hget("redbeat:raw", "definition"))["enabled"] is False
    cli("resume", "raw")
    assert json.loads(schedule_redis.hget("redbeat:raw", "definition"))["enabled"] is True
    cli("run-now", "raw")
    assert schedule_redis.hexists("redbeat:raw", "run_now")
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:raw") == 0
    cli("edit", "raw", "args", "[5, 6]")
    assert json.loads(schedule_redis.hget("redbeat:raw", "definition"))["args"] == [5, 6]
    assert "must be a list" in cli("edit", "raw", "args", '"five"', code=1)
    cli("remove", "raw")
    assert not schedule_redis.exists("redbeat:raw")
    assert "no entry named 'raw'" in cli("remove", "raw", code=1)


def test_export_import_round_trips_exactly_and_import_is_a_dry_run_first(cli, schedule_redis, tmp_path,
                                                                         redis_server):
    schedule_redis.hset("redbeat:raw", mapping={"definition": json.dumps(RAW), "meta": '{"total_run_count": 3}'})
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 1234.5})
    raw_bytes = redis_server.client(0, decode=False)
    raw_bytes.hset("redbeat:odd", "definition", b'{"name": "\xff"}')
    raw_bytes.zadd("redbeat::schedule", {"redbeat:odd": 7})
    schedule_redis.sadd("redbeat::statics", "raw")
    dump = tmp_path / "schedule.json"
    dump.write_text(cli("export"))
    before = {key: raw_bytes.hgetall(key) for key in (b"redbeat:raw", b"redbeat:odd")}
    schedule_redis.flushdb()

    report = json.loads(cli("import", str(dump), "--json"))
    assert sorted(report["create"]) == ["odd", "raw"] and report["applied"] is False
    assert not schedule_redis.exists("redbeat:raw")
    cli("import", str(dump), "--apply")
    assert {key: raw_bytes.hgetall(key) for key in before} == before
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:raw") == 1234.5
    assert schedule_redis.smembers("redbeat::statics") == {"raw"}
    again = json.loads(cli("import", str(dump), "--json"))
    assert sorted(again["unchanged"]) == ["odd", "raw"]


def test_import_a_beat_schedule_dict_and_refuse_invalid_specs(cli, tmp_path, schedule_redis):
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps({"nightly": {"task": "reports.nightly", "schedule": {"__type__": "crontab",
                                                                                      "minute": "0", "hour": "3"}},
                                 "every-minute": {"task": "tasks.tick", "schedule": 60}}))
    assert sorted(json.loads(cli("import", str(specs), "--json", "--apply"))["create"]) == ["every-minute", "nightly"]
    assert json.loads(schedule_redis.hget("redbeat:nightly", "definition"))["task"] == "reports.nightly"
    specs.write_text(json.dumps({"bad": {"task": "t", "schedule": {"__type__": "crontab", "hour": "99"}}}))
    output = cli("import", str(specs), "--apply", code=1)
    assert "invalid: bad" in output and not schedule_redis.exists("redbeat:bad")


def test_import_from_a_python_beat_schedule(cli, tmp_path, schedule_redis, monkeypatch):
    (tmp_path / "someconf.py").write_text(
        "from celery.schedules import crontab\n"
        "beat_schedule = {'nightly': {'task': 'reports.nightly', 'schedule': crontab(minute=0, hour=3)}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cli("import", "--beat-schedule", "someconf:beat_schedule", "--apply")
    assert schedule_redis.exists("redbeat:nightly")


def test_schema_describes_what_beat_accepts(cli):
    from redbeat.decoder import DecodeError
    from redbeat.entry import RedBeatSchedulerEntry

    schema = json.loads(cli("schema"))
    validator = jsonschema.Draft202012Validator(
        {**schema, "$ref": "#/$defs/definition"}, format_checker=None)
    good = [RAW, {"task": "t", "schedule": 5},
            {"task": "t", "schedule": {"__type__": "crontab", "minute": "*/5", "timezone": "Europe/Paris"}},
            {"task": "t", "schedule": {"__type__": "rrule", "freq": "DAILY", "byweekday": [
                {"__type__": "weekday", "wkday": 0, "n": 1}]}, "catch_up": "skip", "max_runs": 3},
            {"task": "t", "schedule": {"__type__": "clocked", "at": {"__type__": "datetime", "year": 2027,
                                                                      "month": 1, "day": 1}}}]
    bad = [{"schedule": 5}, {"task": "t", "schedule": 0}, {"task": "t", "schedule": 5, "catch_up": "maybe"},
           {"task": "t", "schedule": 5, "args": {}}, {"task": "t", "schedule": 5, "enabled": "yes"},
           {"task": "t", "schedule": {"__type__": "interval", "every": -1}}]
    for definition in good:
        validator.validate(definition)
        RedBeatSchedulerEntry.decode_definition(json.dumps(definition))
    for definition in bad:
        assert not validator.is_valid(definition), definition
        with pytest.raises(DecodeError):
            RedBeatSchedulerEntry.decode_definition(json.dumps(definition))


def test_doctor_explains_what_is_wrong(cli, schedule_redis):
    schedule_redis.zadd("redbeat::schedule", {"redbeat:gone": 5})
    schedule_redis.hset("redbeat:unscheduled", "definition", json.dumps(RAW))
    schedule_redis.hset("redbeat:bad", "definition", "{")
    schedule_redis.zadd("redbeat::schedule", {"redbeat:bad": 5})
    schedule_redis.hset("redbeat:parked", mapping={"definition": "{", "parked": '{"reason": "broken JSON"}'})
    schedule_redis.zadd("redbeat::schedule", {"redbeat:parked": -1})
    schedule_redis.hset("redbeat:done", "definition", json.dumps({**RAW, "enabled": False}))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:done": -1})
    found = json.loads(cli("doctor", "--json", code=1))
    findings = {f["key"]: f["kind"] for f in found if not f["notice"]}
    assert findings == {"redbeat:gone": "orphan", "redbeat:unscheduled": "unscheduled", "redbeat:bad": "malformed",
                        "redbeat:parked": "parked"}
    # Disabled on purpose: worth knowing, nothing wrong.
    assert {f["key"]: f["kind"] for f in found if f["notice"]}["redbeat:done"] == "disabled"
    assert "broken JSON" in cli("doctor", code=1)


def test_status_without_beat_is_unhealthy(cli):
    report = json.loads(cli("status", "--json", code=1))
    assert report["healthy"] is False and report["lock_holder"] is None


def test_status_shows_that_beat_paused_claiming_and_is_degraded(cli, schedule_redis):
    schedule_redis.set("redbeat::heartbeat", json.dumps({
        "token": "vm:1:x", "host": "vm", "pid": 1, "last_tick": time.time(), "claiming_paused_since": 1795521819.0,
        "claiming_paused": "10000 runs waiting in flight (redbeat_max_in_flight is 10000)\x1b[2J"}))
    # Degraded, not unhealthy: beat ticks, and restarting it would not make the broker take the runs.
    report = json.loads(cli("status", "--json", code=3))
    assert report["claiming_paused"].startswith("10000 runs waiting in flight")
    assert report["claiming_paused_since"] == "2026-11-24T12:03:39+00:00" and report["healthy"] is True
    assert report["degraded"] == [f"claiming paused: {report['claiming_paused']}"]
    text = cli("status", code=3)
    assert "claiming: paused since 2026-11-24T12:03:39+00:00: 10000 runs waiting in flight" in text
    assert "DEGRADED: claiming paused: 10000 runs waiting in flight" in text
    assert "\x1b" not in text  # Redis data reaches the terminal escaped


def test_status_names_entries_whose_last_run_failed_newest_first_and_stays_healthy(cli, schedule_redis):
    schedule_redis.set("redbeat::heartbeat", json.dumps({"token": "vm:1:x", "host": "vm", "pid": 1,
                                                         "last_tick": time.time()}))
    for name in ("older", "newer", "odd\x1b[2J"):
        schedule_redis.hset(f"redbeat:{name}", "definition", json.dumps(RAW))
        schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    # As the workers write it (outcomecounts.py): entry keys scored by when their last run failed.
    schedule_redis.zadd("redbeat::failing", {"redbeat:older": 100, "redbeat:newer": 300, "redbeat:removed": 400,
                                             "redbeat:odd\x1b[2J": 200})
    report = json.loads(cli("status", "--json"))
    # Failing tasks are no unhealthy beat: exit 0, healthy, and said.
    assert report["healthy"] is True and report["degraded"] == []
    assert report["failing_entries"] == {"count": 3, "names": ["newer", "odd\x1b[2J", "older"], "unchecked": 0}
    text = cli("status")
    assert "failed runs: 3 entries whose last run failed, newest first: newer, odd\\x1b[2J, older" in text
    assert "removed" not in text and "\x1b" not in text and "healthy" in text


def test_status_bounds_the_failing_entries_it_checks_and_says_none_fail_by_saying_nothing(cli, schedule_redis):
    schedule_redis.set("redbeat::heartbeat", json.dumps({"token": "vm:1:x", "host": "vm", "pid": 1,
                                                         "last_tick": time.time()}))
    assert json.loads(cli("status", "--json"))["failing_entries"] == {"count": 0, "names": [], "unchecked": 0}
    assert "failed runs" not in cli("status")
    schedule_redis.zadd("redbeat::failing", {f"redbeat:e{n}": n for n in range(1010)})
    for n in range(1005, 1010):
        schedule_redis.hset(f"redbeat:e{n}", "definition", json.dumps(RAW))
    failing = json.loads(cli("status", "--json"))["failing_entries"]
    assert failing == {"count": 5, "names": ["e1009", "e1008", "e1007", "e1006", "e1005"], "unchecked": 10}
    assert "5 entries (and 10 older, not checked) whose last run failed" in cli("status")


def test_status_says_a_failing_set_of_the_wrong_type_in_one_line(cli, schedule_redis):
    schedule_redis.set("redbeat::heartbeat", json.dumps({"token": "vm:1:x", "host": "vm", "pid": 1,
                                                         "last_tick": time.time()}))
    schedule_redis.set("redbeat::failing", "someone else's")
    assert json.loads(cli("status", "--json"))["failing_entries"] is None
    assert "failed runs: unknown: redbeat::failing is not a sorted set" in cli("status")


def test_the_workers_outcome_keys_of_the_wrong_type_are_listed_with_their_fix_and_stop_no_beat(cli, schedule_redis):
    schedule_redis.set("redbeat::failing", "someone else's")
    schedule_redis.rpush("redbeat::run-outcomes", "not a hash")
    report = json.loads(cli("status", "--json", code=1))
    wrong = {w["key"]: w for w in report["wrong_types"]}
    assert set(wrong) == {"redbeat::failing", "redbeat::run-outcomes"}
    assert not any(w["stops_beat"] for w in wrong.values())
    assert "DEL redbeat::run-outcomes" in wrong["redbeat::run-outcomes"]["explanation"]


def test_removing_an_entry_takes_it_out_of_the_failing_entries(cli, schedule_redis):
    schedule_redis.hset("redbeat:gone", "definition", json.dumps(RAW))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:gone": 0})
    schedule_redis.zadd("redbeat::failing", {"redbeat:gone": 100, "redbeat:other": 200})
    cli("remove", "gone")
    assert schedule_redis.zrange("redbeat::failing", 0, -1) == ["redbeat:other"]


@pytest.mark.e2e
def test_status_and_history_with_a_real_beat(tmp_path, redis_server, redis_url, project_env):
    env = dict(project_env, E2E_REDBEAT_URL=redis_server.url(0), E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2), PYTHONUNBUFFERED="1")
    with Processes(tmp_path, env) as processes:
        beat = processes.start("beat", "beat", "-S", "redbeat", "-l", "info")
        client = redis_server.client(0)
        wait_for(lambda: client.llen("redbeat::history:static-every-second") >= 2, timeout=30,
                 message="two runs in the history")

        def celery_redbeat(*args):
            return subprocess.run([sys.executable, "-m", "celery", "-A", "e2e_app", "redbeat", *args],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        status = celery_redbeat("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["lock_holder"]["pid"] == beat.pid and report["healthy"] is True
        assert report["last_tick_age"] < 5
        shown = json.loads(celery_redbeat("show", "static-every-second", "--json").stdout)
        assert shown["history"][0]["outcome"] == "published"
        assert shown["history"][0]["lateness"] < 1
        listing = celery_redbeat("list")
        assert "static-every-second" in listing.stdout and "every 1s" in listing.stdout
        processes.stop("beat")
    # A beat that shut down says so: no waiting for its heartbeat to age.
    report = json.loads(CliRunner().invoke(redbeat, ["--redis-url", redis_server.url(0), "status", "--json"]).output)
    assert report["lock_holder"] is None and report["healthy"] is False and report["stopped_at"]


def test_pause_and_edit_keep_fields_redbeat_does_not_know_and_refuse_renames(cli, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps({**RAW, "x-owner": "team-a"}))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 100})
    cli("pause", "raw")
    cli("edit", "raw", "args", "[9]")
    definition = json.loads(schedule_redis.hget("redbeat:raw", "definition"))
    assert definition["x-owner"] == "team-a" and definition["enabled"] is False and definition["args"] == [9]
    assert "the name is the key" in cli("edit", "raw", "name", '"other"', code=1)


def test_remove_deletes_a_malformed_entry(cli, schedule_redis):
    schedule_redis.hset("redbeat:bad", "definition", "{")
    schedule_redis.zadd("redbeat::schedule", {"redbeat:bad": 5})
    cli("remove", "bad")
    assert not schedule_redis.exists("redbeat:bad")


def test_importing_specs_again_keeps_the_history(cli, tmp_path, schedule_redis):
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps({"tick": {"task": "tasks.tick", "schedule": 60}}))
    cli("import", str(specs), "--apply")
    meta = json.loads(schedule_redis.hget("redbeat:tick", "meta")) | {"total_run_count": 7}
    schedule_redis.hset("redbeat:tick", "meta", json.dumps(meta))
    assert json.loads(cli("import", str(specs), "--json", "--apply"))["unchanged"] == ["tick"]
    specs.write_text(json.dumps({"tick": {"task": "tasks.tick", "schedule": 120}}))
    assert json.loads(cli("import", str(specs), "--json", "--apply"))["update"] == ["tick"]
    assert json.loads(schedule_redis.hget("redbeat:tick", "meta"))["total_run_count"] == 7


def test_an_export_with_an_orphan_member_imports(cli, schedule_redis, tmp_path):
    schedule_redis.zadd("redbeat::schedule", {"redbeat:gone": 5})
    dump = tmp_path / "d.json"
    dump.write_text(cli("export"))
    schedule_redis.flushdb()
    cli("import", str(dump), "--apply")
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:gone") == 5


@pytest.mark.parametrize("args, words", [
    (["add", "x", "--task", "t", "--at", "tomorrow"], "--at: a time is ISO 8601"),
    (["add", "x", "--task", "t", "--rrule", "FREQ=DAILY", "--timezone", "Bad/Zone"],
     "--timezone: unknown time zone 'Bad/Zone'"),
    # More than one rule: dateutil parses a rule set, which RedBeat does not store.
    (["add", "x", "--task", "t", "--rrule", "FREQ=DAILY\nEXDATE:20300101T000000"], "give one rule"),
    (["add", "x", "--task", "t", "--rrule", "FREQ=DAILY\nRDATE:20300101T000000"], "give one rule"),
    (["add", "x", "--task", "t", "--rrule", "FREQ=DAILY\nFREQ=WEEKLY"], "give one rule"),
])
def test_bad_options_get_messages_not_tracebacks(cli, args, words):
    output = cli(*args, code=2)
    assert words in output and len(output.splitlines()) == 1


def test_add_rrule_keeps_bysetpos(cli, schedule_redis):
    cli("add", "last-weekday", "--task", "t", "--rrule", "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=9")
    assert json.loads(schedule_redis.hget("redbeat:last-weekday", "definition"))["schedule"]["bysetpos"] == [-1]


# -- the schedules `add` builds ----------------------------------------------------------------

ADDED_AT = datetime(2026, 6, 3, 15, 0, tzinfo=timezone.utc)  # a Wednesday


def added_schedule(option: str, value: str, zone: str | None):
    """The schedule `add` builds from one schedule option, on ADDED_AT's day."""
    spec = specs.ScheduleSpec(**{option: float(value) if option == "every" else value}, timezone=zone)
    return specs.schedule_from_spec(spec, now=ADDED_AT)


# What `add` wrote for each form before it built schedule objects and let the codec encode
# them (tagged dicts written by hand from dateutil's private attributes), on ADDED_AT's day.
WRITTEN_BEFORE = [
    ("every", "10", None, '{"__type__": "interval", "every": 10.0, "relative": false}'),
    ("every", "0.5", None, '{"__type__": "interval", "every": 0.5, "relative": false}'),
    ("cron", "5 2 * * 1", "Europe/Paris", '{"__type__": "crontab", "minute": "5", "hour": "2", "day_of_month": "*", '
     '"month_of_year": "*", "day_of_week": "1", "timezone": "Europe/Paris"}'),
    ("cron", "*/15 * * * *", None, '{"__type__": "crontab", "minute": "*/15", "hour": "*", "day_of_month": "*", '
     '"month_of_year": "*", "day_of_week": "*"}'),
    ("cron", "0 9 1-7 * mon", "America/New_York", '{"__type__": "crontab", "minute": "0", "hour": "9", '
     '"day_of_month": "1-7", "month_of_year": "*", "day_of_week": "mon", "timezone": "America/New_York"}'),
    ("at", "2030-01-01T10:00:00+01:00", None, '{"__type__": "clocked", "at": {"__type__": "datetime", "year": 2030, '
     '"month": 1, "day": 1, "hour": 10, "minute": 0, "second": 0, "microsecond": 0, "timezone": 3600.0}}'),
    ("at", "2030-01-01T10:00:00", None, '{"__type__": "clocked", "at": {"__type__": "datetime", "year": 2030, '
     '"month": 1, "day": 1, "hour": 10, "minute": 0, "second": 0, "microsecond": 0, "timezone": "UTC"}}'),
    ("rrule", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9", "Asia/Tokyo", '{"__type__": "rrule", "freq": 2, "interval": 1, '
     '"dtstart": 1780498800.0, "dtstart_tz": 540.0, "byweekday": [{"__type__": "weekday", "wkday": 0}], '
     '"byhour": [9], "timezone": "Asia/Tokyo"}'),
    ("rrule", "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=9", None, '{"__type__": "rrule", "freq": 1, '
     '"interval": 1, "dtstart": 1780444800.0, "dtstart_tz": 0, "bysetpos": [-1], "byweekday": [{"__type__": '
     '"weekday", "wkday": 0}, {"__type__": "weekday", "wkday": 1}, {"__type__": "weekday", "wkday": 2}, '
     '{"__type__": "weekday", "wkday": 3}, {"__type__": "weekday", "wkday": 4}], "byhour": [9]}'),
    ("rrule", "RRULE:FREQ=DAILY;INTERVAL=2;BYHOUR=20,8;BYMINUTE=30", "Europe/Berlin", '{"__type__": "rrule", '
     '"freq": 3, "interval": 2, "dtstart": 1780437600.0, "dtstart_tz": 120.0, "byhour": [8, 20], "byminute": [30], '
     '"timezone": "Europe/Berlin"}'),
    ("rrule", "FREQ=HOURLY;COUNT=10", None, '{"__type__": "rrule", "freq": 4, "interval": 1, "count": 10, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0}'),
    ("rrule", "FREQ=DAILY;UNTIL=20301231T000000Z;BYHOUR=9", None, '{"__type__": "rrule", "freq": 3, "interval": 1, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0, "byhour": [9], "until": 1924905600.0}'),
    ("rrule", "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17", "America/New_York", '{"__type__": "rrule", "freq": 1, '
     '"interval": 1, "dtstart": 1780459200.0, "dtstart_tz": -240.0, "byweekday": [{"__type__": "weekday", '
     '"wkday": 4, "n": -1}], "byhour": [17], "timezone": "America/New_York"}'),
    ("rrule", "FREQ=MONTHLY;BYDAY=+1MO,FR;BYHOUR=17", None, '{"__type__": "rrule", "freq": 1, "interval": 1, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0, "byweekday": [{"__type__": "weekday", "wkday": 4}, '
     '{"__type__": "weekday", "wkday": 0, "n": 1}], "byhour": [17]}'),
    ("rrule", "FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=15;BYHOUR=6", None, '{"__type__": "rrule", "freq": 0, '
     '"interval": 1, "dtstart": 1780444800.0, "dtstart_tz": 0, "bymonth": [3], "bymonthday": [15], "byhour": [6]}'),
    ("rrule", "FREQ=WEEKLY;WKST=SU;BYDAY=SU,MO;INTERVAL=2", None, '{"__type__": "rrule", "freq": 2, "interval": 2, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0, "wkst": 6, "byweekday": [{"__type__": "weekday", "wkday": 0}, '
     '{"__type__": "weekday", "wkday": 6}]}'),
    ("rrule", "FREQ=MINUTELY;INTERVAL=15;BYSECOND=0", "Australia/Lord_Howe", '{"__type__": "rrule", "freq": 5, '
     '"interval": 15, "dtstart": 1780493400.0, "dtstart_tz": 630.0, "bysecond": [0], '
     '"timezone": "Australia/Lord_Howe"}'),
    ("rrule", "freq=daily;byhour=9", None, '{"__type__": "rrule", "freq": 3, "interval": 1, "dtstart": 1780444800.0, '
     '"dtstart_tz": 0, "byhour": [9]}'),
    ("rrule", "FREQ=YEARLY;BYWEEKNO=1;BYDAY=MO", None, '{"__type__": "rrule", "freq": 0, "interval": 1, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0, "byweekno": [1], "byweekday": [{"__type__": "weekday", "wkday": 0}]}'),
    ("rrule", "FREQ=YEARLY;BYYEARDAY=100,-1", None, '{"__type__": "rrule", "freq": 0, "interval": 1, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0, "byyearday": [-1, 100]}'),
    ("rrule", "FREQ=YEARLY;BYEASTER=0", None, '{"__type__": "rrule", "freq": 0, "interval": 1, '
     '"dtstart": 1780444800.0, "dtstart_tz": 0, "byeaster": [0]}'),
]


@pytest.mark.parametrize("option, value, zone, before", WRITTEN_BEFORE)
def test_add_stores_the_same_definition_now_that_the_codec_encodes_its_schedule(option, value, zone, before):
    # What `add` stores is the codec's encoding of the schedule it decodes from what it built.
    assert dumps(loads(dumps(added_schedule(option, value, zone)))) == dumps(loads(before))


# Rules whose day dateutil took from their start: written before with that day filled in,
# now as given. The decoded rule starts on the same day, so it runs at the same instants.
DAY_FROM_THE_START_BEFORE = [
    ("FREQ=WEEKLY", '{"__type__": "rrule", "freq": 2, "interval": 1, "dtstart": 1780444800.0, "dtstart_tz": 0, '
     '"byweekday": [{"__type__": "weekday", "wkday": 2}]}'),
    ("FREQ=MONTHLY", '{"__type__": "rrule", "freq": 1, "interval": 1, "dtstart": 1780444800.0, "dtstart_tz": 0, '
     '"bymonthday": [3]}'),
    ("FREQ=YEARLY", '{"__type__": "rrule", "freq": 0, "interval": 1, "dtstart": 1780444800.0, "dtstart_tz": 0, '
     '"bymonth": [6], "bymonthday": [3]}'),
    ("FREQ=YEARLY;BYMONTH=3", '{"__type__": "rrule", "freq": 0, "interval": 1, "dtstart": 1780444800.0, '
     '"dtstart_tz": 0, "bymonth": [3], "bymonthday": [3]}'),
    # Weekly: dateutil ignores a weekday's position, which was dropped before and is kept now.
    ("FREQ=WEEKLY;BYDAY=+1MO", '{"__type__": "rrule", "freq": 2, "interval": 1, "dtstart": 1780444800.0, '
     '"dtstart_tz": 0, "byweekday": [{"__type__": "weekday", "wkday": 0}]}'),
]


@pytest.mark.parametrize("text, before", DAY_FROM_THE_START_BEFORE)
def test_add_rrule_runs_at_the_same_instants_as_before_where_dateutil_filled_in_the_day(text, before):
    now, after = loads(dumps(added_schedule("rrule", text, None))), loads(before)
    assert slots_from(now, ADDED_AT, 30) == slots_from(after, ADDED_AT, 30)


def slots_from(sched, moment: datetime, count: int) -> list[datetime]:
    slots = [next_slot(sched, moment)]
    while len(slots) < count:
        slots.append(next_slot(sched, slots[-1]))
    return slots


@pytest.mark.parametrize("text, days", [
    ("FREQ=MONTHLY;BYMONTHDAY=-1", [30, 31, 31]),  # was written without the day: the 3rd
    ("FREQ=MONTHLY;BYMONTHDAY=1,-1", [30, 1, 31]),  # was written as the 1st only
])
def test_add_rrule_keeps_month_days_counted_from_the_end(text, days):
    sched = loads(dumps(added_schedule("rrule", text, None)))
    assert [slot.day for slot in slots_from(sched, ADDED_AT, 3)] == days


@pytest.mark.parametrize("text, words", [
    ("FREQ=DAILY;BYHOUR=x", "invalid literal"),
    ("FREQ=DAILY;COLOR=RED", "unknown rule part 'COLOR'"),
    ("FREQ=WEEKLY;BYDAY=XX", "unknown weekday 'XX'"),
    ("FREQ=DAILY;UNTIL=20301231T000000", "must be specified in UTC"),
    ("BYHOUR=9", "freq"),
    ("", "give one rule"),
])
def test_add_rrule_refuses_a_bad_rule_naming_what_is_wrong(text, words):
    with pytest.raises(specs.SpecError, match=words):
        added_schedule("rrule", text, None)


def test_add_rrule_reads_a_lowercase_rrule_prefix():
    sched = added_schedule("rrule", "rrule:freq=daily;byhour=9", None)
    assert sched.byhour == [9]


def test_doctor_explains_runs_given_up_until_a_later_run_is_published(cli, schedule_redis):
    failure = {"at": 1795521819.0, "class": "bad-arguments", "reason": "bad-arguments: add() missing 1 required "
                                                                      "positional argument: 'y'"}
    schedule_redis.hset("redbeat:raw", mapping={"definition": json.dumps(RAW), "status": json.dumps(
        {"given_up": 2, "last_failure": failure, "last_dispatched_at": failure["at"] - 1})})
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": time.time() + 60})
    [finding] = [f for f in json.loads(cli("doctor", "--json", code=1)) if f["kind"] == "given-up"]
    assert not finding["notice"] and "2 run(s) given up" in finding["explanation"]
    assert "missing 1 required positional argument" in finding["explanation"]
    # A later run went out: worth knowing, nothing wrong now.
    schedule_redis.hset("redbeat:raw", "status", json.dumps(
        {"given_up": 2, "last_failure": failure, "last_dispatched_at": failure["at"] + 60}))
    [finding] = [f for f in json.loads(cli("doctor", "--json")) if f["kind"] == "given-up"]
    assert finding["notice"] and "runs since then were published" in finding["explanation"]
