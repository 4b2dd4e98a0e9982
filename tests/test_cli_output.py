"""What the commands print, against a real redis-server: doctor's problems and notices,
times as ISO 8601 (with a relative form for people), tables cut to the terminal's width,
descriptions, and the standalone command saying which Redis it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from celery.schedules import schedule
from click.testing import CliRunner

from redbeat.cli import redbeat
from redbeat.entry import RedBeatSchedulerEntry
from redbeat.schedules import clocked

UTC = timezone.utc
LONG_RULE = "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=9,12,15,18;BYMINUTE=0,15,30,45"
# The keys of the --json outputs that hold a moment (docs/cli.rst, *JSON output*).
MOMENT_KEYS = {"next_run", "last_run", "last_dispatched", "at", "since", "last_tick", "stopped_at", "failing_since",
               "claiming_paused_since", "last_check", "slot", "fire_at", "local", "scheduled", "dispatched",
               "active_since", "next_slot", "parked_at", "claimed_at", "retry_at", "last_dispatched_at",
               "started", "finished", "last_run_reported", "waiting_run"}


@pytest.fixture
def cli(redis_url):
    def run(*args: str, code: int = 0, env: dict | None = None) -> str:
        result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False, env=env)
        assert result.exit_code == code, result.output
        return result.output
    return run


def save(app, name: str, sched: Any, **fields: Any) -> RedBeatSchedulerEntry:
    entry = RedBeatSchedulerEntry(name, fields.pop("task", "tasks.report"), sched, app=app, **fields)
    entry.save()
    return entry


def finished_one_off(app, name: str = "once") -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    save(app, name, clocked(at), last_run_at=at + timedelta(seconds=1), total_run_count=1)


def test_doctor_exits_0_when_it_finds_only_notices(app, cli, schedule_redis):
    finished_one_off(app)
    save(app, "off", schedule(60), enabled=False)
    schedule_redis.zadd("redbeat::schedule", {"redbeat:off": -1})  # never due while disabled
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:once") < 0  # beat will not look at it again
    findings = json.loads(cli("doctor", "--json"))
    kinds = {f["key"]: (f["kind"], f["notice"]) for f in findings}
    assert kinds["redbeat:once"] == ("finished", True) and kinds["redbeat:off"] == ("disabled", True)
    assert all(f["notice"] for f in findings)
    text = cli("doctor")
    assert "notices (nothing wrong):" in text and "nothing wrong found, 2 notice(s)" in text
    assert "problems:" not in text


def test_doctor_exits_1_on_a_problem_and_lists_it_apart_from_notices(app, cli, schedule_redis):
    finished_one_off(app)
    schedule_redis.zadd("redbeat::schedule", {"redbeat:gone": 5})
    findings = json.loads(cli("doctor", "--json", code=1))
    assert [f["kind"] for f in findings if not f["notice"]] == ["orphan"]
    text = cli("doctor", code=1)
    assert text.index("problems:") < text.index("orphan") < text.index("notices (nothing wrong):")
    assert "1 problem(s), 1 notice(s)" in text


def test_doctor_calls_an_entry_never_due_with_runs_to_come_a_problem(app, cli, schedule_redis):
    save(app, "stuck", schedule(60))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:stuck": -1})
    findings = json.loads(cli("doctor", "--json", code=1))
    assert [(f["key"], f["kind"]) for f in findings if not f["notice"]] == [("redbeat:stuck", "never-due")]


def iso_with_relative(text: str) -> bool:
    """Whether ``text`` holds an ISO 8601 UTC time followed by its relative form."""
    import re
    return bool(re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00 \((in \d+[smhd]|\d+[smhd] ago)\)", text))


def test_show_prints_times_as_iso_8601_with_a_relative_form(app, cli, schedule_redis):
    save(app, "report", schedule(3600))
    dispatched = time.time() - 120
    status = {"next_slot": dispatched + 3600, "last_dispatched_at": dispatched, "missed": 1,
              "last_missed_at": dispatched - 60, "given_up": 1,
              "last_failure": {"at": dispatched - 30, "class": "bad-arguments", "reason": "TypeError"}}
    schedule_redis.hset("redbeat:report", "status", json.dumps(status))
    schedule_redis.lpush("redbeat::history:report", json.dumps(
        {"task_id": "t-1", "scheduled": dispatched, "dispatched": dispatched + 0.25, "lateness": 0.25,
         "outcome": "published"}))
    text = cli("show", "report")
    lines = {line.split(":", 1)[0].strip(): line for line in text.splitlines() if ":" in line}
    assert iso_with_relative(lines["next_run"]) and "(in " in lines["next_run"]
    assert iso_with_relative(lines["last_dispatched"]) and "2m ago" in lines["last_dispatched"]
    assert iso_with_relative(lines["last_failure"])
    shown_status = text.split("\nstatus:\n", 1)[1]
    for field_name in ("next_slot", "last_dispatched_at", "last_missed_at", "at"):
        [line] = [line for line in shown_status.splitlines() if line.strip().startswith(f'"{field_name}":')]
        assert iso_with_relative(line), line
    assert str(dispatched) not in text  # no raw UNIX seconds anywhere
    history = text.split("recent runs:", 1)[1]
    assert iso_with_relative(history) and "0.250s" in history


def moments(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) under a key naming a moment, at any depth."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in MOMENT_KEYS and not isinstance(item, (dict, list)):
                found.append((f"{path}.{key}", item))
            found += moments(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += moments(item, f"{path}[{index}]")
    return found


def assert_iso_times(output: Any) -> int:
    """Every moment of a --json output is None or ISO 8601 text with an offset; returns how many were given."""
    given = [(path, value) for path, value in moments(output) if value is not None]
    for path, value in given:
        assert isinstance(value, str), (path, value)
        assert datetime.fromisoformat(value).utcoffset() is not None, (path, value)
    return len(given)


def test_every_json_output_gives_times_as_iso_8601(app, cli, schedule_redis, tmp_path):
    save(app, "report", schedule(3600), description="weekly numbers")
    now = time.time()
    schedule_redis.hset("redbeat:report", "status", json.dumps({"last_dispatched_at": now - 5, "given_up": 1,
                                                                "last_failure": {"at": now - 10, "class": "x",
                                                                                 "reason": "y"}}))
    schedule_redis.lpush("redbeat::history:report", json.dumps(
        {"task_id": "t-1", "scheduled": now - 5, "dispatched": now - 4.5, "lateness": 0.5, "outcome": "published"}))
    for event in ({"task_id": "t-1", "event": "started", "at": now - 4}, {"task_id": "t-1", "event": "succeeded",
                                                                         "at": now - 3, "duration": 1.0}):
        schedule_redis.lpush("redbeat::worker-events:report", json.dumps(event))
    schedule_redis.set("redbeat::heartbeat", json.dumps({
        "token": "vm:1:x", "host": "vm", "pid": 1, "last_tick": now, "active_since": now - 100,
        "given_up": 1, "last_given_up": {"key": "redbeat:report", "at": now - 5, "class": "x", "reason": "y"}}))
    assert assert_iso_times(json.loads(cli("list", "--json"))) >= 4
    shown = json.loads(cli("show", "report", "--json"))
    shown.pop("fields")  # the hash as stored (docs/format.rst): its own UNIX seconds
    assert assert_iso_times(shown) >= 13
    assert shown["history"][0]["lateness"] == 0.5  # durations stay seconds
    assert shown["history"][0]["duration"] == 1.0 and shown["last_run_duration"] == 1.0
    status = json.loads(cli("status", "--json", code=3))
    assert assert_iso_times(status) >= 4 and isinstance(status["last_tick_age"], float)
    assert assert_iso_times(json.loads(cli("doctor", "--json"))) == 0
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps({"nightly": {"task": "tasks.nightly", "schedule": 60}}))
    assert assert_iso_times(json.loads(cli("import", str(specs), "--json"))) == 0
    assert assert_iso_times(json.loads(cli("rollback-to-2", "--json"))) == 0


def add_long_rule(cli) -> None:
    cli("add", "long-rule", "--task", "tasks.report", "--rrule", LONG_RULE, "--timezone", "Europe/Paris")


def test_list_fits_the_width_of_the_terminal_and_wide_shows_everything(cli):
    add_long_rule(cli)
    narrow = cli("list", env={"COLUMNS": "80"})
    assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
    assert "…" in narrow and "BYMINUTE=0,15,30,45" not in narrow
    assert len(narrow.splitlines()) == 2  # a row stays one line
    roomier = cli("list", env={"COLUMNS": "110"})
    # The next run is kept whole while other columns can make room.
    assert "(20" in roomier and " UTC)" in roomier and "…" in roomier and "long-rule" in roomier
    wide = cli("list", "--wide", env={"COLUMNS": "80"})
    assert "…" not in wide and "BYSETPOS=-1" in wide and "DESCRIPTION" in wide.splitlines()[0]


def standalone(*args: str, env: dict) -> subprocess.CompletedProcess:
    """``redbeat`` as a shell runs it, its output to a pipe."""
    return subprocess.run([sys.executable, "-c", "from redbeat.cli import main; main()", *args],
                          env={**env, "PYTHONPATH": str(Path(__file__).parents[1])}, capture_output=True,
                          text=True, timeout=60)


def clean_env() -> dict:
    return {name: value for name, value in os.environ.items()
            if name not in ("COLUMNS", "REDBEAT_REDIS_URL", "REDBEAT_KEY_PREFIX", "REDBEAT_TIMEOUT")}


def test_a_table_to_a_pipe_is_not_cut(cli, redis_url):
    add_long_rule(cli)
    listed = standalone("--redis-url", redis_url, "list", env=clean_env())
    assert listed.returncode == 0, listed.stderr
    assert "BYSETPOS=-1" in listed.stdout and "…" not in listed.stdout


def test_description_is_shown_and_searched(app, cli):
    save(app, "report", schedule(3600), description="Weekly numbers for Finance")
    save(app, "cleanup", schedule(60), task="tasks.cleanup")
    assert "     description: Weekly numbers for Finance" in cli("show", "report").splitlines()
    assert json.loads(cli("show", "report", "--json"))["description"] == "Weekly numbers for Finance"
    listed = {item["name"]: item["description"] for item in json.loads(cli("list", "--json"))}
    assert listed == {"report": "Weekly numbers for Finance", "cleanup": None}
    assert "Weekly numbers" not in cli("list") and "Weekly numbers for Finance" in cli("list", "--wide")
    for text, names in (("FINANCE", ["report"]), ("clean", ["cleanup"]), ("tasks.", ["cleanup", "report"]),
                        ("nothing", [])):
        found = json.loads(cli("list", "--json", "--search", text, "--sort", "name"))
        assert [item["name"] for item in found] == names, text


def test_standalone_says_which_redis_it_uses_when_told_none(redis_server):
    env = clean_env()
    result = standalone("list", env=env)
    assert "redbeat: no --redis-url or REDBEAT_REDIS_URL: using redis://localhost:6379/0" in result.stderr
    told = standalone("list", env={**env, "REDBEAT_REDIS_URL": redis_server.url()})
    assert told.returncode == 0 and "no --redis-url" not in told.stderr
    assert "no --redis-url" not in standalone("schema", env=env).stderr
    assert "no --redis-url" not in standalone("list", "--help", env=env).stderr


def test_help_shows_the_environment_variables():
    text = CliRunner().invoke(redbeat, ["--help"], terminal_width=200).output
    for variable in ("REDBEAT_REDIS_URL", "REDBEAT_KEY_PREFIX", "REDBEAT_TIMEOUT"):
        assert f"env var: {variable}" in text
