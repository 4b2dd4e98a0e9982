"""Writes from the command line are validated as every writer's are (``redbeat.validation``),
and what people type is read by ``redbeat.specs``: against a real redis-server, in process
(CliRunner) and as ``celery -A proj redbeat`` with a real task registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from redbeat import RedBeatSchedulerEntry, specs
from redbeat.cli import redbeat
from redbeat.decoder import DecodeError
from redbeat.schedules import clocked, crontab, interval
from redbeat.validation import InvalidEntryError

UTC = timezone.utc
RAW = {"name": "raw", "task": "tasks.raw", "schedule": {"__type__": "interval", "every": 30}, "args": [1]}
LATER = "2030-01-01T10:00:00"


class Ran:
    """What a command printed on each stream, and its exit code."""

    def __init__(self, result) -> None:
        self.code, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr

    def one_line_error(self, code: int) -> str:
        assert self.code == code, (self.code, self.stdout, self.stderr)
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), self.stderr
        return lines[0]


@pytest.fixture
def run(redis_url):
    """The standalone ``redbeat --redis-url``: no task registry."""
    def invoke(*args: str) -> Ran:
        return Ran(CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False))
    return invoke


@pytest.fixture
def project_app(app):
    """An app that knows its tasks, in the zone Europe/Paris."""
    app.conf.timezone = "Europe/Paris"

    @app.task(name="proj.add", shared=False)
    def add(x, y):
        return x + y

    @app.task(name="proj.report", shared=False)
    def report(kind="daily"):
        return kind
    return app


@pytest.fixture
def run_in_project(project_app):
    """As ``celery -A proj redbeat``: Celery passes its app in the context object."""
    def invoke(*args: str) -> Ran:
        return Ran(CliRunner().invoke(redbeat, list(args), obj=SimpleNamespace(app=project_app),
                                      catch_exceptions=False))
    return invoke


def definition(client, name="raw") -> dict:
    return json.loads(client.hget(f"redbeat:{name}", "definition"))


def store_raw(client, name="raw", meta=None, **fields):
    client.hset(f"redbeat:{name}", "definition", json.dumps({**RAW, "name": name, **fields}))
    if meta is not None:
        client.hset(f"redbeat:{name}", "meta", json.dumps(meta))
    client.zadd("redbeat::schedule", {f"redbeat:{name}": 100})


# -- unknown fields and options are refused everywhere ------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("every", "20", "'every' (part of the schedule: it belongs in 'schedule'"),
    ("queue", '"celery"', "'queue' (a task option: it belongs in 'options'"),
    ("queue", "celery", "'queue' (a task option: it belongs in 'options'"),
    ("descripton", "x", "'descripton' (did you mean 'description'?)"),
])
def test_edit_refuses_an_unknown_field_naming_the_valid_ones(run, schedule_redis, field, value, words):
    store_raw(schedule_redis)
    error = run("edit", "raw", field, value).one_line_error(1)
    assert words in error and "an entry's fields are name, task, args" in error
    assert definition(schedule_redis) == RAW


@pytest.mark.parametrize("option, words", [
    ("frobnicate=1", "unknown scheduling option 'frobnicate'; the scheduling options are catch_up, catch_up_max"),
    ("jiter=3", "unknown scheduling option 'jiter' (did you mean 'jitter'?)"),
    ("priority=3", "'priority' (a task option: give it with --queue, or in the definition's 'options'"),
    ("jitter", "an option is FIELD=VALUE, such as catch_up=skip"),
])
def test_add_option_takes_only_the_scheduling_options(run, schedule_redis, option, words):
    error = run("add", "x", "--task", "t", "--every", "60", "--option", option).one_line_error(2)
    assert words in error and error.startswith("Error: --option: ")
    assert not schedule_redis.exists("redbeat:x")


def test_add_from_a_file_refuses_unknown_fields(run, schedule_redis, tmp_path):
    path = tmp_path / "entry.json"
    path.write_text(json.dumps({**RAW, "name": "from-file", "queue": "reports"}))
    assert "belongs in 'options'" in run("add", "--file", str(path)).one_line_error(1)
    assert not schedule_redis.exists("redbeat:from-file")


def test_pause_keeps_fields_another_program_wrote_but_edit_refuses_to_write_one(run, schedule_redis):
    store_raw(schedule_redis, **{"x-owner": "team-a"})
    assert run("pause", "raw").code == 0
    assert definition(schedule_redis)["x-owner"] == "team-a"
    assert "unknown field 'x-owner'" in run("edit", "raw", "x-owner", "team-b").one_line_error(1)


# -- bare words -----------------------------------------------------------------------------------

def test_text_fields_take_a_bare_word(run, schedule_redis):
    assert run("add", "x", "--task", "t", "--every", "60", "--option", "catch_up=skip",
               "--option", "on_finish=delete", "--option", "max_runs=3").code == 0
    stored = definition(schedule_redis, "x")
    assert (stored["catch_up"], stored["on_finish"], stored["max_runs"]) == ("skip", "delete", 3)
    assert run("edit", "x", "task", "proj.tasks.add").code == 0
    assert run("edit", "x", "description", "nightly export").code == 0
    assert run("edit", "x", "catch_up", '"all"').code == 0  # JSON still works
    stored = definition(schedule_redis, "x")
    assert (stored["task"], stored["description"], stored["catch_up"]) == ("proj.tasks.add", "nightly export", "all")
    assert run("edit", "x", "description", "null").code == 0
    assert "description" not in definition(schedule_redis, "x")  # unset: written only when set


def test_a_value_neither_json_nor_text_shows_both_forms(run, schedule_redis):
    store_raw(schedule_redis)
    error = run("edit", "raw", "args", "oops").one_line_error(2)
    assert "'args' takes a JSON value, such as '[1, 2]'; a bare word is taken as text only for task, " \
           "description, catch_up, on_finish, overlap; not 'oops'" in error


def test_a_bad_bare_word_gets_the_valid_choices(run, schedule_redis):
    store_raw(schedule_redis)
    assert "'catch_up' must be one of" in run("edit", "raw", "catch_up", "skp").one_line_error(1)


# -- times ----------------------------------------------------------------------------------------

def test_add_at_without_an_offset_is_taken_in_utc_standalone(run, schedule_redis):
    assert run("add", "launch", "--task", "t", "--at", LATER).code == 0
    assert definition(schedule_redis, "launch")["schedule"]["at"]["timezone"] == "UTC"


def test_add_at_without_an_offset_is_taken_in_the_apps_zone(run_in_project, schedule_redis):
    ran = run_in_project("add", "launch", "--task", "proj.report", "--at", LATER)
    assert ran.code == 0, ran.stderr
    assert "once at 2030-01-01 09:00:00 UTC" in ran.stdout  # 10:00 in Paris
    ran = run_in_project("add", "tokyo", "--task", "proj.report", "--at", LATER, "--timezone", "Asia/Tokyo")
    assert "once at 2030-01-01 01:00:00 UTC" in ran.stdout  # --timezone wins over the app's


def test_add_help_says_where_a_time_without_offset_is_taken(run):
    text = " ".join(run("add", "--help").stdout.split())
    assert "without an offset, in --timezone, else in the app's timezone setting (else UTC)" in text
    assert "A time in the past needs --force" in text


def test_add_refuses_a_time_in_the_past_unless_forced(run, schedule_redis):
    past = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    error = run("add", "late", "--task", "t", "--at", past.isoformat()).one_line_error(1)
    assert f"the time {past.isoformat()} is in the past (3d ago): the entry would run at once, at beat's " \
           "next tick; give --force to add it anyway" in error
    assert not schedule_redis.exists("redbeat:late")
    error = run("add", "late", "--task", "t", "--at", past.isoformat(), "--option", "starting_deadline=60")\
        .one_line_error(1)
    assert "the entry would never run (its starting deadline has passed)" in error
    assert run("add", "late", "--task", "t", "--at", past.isoformat(), "--force").code == 0
    assert schedule_redis.exists("redbeat:late")


def test_timezone_with_every_is_refused_not_ignored(run, schedule_redis):
    error = run("add", "x", "--task", "t", "--every", "60", "--timezone", "Europe/Paris").one_line_error(2)
    assert "--timezone applies to --cron, --rrule and --at: an --every interval has no time zone" in error
    assert not schedule_redis.exists("redbeat:x")


def test_an_unknown_zone_gets_the_nearest_names_in_one_line(run):
    error = run("add", "x", "--task", "t", "--cron", "0 9 * * *", "--timezone", "Europe/Pari").one_line_error(2)
    assert error.startswith("Error: --timezone: unknown time zone 'Europe/Pari' (did you mean Europe/Paris")


def test_a_crontab_field_out_of_range_is_named(run):
    error = run("add", "x", "--task", "t", "--cron", "61 * * * *").one_line_error(2)
    assert error == "Error: --cron: minute field '61' is out of range 0-59"


# -- description ----------------------------------------------------------------------------------

def test_add_with_a_description_and_edit_it(run, schedule_redis):
    assert run("add", "x", "--task", "t", "--every", "60", "--description", "nightly export").code == 0
    assert definition(schedule_redis, "x")["description"] == "nightly export"
    assert run("edit", "x", "description", "weekly export").code == 0
    assert definition(schedule_redis, "x")["description"] == "weekly export"
    assert "'description' must be text of at most 2000" in run("edit", "x", "description", "a" * 2001)\
        .one_line_error(1)


# -- pause, resume, static entries ----------------------------------------------------------------

def test_resume_of_a_one_off_that_ran_says_it_has_finished(run, schedule_redis):
    at = {"__type__": "datetime", "year": 2026, "month": 1, "day": 1, "hour": 9, "minute": 0, "second": 0,
          "microsecond": 0, "timezone": "UTC"}
    store_raw(schedule_redis, "launch", meta={"last_run_at": at, "total_run_count": 1},
              schedule={"__type__": "clocked", "at": at}, enabled=False)
    error = run("resume", "launch").one_line_error(1)
    assert "launch has finished (a one-off that ran, or its schedule, end_at or max_runs is over)" in error
    assert "nothing done" in error
    assert definition(schedule_redis, "launch")["enabled"] is False


def test_resume_of_an_entry_that_reached_max_runs_says_it_has_finished(run, schedule_redis):
    store_raw(schedule_redis, meta={"total_run_count": 3}, max_runs=3, enabled=False)
    assert "raw has finished" in run("resume", "raw").one_line_error(1)


def test_pause_and_resume_of_an_entry_already_so_say_it(run, schedule_redis):
    store_raw(schedule_redis)
    ran = run("resume", "raw")
    assert ran.code == 0 and ran.stdout == "raw is not paused: nothing to do\n"
    assert run("pause", "raw").stdout == "paused raw\n"
    ran = run("pause", "raw")
    assert ran.code == 0 and ran.stdout == "raw is paused already: nothing to do\n"
    assert run("resume", "raw").stdout == "resumed raw\n"


def test_changing_a_static_entry_warns_that_beat_writes_it_again(run, schedule_redis):
    store_raw(schedule_redis)
    schedule_redis.sadd("redbeat::statics", "raw")
    ran = run("edit", "raw", "args", "[2]")
    assert ran.code == 0 and ran.stdout == "raw: args = [2]\n"
    assert ran.stderr.startswith("warning: raw is a static entry from beat_schedule: beat writes those again when "
                                 "it starts")
    assert "so this change lasts until then" in ran.stderr
    assert "unless its beat_schedule entry sets 'enabled'" in run("pause", "raw").stderr
    assert "unless its beat_schedule entry sets 'enabled'" in run("resume", "raw").stderr
    assert "so this change lasts until then" in run("remove", "raw").stderr


def test_changing_an_entry_added_at_run_time_does_not_warn(run, schedule_redis):
    store_raw(schedule_redis)
    assert run("edit", "raw", "args", "[2]").stderr == ""
    assert run("pause", "raw").stderr == ""


# -- a name that is not UTF-8 (its key's exact bytes) -------------------------------------------------

def store_not_utf8(client) -> bytes:
    """An entry whose key is ``redbeat:bad`` and the byte 0xFF, as another program may write it."""
    key = b"redbeat:bad\xff"
    client.hset(key, "definition", json.dumps({**RAW, "name": "bad"}))
    client.zadd("redbeat::schedule", {key: 100})
    return key


def test_pause_resume_and_run_now_act_on_an_entry_whose_name_is_not_utf8(run, schedule_redis):
    key = store_not_utf8(schedule_redis)
    name = b"bad\xff".decode("utf-8", "surrogateescape")  # what Python makes of such an argument
    assert run("pause", name).code == 0
    assert json.loads(schedule_redis.hget(key, "definition"))["enabled"] is False
    assert run("resume", name).code == 0
    assert json.loads(schedule_redis.hget(key, "definition"))["enabled"] is True
    assert run("run-now", name).code == 0
    assert schedule_redis.hget(key, "run_now") is not None and schedule_redis.zscore("redbeat::schedule", key) == 0
    assert not schedule_redis.exists("redbeat:bad")  # nothing written under a look-alike key
    assert run("remove", name).code == 0
    assert not schedule_redis.exists(key) and schedule_redis.zscore("redbeat::schedule", key) is None


def test_the_command_pauses_an_entry_named_by_bytes_that_are_not_utf8(redis_url, schedule_redis, project_env):
    key = store_not_utf8(schedule_redis)
    done = subprocess.run([sys.executable.encode(), b"-m", b"redbeat.cli", b"--redis-url", redis_url.encode(),
                           b"pause", b"bad\xff"], env=project_env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"paused bad\\xff\n"
    assert json.loads(schedule_redis.hget(key, "definition"))["enabled"] is False


def test_a_bulk_pause_acts_on_an_entry_whose_name_is_not_utf8_too(run, schedule_redis):
    key = store_not_utf8(schedule_redis)
    assert run("pause", "--match", "bad*", "--yes").code == 0
    assert json.loads(schedule_redis.hget(key, "definition"))["enabled"] is False
    assert not schedule_redis.exists("redbeat:bad")


# -- the task against the app's registry ----------------------------------------------------------

def test_an_unknown_task_is_refused_where_the_app_knows_its_tasks(run_in_project, schedule_redis):
    error = run_in_project("add", "x", "--task", "proj.ad", "--every", "60").one_line_error(1)
    assert "unknown task 'proj.ad' (did you mean 'proj.add'" in error
    assert not schedule_redis.exists("redbeat:x")
    assert run_in_project("add", "x", "--task", "proj.ad", "--every", "60", "--force").code == 0


def test_arguments_the_task_cannot_take_are_refused_unless_forced(run_in_project, schedule_redis):
    error = run_in_project("add", "x", "--task", "proj.add", "--every", "60", "--args", "[1]").one_line_error(1)
    assert "task 'proj.add' cannot take these arguments" in error and "missing" in error
    assert run_in_project("add", "x", "--task", "proj.add", "--every", "60", "--args", "[1, 2]").code == 0
    assert "cannot take these arguments" in run_in_project("edit", "x", "args", "[1]").one_line_error(1)
    assert "cannot take these arguments" in run_in_project("edit", "x", "kwargs", '{"z": 1}').one_line_error(1)
    assert run_in_project("edit", "x", "args", "[1]", "--force").code == 0
    assert definition(schedule_redis, "x")["args"] == [1]


def test_pausing_an_entry_of_a_task_the_app_does_not_know_is_not_refused(run_in_project, schedule_redis):
    store_raw(schedule_redis)  # tasks.raw: not this app's
    assert run_in_project("pause", "raw").code == 0
    assert run_in_project("edit", "raw", "description", "someone else's").code == 0


def test_the_standalone_command_accepts_any_task_name(run, schedule_redis):
    assert run("add", "x", "--task", "proj.whatever", "--every", "60").code == 0


def test_force_is_explained_in_help(run):
    for command in ("add", "edit"):
        text = " ".join(run(command, "--help").stdout.split())
        assert "--force Skip the checks of the task against the app's registry" in text
        assert "Every other check still applies" in text


APP_MODULE = """
from celery import Celery

app = Celery("writes_app", broker="memory://")
app.conf.redbeat_redis_url = {url!r}
app.conf.timezone = "Europe/Paris"


@app.task(name="writes_app.add")
def add(x, y):
    return x + y
"""


def test_celery_a_proj_redbeat_add_checks_the_task_against_the_registry(tmp_path, redis_url, schedule_redis,
                                                                         project_env):
    (tmp_path / "writes_app.py").write_text(textwrap.dedent(APP_MODULE.format(url=redis_url)))

    def celery_redbeat(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "celery", "-A", "writes_app", "redbeat", *args],
                              cwd=tmp_path, env=project_env, capture_output=True, text=True, timeout=60)
    refused = celery_redbeat("add", "x", "--task", "writes_app.ad", "--every", "60")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == ("Error: invalid entry: unknown task 'writes_app.ad' (did you mean "
                                      "'writes_app.add'?): this app has no task of that name")
    refused = celery_redbeat("add", "x", "--task", "writes_app.add", "--every", "60", "--kwargs", '{"x": 1}')
    assert refused.returncode == 1 and "missing 1 required positional argument: 'y'" in refused.stderr
    added = celery_redbeat("add", "x", "--task", "writes_app.add", "--at", LATER, "--args", "[1, 2]")
    assert added.returncode == 0, added.stderr
    assert "once at 2030-01-01 09:00:00 UTC" in added.stdout
    assert definition(schedule_redis, "x")["schedule"]["at"]["timezone"] == "Europe/Paris"


# -- the Python API ----------------------------------------------------------------------------------

def test_save_many_refuses_a_missing_task_and_arguments_the_task_cannot_take(project_app, schedule_redis):
    every = interval(run_every=timedelta(seconds=60))
    no_task = RedBeatSchedulerEntry("no-task", None, every, app=project_app)
    with pytest.raises(DecodeError, match="'task' is missing"):
        RedBeatSchedulerEntry.save_many([no_task], app=project_app)
    project_app.finalize()  # as in a process that sends tasks: the app's tasks registered
    bad_args = RedBeatSchedulerEntry("bad-args", "proj.add", every, args=[1], app=project_app)
    with pytest.raises(InvalidEntryError, match="cannot take these arguments"):
        RedBeatSchedulerEntry.save_many([bad_args], app=project_app)
    assert not schedule_redis.keys("redbeat:*")


# -- specs: what people type ------------------------------------------------------------------------

def test_spec_cron_names_the_field_out_of_range():
    with pytest.raises(specs.SpecError, match="hour field '24' is out of range 0-23"):
        specs.cron_from_text("0 24 * * *", None)
    with pytest.raises(specs.SpecError, match="a crontab has five fields"):
        specs.cron_from_text("0 9 * *", None)
    assert specs.cron_from_text("5 2 * * 1", "Europe/Paris") == crontab("5", "2", "1", timezone="Europe/Paris")


def test_spec_rrule_suggests_the_nearest_part():
    with pytest.raises(specs.SpecError, match="unknown rule part 'BYHOURS' \\(did you mean 'BYHOUR'\\?\\)"):
        specs.rrule_from_text("FREQ=DAILY;BYHOURS=9", None)


def test_spec_time_without_offset_is_taken_in_the_zone_given():
    paris = ZoneInfo("Europe/Paris")
    assert specs.moment_from_text(LATER, paris) == datetime(2030, 1, 1, 10, tzinfo=paris)
    assert specs.moment_from_text(LATER + "+00:00", paris) == datetime(2030, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(specs.SpecError, match="a time is ISO 8601"):
        specs.moment_from_text("tomorrow", paris)
    spec = specs.ScheduleSpec(at=LATER)
    assert specs.schedule_from_spec(spec, default_zone=paris) == clocked(datetime(2030, 1, 1, 10, tzinfo=paris))


def test_spec_schedule_refuses_a_zone_for_an_interval_and_two_schedules():
    with pytest.raises(specs.SpecError, match="an interval has no time zone"):
        specs.schedule_from_spec(specs.ScheduleSpec(every=60, timezone="Europe/Paris"))
    with pytest.raises(specs.SpecError, match="give exactly one of every, cron, rrule, at"):
        specs.schedule_from_spec(specs.ScheduleSpec(every=60, cron="* * * * *"))
    with pytest.raises(specs.SpecError, match="at least 0.001 seconds"):
        specs.interval_from_seconds(0)


def test_spec_unknown_zone_suggests_iana_names():
    with pytest.raises(specs.SpecError, match="unknown time zone 'America/New_Yrok' \\(did you mean America/New_York"):
        specs.zone_named("America/New_Yrok")


@pytest.mark.parametrize("field, text, value", [
    ("task", "proj.tasks.add", "proj.tasks.add"),
    ("task", '"proj.tasks.add"', "proj.tasks.add"),
    ("description", "2024", "2024"),  # JSON that is no text: the text, for a text field
    ("description", "null", None),
    ("catch_up", "skip", "skip"),
    ("args", "[1, 2]", [1, 2]),
    ("max_runs", "3", 3),
    ("enabled", "false", False),
])
def test_spec_value_is_json_or_a_bare_word_for_text_fields(field, text, value):
    assert specs.value_from_text(field, text) == value


def test_spec_value_neither_json_nor_text_is_refused():
    with pytest.raises(specs.SpecError, match="'kwargs' takes a JSON value, such as '\\{\"x\": 1\\}'; a bare word"):
        specs.value_from_text("kwargs", "x=1")


def test_spec_option_reads_a_scheduling_option():
    assert specs.option_from_text("catch_up=skip") == specs.FieldValue("catch_up", "skip")
    assert specs.option_from_text("jitter=30") == specs.FieldValue("jitter", 30)
    with pytest.raises(specs.SpecError, match="unknown scheduling option 'description'"):
        specs.option_from_text("description=x")


def test_spec_errors_are_value_errors():
    assert issubclass(specs.SpecError, ValueError)
    with pytest.raises(ValueError):
        specs.json_from_text("{", "--args")
