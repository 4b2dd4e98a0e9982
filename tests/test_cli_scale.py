"""Commands that scale: streamed export and import in both formats, --prune, list --limit,
name patterns matched by Redis, and bulk pause/resume/remove/run-now with --yes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from redbeat.cli import redbeat

SCHEDULE = "redbeat::schedule"


@pytest.fixture
def cli(redis_url):
    runner = CliRunner()

    def run(*args, code=0, stdin=None):
        result = runner.invoke(redbeat, ["--redis-url", redis_url, *args], input=stdin, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output
    return run


def definition(name: str, task: str = "tasks.report", every: float = 60, **more) -> str:
    return json.dumps({"name": name, "task": task, "schedule": {"__type__": "interval", "every": every},
                       "args": [], "kwargs": {}, "options": {}, "enabled": True, **more})


def put(redis_client, name: str, score: float = 1e9, **fields: str) -> None:
    """An entry written as beat would leave it: its hash fields, then its score."""
    redis_client.hset(f"redbeat:{name}", mapping={"definition": definition(name), **fields})
    redis_client.zadd(SCHEDULE, {f"redbeat:{name}": score})


def snapshot(redis_client) -> dict:
    """Every entry's score and hash fields, exactly."""
    return {key: (score, redis_client.hgetall(key)) for key, score in redis_client.zrange(SCHEDULE, 0, -1,
                                                                                           withscores=True)}


def odd_schedule(redis_client) -> None:
    """Entries of every kind an export must carry exactly: meta and status, parked, never due, orphan."""
    put(redis_client, "plain", 1_700_000_000.25, meta='{"last_run_at": null, "total_run_count": 3}',
        status='{"given_up": 1}')
    put(redis_client, "parked", -1, parked='{"reason": "bad", "parked_at": 1.5}')
    put(redis_client, "never", float("-inf"))
    put(redis_client, "spaced  out", 5, meta='{"total_run_count":1}')  # compact JSON: kept as text
    redis_client.hset("redbeat:broken", "definition", "{not json")
    redis_client.zadd(SCHEDULE, {"redbeat:broken": 7, "redbeat:orphan": 3})
    redis_client.sadd("redbeat::statics", "plain")


@pytest.mark.parametrize("fmt", ["export", "specs"])
def test_both_export_formats_import_back_exactly(cli, schedule_redis, tmp_path, fmt):
    odd_schedule(schedule_redis)
    before = snapshot(schedule_redis)
    path = tmp_path / "backup.json"
    cli("export", "--format", fmt, "-o", str(path))
    schedule_redis.flushdb()
    cli("import", str(path), "--apply")
    assert snapshot(schedule_redis) == before
    assert schedule_redis.smembers("redbeat::statics") == {"plain"}
    assert "unchanged: 6" in cli("import", str(path))


def test_specs_export_is_decoded_sorted_and_stable(cli, schedule_redis):
    put(schedule_redis, "b", meta='{"last_run_at": null, "total_run_count": 0}')
    put(schedule_redis, "a")
    text = cli("export", "--format", "specs")
    data = json.loads(text)
    assert data["format"] == "redbeat-specs" and "exported_at" not in data
    assert list(data["entries"]) == ["a", "b"]
    assert data["entries"]["a"]["definition"]["task"] == "tasks.report"
    assert data["entries"]["b"]["meta"] == {"last_run_at": None, "total_run_count": 0}
    assert '\n    "a": {\n      "definition": {\n        "name": "a",' in text
    assert cli("export", "--format", "specs") == text  # two exports of one schedule are the same file


def test_an_export_made_before_still_imports(cli, schedule_redis, tmp_path):
    old = {"format": "redbeat-export", "version": 1, "prefix": "redbeat:", "exported_at": 1.0, "statics": [],
           "entries": [{"key": "redbeat:old", "score": 12.5, "fields": {"definition": definition("old")}}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old, indent=2))
    assert "create: 1" in cli("import", str(path), "--apply")
    assert schedule_redis.zscore(SCHEDULE, "redbeat:old") == 12.5


def test_import_reads_a_pipe(cli, schedule_redis):
    specs = {"piped": {"task": "tasks.report", "schedule": 60}}
    cli("import", "-", "--apply", stdin=json.dumps(specs))
    assert schedule_redis.hexists("redbeat:piped", "definition")


def test_prune_lists_then_removes_entries_not_in_the_file_but_keeps_statics(cli, schedule_redis, tmp_path):
    put(schedule_redis, "keep")
    put(schedule_redis, "extra")
    put(schedule_redis, "static")
    schedule_redis.sadd("redbeat::statics", "static")
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({"keep": {"task": "tasks.report", "schedule": 60}}))
    dry = cli("import", str(path), "--prune")
    assert "remove: 1  (extra)" in dry and "dry run" in dry
    assert schedule_redis.exists("redbeat:extra")
    report = json.loads(cli("import", str(path), "--prune", "--apply", "--json"))
    assert report["remove"] == ["extra"] and report["applied"]
    assert not schedule_redis.exists("redbeat:extra") and schedule_redis.zscore(SCHEDULE, "redbeat:extra") is None
    assert schedule_redis.exists("redbeat:static") and schedule_redis.exists("redbeat:keep")


def test_import_of_a_spec_with_an_unknown_field_is_refused_naming_the_entry(cli, schedule_redis, tmp_path):
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({"good": {"task": "tasks.report", "schedule": 60},
                                "typo": {"task": "tasks.report", "schedule": 60, "queue": "celery"}}))
    output = cli("import", str(path), "--apply", code=1)
    assert "invalid: typo: unknown field 'queue'" in output and "nothing written" in output
    assert not schedule_redis.exists("redbeat:good")


def test_export_with_an_unknown_field_needs_force(cli, schedule_redis, tmp_path):
    put(schedule_redis, "odd")
    schedule_redis.hset("redbeat:odd", "definition", definition("odd", every=5, queue="celery"))
    path = tmp_path / "backup.json"
    cli("export", "-o", str(path))
    schedule_redis.flushdb()
    assert "invalid: odd: unknown field 'queue'" in cli("import", str(path), "--apply", code=1)
    cli("import", str(path), "--apply", "--force")
    assert "queue" in schedule_redis.hget("redbeat:odd", "definition")


SPECIAL = ["a*b", "a?c", "x[1]", "back\\slash", "plain-a", "ünï"]


def test_match_is_done_by_redis_and_special_characters_are_literal_when_escaped(cli, schedule_redis):
    for name in SPECIAL:
        put(schedule_redis, name)
    names = lambda *args: sorted(row["name"] for row in json.loads(cli("list", "--json", *args)))  # noqa: E731
    assert names("--match", "a*") == ["a*b", "a?c"]
    assert names("--match", "a\\*b") == ["a*b"]
    assert names("--match", "x\\[1]") == ["x[1]"]
    assert names("--match", "back\\\\slash") == ["back\\slash"]
    assert names("--match", "ü*") == ["ünï"]
    assert names("--match", "[^ax]*") == ["back\\slash", "plain-a", "ünï"]


def test_match_is_sent_to_redis_as_zscan_match(cli, schedule_redis, redis_server):
    put(schedule_redis, "one")
    monitor = subprocess.Popen(["redis-cli", "-p", str(redis_server.port), "monitor"], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert monitor.stdout is not None and monitor.stdout.readline().strip() == "OK"
        cli("list", "--match", "o*")
        schedule_redis.echo("listed")  # a command after the list: reading up to it is bounded
        seen = []
        while not any('"listed"' in line for line in seen):
            seen.append(monitor.stdout.readline())
    finally:
        monitor.terminate()
        monitor.wait(timeout=10)
    assert any('"ZSCAN" "redbeat::schedule" "0" "MATCH" "redbeat:o*"' in line for line in seen), seen


def test_list_limit_gives_the_first_n_in_order(cli, schedule_redis):
    for number in range(5):
        put(schedule_redis, f"e{number}", score=1_800_000_000 + 10 * (5 - number))
    rows = json.loads(cli("list", "--json", "--limit", "2"))
    assert [row["name"] for row in rows] == ["e4", "e3"]
    assert [row["name"] for row in json.loads(cli("list", "--json", "--limit", "2", "--sort", "name"))] == ["e0", "e1"]
    table = cli("list", "--limit", "1").splitlines()
    assert len(table) == 2 and table[1].startswith("e4")


@pytest.mark.parametrize("command, check", [
    ("pause", lambda r: json.loads(r.hget("redbeat:job-1", "definition"))["enabled"] is False),
    ("remove", lambda r: not r.exists("redbeat:job-1")),
    ("run-now", lambda r: r.hexists("redbeat:job-1", "run_now")),
])
def test_bulk_lists_without_yes_and_acts_with_it(cli, schedule_redis, command, check):
    put(schedule_redis, "job-1")
    put(schedule_redis, "job-2")
    put(schedule_redis, "other")
    before = snapshot(schedule_redis)
    preview = cli(command, "--match", "job-*")
    assert "job-1" in preview and "job-2" in preview and "other" not in preview
    assert "2 entries; nothing changed (add --yes)" in preview
    assert snapshot(schedule_redis) == before
    cli(command, "--match", "job-*", "--yes")
    assert check(schedule_redis)
    assert snapshot(schedule_redis)["redbeat:other"] == before["redbeat:other"]


def test_bulk_resume_by_task_and_parked_filter(cli, schedule_redis):
    put(schedule_redis, "a")
    schedule_redis.hset("redbeat:a", "definition", definition("a", enabled=False))
    put(schedule_redis, "b")
    schedule_redis.hset("redbeat:b", "definition", definition("b", task="tasks.other", enabled=False))
    put(schedule_redis, "p", -1, parked='{"reason": "bad", "parked_at": 1}')
    schedule_redis.hset("redbeat:p", "definition", definition("p", task="tasks.third"))
    cli("resume", "--task", "tasks.report", "--yes")
    assert json.loads(schedule_redis.hget("redbeat:a", "definition"))["enabled"] is True
    assert json.loads(schedule_redis.hget("redbeat:b", "definition"))["enabled"] is False
    assert "would remove: p" in cli("remove", "--parked")
    assert "give a NAME" in cli("pause", code=2)
    assert "not both" in cli("pause", "a", "--match", "*", code=2)


def test_progress_is_not_printed_when_stderr_is_no_terminal(redis_url, schedule_redis, tmp_path):
    for number in range(1500):
        put(schedule_redis, f"e{number}")
    path = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url, "export", "-o", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url, "import", str(path),
                           "--apply"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and "unchanged: 1500" in done.stdout
