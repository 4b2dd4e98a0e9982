"""The edges of managing the schedule from the command line and the Python API, against a real
redis-server: the tasks of an app that lists its modules in ``include``; names that fall in
RedBeat's own key space (``:schedule``, ``:lock``); keys holding another type than an entry's hash;
rules that never match or never run; ``enabled`` null; wide (CJK) characters in cut tables; rrules
in the app's zone; top-level fields doctor reports; an entry of score 0 (due at the next tick)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import unicodedata
from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import ROOT, make_app

from redbeat import RedBeatSchedulerEntry
from redbeat.cli import redbeat
from redbeat.client import get_store
from redbeat.schedules import interval
from redbeat.validation import InvalidEntryError


def run(redis_url: str, *args: str, env: dict | None = None):
    """The standalone ``redbeat --redis-url``, exceptions caught as a user would meet them."""
    return CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], env=env)


def one_line_error(result) -> bool:
    """Whether the command failed the way docs/cli.rst promises: one ``Error:`` line, no traceback."""
    lines = result.stderr.strip().splitlines()
    return (result.exception is None or isinstance(result.exception, SystemExit)) and result.exit_code != 0 \
        and len(lines) == 1 and lines[0].startswith("Error: ")


# -- celery -A proj redbeat: the tasks of the app's include/imports modules are known --------------

def celery_a_add(tmp_path, redis_url: str, project_env: dict, tasks_module: str, task: str):
    """``celery -A proj redbeat add sum --task TASK`` in Celery's documented project layout (First
    steps: "Using Celery in your application"), whose app lists ``proj.tasks`` in ``include``."""
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "celery.py").write_text(textwrap.dedent(f"""
        from celery import Celery
        app = Celery("proj", include=["proj.tasks"])
        app.conf.redbeat_redis_url = {redis_url!r}
    """))
    (package / "tasks.py").write_text(textwrap.dedent(tasks_module))
    env = dict(project_env, PYTHONPATH=f"{tmp_path}:{ROOT}")
    return subprocess.run([sys.executable, "-m", "celery", "-A", "proj", "redbeat", "add", "sum", "--task", task,
                           "--args", "[1, 2]", "--every", "60"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_celery_a_knows_the_tasks_of_an_app_that_lists_them_in_include(tmp_path, redis_url, project_env):
    ran = celery_a_add(tmp_path, redis_url, project_env, """
        from proj.celery import app

        @app.task
        def add(x, y):
            return x + y
    """, "proj.tasks.add")
    assert ran.returncode == 0, ran.stderr
    assert "added sum" in ran.stdout
    refused = subprocess.run([sys.executable, "-m", "celery", "-A", "proj", "redbeat", "add", "other", "--task",
                              "proj.tasks.ad", "--every", "60"], cwd=tmp_path, capture_output=True, text=True,
                             env=dict(project_env, PYTHONPATH=f"{tmp_path}:{ROOT}"), timeout=60)
    assert refused.returncode == 1 and "did you mean 'proj.tasks.add'" in refused.stderr, refused.stderr


def test_celery_a_warns_once_and_checks_no_task_when_a_task_module_raises(tmp_path, redis_url, project_env):
    ran = celery_a_add(tmp_path, redis_url, project_env, """
        raise RuntimeError("no database")
    """, "proj.tasks.anything")
    assert ran.returncode == 0, ran.stderr
    assert "added sum" in ran.stdout
    [warning] = ran.stderr.strip().splitlines()
    assert "cannot be imported (RuntimeError: no database)" in warning and "not checked" in warning


# -- add: a rule that never matches is refused in one line -----------------------------------------

def test_add_of_a_rule_that_never_matches_is_one_line(redis_url, schedule_redis):
    result = run(redis_url, "add", "feb31", "--task", "t", "--rrule", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31")
    assert one_line_error(result), (result.exit_code, result.stderr, result.exception)
    assert not schedule_redis.exists("redbeat:feb31")


# -- add: a schedule with no run to come needs --force ---------------------------------------------

@pytest.mark.parametrize("rule", ["FREQ=DAILY;UNTIL=20200101T000000Z", "FREQ=DAILY;COUNT=0"])
def test_add_refuses_a_rule_that_will_never_run_unless_forced(redis_url, schedule_redis, rule):
    result = run(redis_url, "add", "never", "--task", "t", "--rrule", rule)
    assert one_line_error(result), result.stdout
    assert "would never run; give --force to add it anyway" in result.stderr
    assert not schedule_redis.exists("redbeat:never")
    forced = run(redis_url, "add", "never", "--task", "t", "--rrule", rule, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:never") == -1


# -- enabled null means the default: enabled -------------------------------------------------------

def test_edit_enabled_null_does_not_silently_pause_the_entry(redis_url, schedule_redis):
    app = make_app(redis_url)
    RedBeatSchedulerEntry("job", "t", interval(timedelta(seconds=60)), app=app).save()
    result = run(redis_url, "edit", "job", "enabled", "null")
    refused = result.exit_code != 0
    assert refused or RedBeatSchedulerEntry.from_name("job", app=app).enabled is True, \
        (result.stdout, schedule_redis.hget("redbeat:job", "definition"))
    assert json.loads(schedule_redis.hget("redbeat:job", "definition"))["enabled"] is True
    assert "enabled = true (null means the default)" in result.stdout


def test_a_definition_written_with_enabled_null_runs(redis_url, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps({
        "name": "raw", "task": "tasks.raw", "schedule": {"__type__": "interval", "every": 30}, "enabled": None}))
    assert RedBeatSchedulerEntry.from_name("raw", app=make_app(redis_url)).enabled is True


# -- tables cut to the terminal: measured by display width -----------------------------------------

def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def test_list_cut_to_the_terminal_keeps_columns_aligned_with_wide_characters(redis_url):
    app = make_app(redis_url)
    for name in ("plain", "日本語のスケジュール名前"):
        RedBeatSchedulerEntry(name, "proj.tasks.report", interval(timedelta(seconds=60)), app=app).save()
    result = run(redis_url, "list", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    starts = {display_width(line[:line.index(word)]) for line, word in zip(lines, ["SCHEDULE", "every", "every"])}
    assert len(starts) == 1, result.stdout  # the SCHEDULE column starts at one place on screen
    assert all(display_width(line) <= 100 for line in lines), result.stdout


# -- names in RedBeat's own key space are refused --------------------------------------------------

def test_remove_does_not_delete_the_schedule_itself(redis_url, schedule_redis):
    app = make_app(redis_url)
    RedBeatSchedulerEntry("job", "t", interval(timedelta(seconds=60)), app=app).save()
    result = run(redis_url, "remove", ":schedule")
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:job") is not None, result.stdout
    assert result.exit_code != 0


def test_add_refuses_a_name_in_redbeats_own_key_space(redis_url, schedule_redis):
    result = run(redis_url, "add", ":lock", "--task", "t", "--every", "60")
    assert not schedule_redis.exists("redbeat::lock"), result.stdout
    assert one_line_error(result), result.stderr
    assert "':lock' is no entry name: names starting with ':' are RedBeat's own keys" in result.stderr


def test_the_python_api_refuses_to_save_or_delete_redbeats_own_keys(redis_url, schedule_redis):
    app = make_app(redis_url)
    RedBeatSchedulerEntry("job", "t", interval(timedelta(seconds=60)), app=app).save()
    with pytest.raises(InvalidEntryError, match="':lock' is no entry name"):
        RedBeatSchedulerEntry(":lock", "t", interval(timedelta(seconds=60)), app=app).save()
    with pytest.raises(KeyError, match="':schedule' is no entry name"):
        RedBeatSchedulerEntry(":schedule", "t", interval(timedelta(seconds=60)), app=app).delete()
    with pytest.raises(KeyError):
        get_store(app).delete("redbeat::schedule")
    assert not schedule_redis.exists("redbeat::lock")
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:job") is not None


# -- changing a key that is no entry hash: 'no entry named', exit 1 --------------------------------

@pytest.mark.parametrize("command", [["pause", "s"], ["resume", "s"], ["edit", "s", "task", "x"], ["run-now", "s"],
                                     ["remove", "s"], ["add", "s", "--task", "t", "--every", "60"]])
def test_changing_a_key_that_is_no_entry_says_so_with_exit_1(redis_url, schedule_redis, command):
    schedule_redis.set("redbeat:s", "someone else's value")
    result = run(redis_url, *command)
    assert result.exit_code == 1, result.stderr
    assert "no entry named 's' (its key is a string, not a hash)" in result.stderr
    assert schedule_redis.get("redbeat:s") == "someone else's value"


# -- edit of a static entry's 'enabled' warns as pause does ----------------------------------------

def test_edit_enabled_of_a_static_entry_warns_as_pause_does(redis_url, app, schedule_redis, scheduler_for):
    static = {"static-job": {"task": "t", "schedule": 60.0}}
    first = scheduler_for(static)
    first.tick()  # beat writes beat_schedule's entries
    first.close()
    result = run(redis_url, "edit", "static-job", "enabled", "false")
    assert result.exit_code == 0, result.stderr
    restarted = make_app(redis_url, broker_url=app.conf.broker_url)
    # beat restarts with a changed beat_schedule: it writes the static entries again
    scheduler_for({"static-job": {"task": "t", "schedule": 60.0, "args": [1]}}, target_app=restarted).tick()
    stored = json.loads(schedule_redis.hget("redbeat:static-job", "definition"))
    assert stored["args"] == [1] and stored["enabled"] is False  # written again, and the change lasted
    assert "this change lasts until then" not in result.stderr, result.stderr


# -- --rrule without --timezone is in the app's zone, as --cron and --at ---------------------------

def test_rrule_without_timezone_is_in_the_apps_zone_like_cron_and_at(app, schedule_redis):
    from types import SimpleNamespace
    from zoneinfo import ZoneInfo

    app.conf.timezone = "Asia/Tokyo"
    tokyo = ZoneInfo("Asia/Tokyo")
    for name, how in (("by-cron", ["--cron", "0 9 * * *"]), ("by-rrule", ["--rrule", "FREQ=DAILY;BYHOUR=9"])):
        result = CliRunner().invoke(redbeat, ["add", name, "--task", "t", "--force", *how],
                                    obj=SimpleNamespace(app=app))
        assert result.exit_code == 0, result.stderr
    hours = {name: RedBeatSchedulerEntry.from_name(name, app=app).preview(1)[0]["slot"].astimezone(tokyo).hour
             for name in ("by-cron", "by-rrule")}
    assert hours == {"by-cron": 9, "by-rrule": 9}


def test_timezone_with_an_at_time_of_its_own_offset_is_refused(redis_url, schedule_redis):
    result = run(redis_url, "add", "x", "--task", "t", "--at", "2030-01-01T10:00+01:00", "--timezone", "Asia/Tokyo")
    assert one_line_error(result) and result.exit_code == 2, result.stderr
    assert "has an offset of its own" in result.stderr
    assert not schedule_redis.exists("redbeat:x")


# -- the standalone redbeat: which server it uses is said after click reads the arguments -----------

def test_a_usage_error_is_not_preceded_by_the_default_server_notice():
    result = CliRunner().invoke(redbeat, ["add", "--bogus"], env={"REDBEAT_REDIS_URL": None})
    assert result.exit_code == 2
    assert "no --redis-url" not in result.stderr, result.stderr


# -- doctor: a task option written at the top level is a problem -----------------------------------

def test_doctor_reports_a_task_option_written_at_the_top_level_as_a_problem(redis_url, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps({
        "name": "raw", "task": "tasks.raw", "args": [], "schedule": {"__type__": "interval", "every": 30},
        "queue": "reports"}))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 0})
    result = run(redis_url, "doctor")
    assert result.exit_code == 1, result.stdout
    assert "nothing wrong found" not in result.stdout
    assert "misplaced-field" in result.stdout and "it belongs in 'options'" in result.stdout


def test_doctor_reports_another_programs_top_level_field_as_a_notice(redis_url, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps({
        "name": "raw", "task": "tasks.raw", "args": [], "schedule": {"__type__": "interval", "every": 30},
        "owner": "team-a"}))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 0})
    result = run(redis_url, "doctor", "--json")
    assert result.exit_code == 0, result.stdout
    kinds = {(finding["kind"], finding["notice"]) for finding in json.loads(result.stdout)}
    assert ("unknown-field", True) in kinds and not any(kind == "misplaced-field" for kind, _ in kinds)


# -- show: an entry of score 0 is due at the next tick ---------------------------------------------

def test_show_of_an_entry_due_at_the_next_tick_does_not_say_1970(redis_url, schedule_redis):
    schedule_redis.hset("redbeat:raw", "definition", json.dumps({
        "name": "raw", "task": "tasks.raw", "args": [], "schedule": {"__type__": "interval", "every": 30}}))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:raw": 0})
    result = run(redis_url, "show", "raw")
    assert result.exit_code == 0, result.stderr
    assert "1970" not in result.stdout, result.stdout
    assert "next_run: now (score 0: due at beat's next tick)" in result.stdout
    shown = json.loads(run(redis_url, "show", "raw", "--json").stdout)
    assert shown["next_run"] is None and shown["due_now"] is True
