"""Overlap policies end to end (docs/scheduling.rst): a real redis-server, a real
``celery beat -S redbeat.RedBeatScheduler`` and a real worker that imports redbeat.worker,
running e2e_app.slow, a task slower than its entry's interval."""

from __future__ import annotations

import json
import re
import signal

import pytest
import redis
from click.testing import CliRunner
from conftest import Processes, start_beat, wait_for

from redbeat.cli import redbeat
from redbeat.runs import task_id_for

pytestmark = pytest.mark.e2e


def slow_entry(schedule: redis.Redis, name: str, seconds: float, **options: object) -> None:
    """An entry due now, every second, of e2e_app.slow(name, seconds), with its overlap ``options``."""
    schedule.hset(f"redbeat:{name}", "definition", json.dumps({
        "name": name, "task": "e2e_app.slow", "args": [name, seconds],
        "schedule": {"__type__": "interval", "every": 1}, **options}))
    schedule.zadd("redbeat::schedule", {f"redbeat:{name}": 0})


def start_worker(beats: Processes, *options: str) -> None:
    """A worker that records RedBeat's runs, ready (it reports the first run's start: until a
    worker reports, the policy cannot know a run goes on)."""
    beats.env["E2E_IMPORTS"] = "redbeat.worker"
    beats.start("worker", "worker", *options, "-l", "info", "--without-gossip", "--without-mingle",
                "--without-heartbeat")
    wait_for(lambda: re.search(r"celery@\S+ ready", beats.log("worker")), timeout=30, message="the worker")


def executions(record: redis.Redis, label: str) -> list[dict]:
    """The executions of e2e_app.slow(label) that started, oldest first: task id, start, end (None: going on)."""
    runs: dict[str, dict] = {}
    for raw in record.lrange("e2e:slow", 0, -1):
        mark = json.loads(raw)
        if mark["label"] == label:
            run = runs.setdefault(mark["id"], {"id": mark["id"], "start": None, "end": None})
            run.update({key: mark[key] for key in ("start", "end") if key in mark})
    return sorted(runs.values(), key=lambda run: run["start"])


def history(schedule: redis.Redis, name: str) -> list[dict]:
    return [json.loads(raw) for raw in reversed(schedule.lrange(f"redbeat::history:{name}", 0, -1))]


def show(schedule_server, name: str) -> str:
    result = CliRunner().invoke(redbeat, ["--redis-url", schedule_server.url(0), "show", name])
    assert result.exit_code == 0, result.output
    return result.output


def waiting_run(schedule_server, name: str) -> str | None:
    result = CliRunner().invoke(redbeat, ["--redis-url", schedule_server.url(0), "list", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = [entry for entry in json.loads(result.output) if entry["name"] == name]
    return entry["waiting_run"]


def ended(record: redis.Redis, label: str, count: int) -> list[dict] | None:
    runs = executions(record, label)
    return runs if sum(run["end"] is not None for run in runs) >= count else None


def assert_one_at_a_time(runs: list[dict]) -> None:
    for earlier, later in zip(runs, runs[1:]):
        assert earlier["end"] is not None and later["start"] >= earlier["end"], runs


def test_skip_skips_the_slots_that_come_while_the_previous_run_goes_on_and_show_says_why(
        beats: Processes, schedule_server, redis_server):
    schedule, record = schedule_server.client(0), redis_server.client(2)
    start_worker(beats, "-P", "prefork", "-c", "4")
    slow_entry(schedule, "skipper", 2.0, overlap="skip")
    start_beat(beats, "beat")

    runs = wait_for(lambda: ended(record, "skipper", 3), timeout=40, message="three runs of skipper to end")
    assert_one_at_a_time(runs)
    skipped = [run for run in history(schedule, "skipper") if run["outcome"] == "missed"]
    assert skipped and all(run["reason"].startswith("overlap: the previous run ") for run in skipped)
    assert {run["task_id"] for run in skipped}.isdisjoint(run["id"] for run in runs)
    assert "overlap: the previous run" in show(schedule_server, "skipper")
    assert "skip; a started run counts as finished after 3600s (redbeat_max_run_time)" in show(
        schedule_server, "skipper")
    assert "skipped 1 slot(s): overlap: the previous run" in beats.log("beat")


def test_buffer_one_runs_one_waiting_run_as_soon_as_the_previous_ended_and_never_two_at_once(
        beats: Processes, schedule_server, redis_server):
    schedule, record = schedule_server.client(0), redis_server.client(2)
    start_worker(beats, "-P", "prefork", "-c", "4")
    slow_entry(schedule, "buffered", 2.0, overlap="buffer_one")
    start_beat(beats, "beat")

    wait_for(lambda: "1 run waiting" in show(schedule_server, "buffered"), timeout=30, message="a run waiting")
    wait_for(lambda: waiting_run(schedule_server, "buffered"), timeout=30, message="list --json: a run waiting")
    runs = wait_for(lambda: ended(record, "buffered", 4), timeout=40, message="four runs of buffered to end")
    assert_one_at_a_time(runs)
    # Each waiting run started soon after the previous one ended (beat looks again every second).
    # The bound is loose on purpose: a busy machine must not fail it, and the order of the runs is
    # what the test proves.
    assert all(later["start"] - earlier["end"] < 5.0 for earlier, later in zip(runs, runs[1:])), runs
    published = {run["task_id"]: run for run in history(schedule, "buffered") if run["outcome"] == "published"}
    for run in runs:  # each with its own slot's task id
        assert run["id"] == task_id_for("redbeat:buffered", published[run["id"]]["scheduled"])
    skipped = [run for run in history(schedule, "buffered") if run["outcome"] == "missed"]
    assert skipped and all(run["reason"].startswith("overlap: ") for run in skipped)


def test_a_run_whose_worker_was_killed_stops_blocking_its_entry_after_max_run_time(
        beats: Processes, schedule_server, redis_server):
    schedule, record = schedule_server.client(0), redis_server.client(2)
    start_worker(beats, "-P", "solo")
    slow_entry(schedule, "orphaned", 60.0, overlap="skip", max_run_time=3)
    start_beat(beats, "beat")

    [first] = wait_for(lambda: executions(record, "orphaned"), timeout=30, message="the first run to start")
    wait_for(lambda: "running since" in show(schedule_server, "orphaned"), timeout=10, message="show the run")
    beats.stop("worker", signal.SIGKILL)  # mid-task: its end is never reported
    text = show(schedule_server, "orphaned")
    assert "counts as finished at" in text and "(the entry's max_run_time)" in text

    def published_after_the_bound() -> list[dict]:
        return [run for run in history(schedule, "orphaned")
                if run["outcome"] == "published" and run["task_id"] != first["id"]]
    [*_, later] = wait_for(published_after_the_bound, timeout=20, message="a run published after the bound")
    assert later["dispatched"] >= first["start"] + 3 - 0.5  # the bound, give or take the two hosts' clocks
    skipped = [run for run in history(schedule, "orphaned") if run["outcome"] == "missed"]
    assert skipped and all(first["id"] in run["reason"] for run in skipped if run["scheduled"] < later["scheduled"])
