"""``redbeat move-prefix``: a schedule written by celery-redbeat 2.x under
``redbeat:`` moved to ``{redbeat}:``, on a real Redis Cluster and on a plain
redis-server; ``decide_entry`` on its own."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from conftest import make_app, published, tick_until
from topologies import ClusterSetup

from redbeat import RedBeatScheduler
from redbeat.cli import redbeat
from redbeat.config import ConfigurationError, RedBeatConfig
from redbeat.entry import RedBeatSchedulerEntry
from redbeat.lock import BeatLock
from redbeat.outcomecounts import read_counts
from redbeat.prefixmove import MoveAction, decide_entry
from redbeat.records import InFlight

NEW = "{redbeat}:"
LAST_RUN = {"__type__": "datetime", "year": 2020, "month": 1, "day": 2, "hour": 3, "minute": 4, "second": 5,
            "microsecond": 0, "timezone": "UTC"}


def definition(name: str, every: float = 3600, task: str = "tasks.moved") -> str:
    return json.dumps({"name": name, "task": task, "args": [name], "kwargs": {}, "options": {},
                       "schedule": {"__type__": "interval", "every": every, "relative": False}, "enabled": True})


def write_as_2x(client, names: list[str], static: list[str] = (), last_run: dict = LAST_RUN) -> None:
    """A schedule as celery-redbeat 2.x leaves it, written one key per command (each in its own slot)."""
    for name in names:
        client.hset(f"redbeat:{name}", mapping={
            "definition": definition(name), "meta": json.dumps({"last_run_at": last_run, "total_run_count": 7})})
        client.zadd("redbeat::schedule", {f"redbeat:{name}": 0})
    for name in static:
        client.sadd("redbeat::statics", name)


def move(url: str, *args: str, prefix: str | None = None):
    options = ["--redis-url", url] + (["--prefix", prefix] if prefix else [])
    return CliRunner().invoke(redbeat, [*options, "move-prefix", "--to", NEW, *args])


def keys(client) -> dict[str, object]:
    """Every key and what it holds, for comparing the whole database."""
    out: dict[str, object] = {}
    for key in client.scan_iter("*"):
        kind = client.type(key)
        out[key] = {"hash": client.hgetall, "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                    "set": client.smembers, "list": lambda k: client.lrange(k, 0, -1), "string": client.get}[kind](key)
    return out


# -- on a real Redis Cluster ------------------------------------------------------------------

@pytest.fixture
def cluster(tmp_path):
    setup = ClusterSetup(tmp_path)
    yield setup
    setup.stop()


@pytest.mark.e2e
def test_a_2x_schedule_on_a_cluster_moves_to_a_hash_tagged_prefix_and_beat_runs_it_there(
        cluster, redis_server, redis_url, broker_redis):
    client = cluster.client()
    names = [f"job-{i}" for i in range(12)]
    write_as_2x(client, names, static=names[:3])
    # Two that ran a minute ago: due again only in 59 minutes, if their last_run_at survives the move.
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    recent = {"__type__": "datetime", "year": now.year, "month": now.month, "day": now.day, "hour": now.hour,
              "minute": now.minute, "second": now.second, "microsecond": 0, "timezone": "UTC"}
    write_as_2x(client, ["recent-0", "recent-1"], last_run=recent)
    client.lpush("redbeat::history:job-0", '{"n": 1}', '{"n": 2}')
    client.set("session:42", "another application's")
    assert len({client.keyslot(f"redbeat:{name}") for name in names}) > 1  # the keys span slots
    # The configuration RedBeat refuses on a cluster names the way across.
    with pytest.raises(ConfigurationError, match="redbeat move-prefix --to '{redbeat}:'"):
        RedBeatConfig(make_app(cluster.url()))
    before = keys(client)

    dry = move(cluster.url())
    assert dry.exit_code == 0, dry.output
    assert "copy: 14" in dry.output and "dry run: nothing written" in dry.output
    assert "redbeat_key_prefix = '{redbeat}:'" in dry.output
    assert keys(client) == before

    applied = move(cluster.url(), "--apply")
    assert applied.exit_code == 0, applied.output
    assert "moved 14 entries" in applied.output
    after = keys(client)
    assert not [key for key in after if key.startswith("redbeat:")]
    assert after["session:42"] == "another application's"
    assert after["{redbeat}::schedule"] == [(f"{{redbeat}}:{name}", 0.0)
                                            for name in sorted([*names, "recent-0", "recent-1"])]
    assert after["{redbeat}::statics"] == set(names[:3])
    assert after["{redbeat}::history:job-0"] == ['{"n": 2}', '{"n": 1}']
    assert after["{redbeat}:job-5"] == before["redbeat:job-5"]

    rerun = move(cluster.url(), "--apply")
    assert rerun.exit_code == 0 and "moved 0 entries" in rerun.output
    assert keys(client) == after

    # The static entries are still in beat_schedule (beat deletes those that left it, as 2.x does).
    app = make_app(cluster.url(), broker_url=redis_server.url(1), redbeat_key_prefix=NEW, beat_schedule={
        name: {"task": "tasks.moved", "schedule": 3600.0, "args": [name]} for name in names[:3]})
    scheduler = RedBeatScheduler(app=app)
    try:
        tick_until(scheduler, lambda: len(published(broker_redis)) >= len(names)
                   and client.zscore("{redbeat}::schedule", "{redbeat}:recent-0") > 0,
                   message="the moved entries run")
    finally:
        scheduler.close()
    assert sorted(m["argsrepr"] for m in published(broker_redis)) == sorted(f"['{name}']" for name in names)
    assert RedBeatSchedulerEntry.from_name("job-1", app=app).total_run_count == 8  # the 2.x count carried over
    kept = RedBeatSchedulerEntry.from_name("recent-0", app=app)
    assert (kept.total_run_count, kept.last_run_at.minute) == (7, now.minute)
    assert client.zscore("{redbeat}::schedule", "{redbeat}:recent-0") == pytest.approx(
        now.replace(microsecond=0).timestamp() + 3600)


@pytest.mark.e2e
def test_a_conflict_on_a_cluster_is_refused_in_one_line_and_nothing_moves(cluster):
    client = cluster.client()
    write_as_2x(client, ["a", "b"])
    client.hset("{redbeat}:b", "definition", definition("b", task="tasks.other"))
    before = keys(client)
    result = move(cluster.url(), "--apply")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: 1 conflicting entries, nothing moved: redbeat:b (see the dry run)"]
    assert keys(client) == before
    assert "conflict  redbeat:b" in move(cluster.url()).output
    forced = move(cluster.url(), "--apply", "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads(client.hget("{redbeat}:b", "definition"))["task"] == "tasks.moved"


# -- on a plain redis-server ------------------------------------------------------------------

def test_the_move_is_refused_while_a_beat_holds_the_lock_and_forced_it_fences_that_beat(
        schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a"])
    beat_lock = BeatLock(schedule_redis, "redbeat::lock", 30)
    assert beat_lock.acquire()
    before = keys(schedule_redis)
    result = move(redis_url, "--apply")
    assert result.exit_code == 1
    assert "a beat holds the lock redbeat::lock: stop it first" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert keys(schedule_redis) == before
    assert "held by" in move(redis_url).output  # the dry run says so too
    forced = move(redis_url, "--apply", "--force")
    assert forced.exit_code == 0, forced.output
    assert not beat_lock.renew()  # fenced: its token is no longer the lock's
    assert schedule_redis.exists("{redbeat}:a") and schedule_redis.get("redbeat::lock") is None


def test_the_move_is_refused_while_a_beat_ticks_without_a_lock(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a"])
    schedule_redis.set("redbeat::heartbeat", json.dumps({"token": "t", "last_tick": time.time(),
                                                         "max_interval": 5}))
    result = move(redis_url, "--apply")
    assert result.exit_code == 1 and "a beat ticked" in result.output
    assert schedule_redis.exists("redbeat:a") and not schedule_redis.exists("{redbeat}:a")
    assert schedule_redis.get("redbeat::lock") is None  # the move's lock was given back


def test_an_interrupted_move_is_finished_by_the_next_run_without_losing_newer_runs(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["copied", "half", "ran-since", "untouched"], static=["half"])
    schedule_redis.lpush("redbeat::history:half", '{"n": 1}')
    run = InFlight(task_id="t-1", key="redbeat:half", scheduled=1.0, claimed_at=1.0, token="old", retry_at=2.0)
    schedule_redis.hset("redbeat::inflight", "t-1", run.to_json())
    # Where a killed move stops: the entry written at the destination, the source not yet deleted ...
    for name in ("copied", "half", "ran-since"):
        schedule_redis.hset(f"{{redbeat}}:{name}", mapping=schedule_redis.hgetall(f"redbeat:{name}"))
    # ... the source hash deleted but not yet its member ...
    schedule_redis.zadd("{redbeat}::schedule", {"{redbeat}:half": 0})
    schedule_redis.delete("redbeat:half", "redbeat::history:half")
    # ... and a beat at the destination that ran one since.
    schedule_redis.hset("{redbeat}:ran-since", "meta", json.dumps({"last_run_at": None, "total_run_count": 9}))

    dry = move(redis_url)
    assert "copy: 1   replace: 0   done: 3" in dry.output, dry.output
    result = move(redis_url, "--apply")
    assert result.exit_code == 0, result.output
    assert "moved 4 entries, 1 runs in flight and 0 members of the failing set" in result.output
    assert schedule_redis.zrange("{redbeat}::schedule", 0, -1) == [
        "{redbeat}:copied", "{redbeat}:half", "{redbeat}:ran-since", "{redbeat}:untouched"]
    assert json.loads(schedule_redis.hget("{redbeat}:ran-since", "meta"))["total_run_count"] == 9
    assert not [key for key in schedule_redis.keys("redbeat:*")]
    moved = InFlight.from_json(schedule_redis.hget("{redbeat}::inflight", "t-1"))
    assert (moved.key, moved.task_id) == ("{redbeat}:half", "t-1")


def write_worker_records(client) -> None:
    """What workers recording runs leave under the source (outcomecounts.py, workerevents)."""
    client.lpush("redbeat::worker-events:a", '{"event": 1}', '{"event": 2}')  # newest first: 2, then 1
    client.hset("redbeat::run-outcomes", mapping={"outcome:failed": 3, "duration:count": 2, "duration:sum": 1.5,
                                                  "duration:le:1": 2})
    client.zadd("redbeat::failing", {"redbeat:a": 100, "redbeat:removed": 50, "someone-else:x": 10})


def test_worker_events_the_failing_set_and_the_outcome_counts_move_with_the_schedule(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a", "b"])
    write_worker_records(schedule_redis)
    counts = schedule_redis.hgetall("redbeat::run-outcomes")
    dry = move(redis_url)
    assert "worker events: each moved entry's to {redbeat}::worker-events:<name>" in dry.output
    assert "failing: 3 members to {redbeat}::failing" in dry.output
    assert "run outcomes: the counts to {redbeat}::run-outcomes" in dry.output
    result = move(redis_url, "--apply")
    assert result.exit_code == 0, result.output
    assert "2 members of the failing set" in result.output
    assert schedule_redis.lrange("{redbeat}::worker-events:a", 0, -1) == ['{"event": 2}', '{"event": 1}']
    assert read_counts(schedule_redis.hgetall("{redbeat}::run-outcomes")).outcomes["failed"] == 3
    assert schedule_redis.hgetall("{redbeat}::run-outcomes") == counts
    # Members renamed to the new prefix with their scores; a removed entry's moves too (readers skip it).
    assert schedule_redis.zrange("{redbeat}::failing", 0, -1, withscores=True) == [
        ("{redbeat}:removed", 50.0), ("{redbeat}:a", 100.0)]
    # Only what is not the source's entry keys is left behind.
    assert sorted(schedule_redis.keys("redbeat:*")) == ["redbeat::failing"]
    assert schedule_redis.zrange("redbeat::failing", 0, -1) == ["someone-else:x"]


def test_what_workers_wrote_at_the_destination_since_is_kept(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a"])
    write_worker_records(schedule_redis)
    schedule_redis.lpush("{redbeat}::worker-events:a", '{"event": 3}')
    schedule_redis.hset("{redbeat}::run-outcomes", "outcome:succeeded", 1)
    schedule_redis.zadd("{redbeat}::failing", {"{redbeat}:a": 200})
    assert move(redis_url, "--apply").exit_code == 0
    assert schedule_redis.lrange("{redbeat}::worker-events:a", 0, -1) == ['{"event": 3}']
    assert schedule_redis.hgetall("{redbeat}::run-outcomes") == {"outcome:succeeded": "1"}
    assert schedule_redis.zscore("{redbeat}::failing", "{redbeat}:a") == 200
    assert not schedule_redis.exists("redbeat::worker-events:a", "redbeat::run-outcomes")


def test_a_failing_member_whose_entry_stays_at_the_source_stays_with_it(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a"])
    schedule_redis.set("redbeat:b", "a string")  # skipped by the move: not an entry
    schedule_redis.zadd("redbeat::schedule", {"redbeat:b": 0})
    schedule_redis.zadd("redbeat::failing", {"redbeat:a": 1, "redbeat:b": 2})
    assert move(redis_url, "--apply").exit_code == 0
    assert schedule_redis.zrange("redbeat::failing", 0, -1) == ["redbeat:b"]
    assert schedule_redis.zrange("{redbeat}::failing", 0, -1) == ["{redbeat}:a"]


def test_entries_held_for_3_are_counted_and_left_at_the_source(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a"])
    schedule_redis.hset("redbeat:held", "definition", definition("held"))
    schedule_redis.zadd("redbeat::held-for-3", {"redbeat:held": 0})
    dry = move(redis_url)
    assert "held for 3: 1 entries that rollback-to-2 holds out of the schedule are not moved" in dry.output
    assert move(redis_url, "--apply").exit_code == 0
    assert schedule_redis.exists("redbeat:held", "redbeat::held-for-3") == 2


def test_wrong_typed_keys_are_said_in_one_line_or_skipped(schedule_redis, redis_url):
    write_as_2x(schedule_redis, ["a"])
    schedule_redis.set("redbeat:b", "a string")
    schedule_redis.zadd("redbeat::schedule", {"redbeat:b": 0})
    dry = move(redis_url)
    assert "skip    redbeat:b" in dry.output and "holds a string, not an entry" in dry.output
    assert move(redis_url, "--apply").exit_code == 0
    assert schedule_redis.get("redbeat:b") == "a string" and schedule_redis.exists("{redbeat}:a")
    schedule_redis.set("{redbeat}::schedule", "oops")
    schedule_redis.hset("redbeat:c", "definition", definition("c"))
    schedule_redis.zadd("redbeat::schedule", {"redbeat:c": 0})
    result = move(redis_url, "--apply")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: {redbeat}::schedule holds a string, not a zset: fix it first (RENAME it aside, or DEL it if "
        "nothing in it matters)"]


def test_prefixes_that_overlap_and_a_cluster_destination_without_a_hash_tag_are_refused(redis_url):
    result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, "move-prefix", "--to", "redbeat:x:"])
    assert result.exit_code == 1 and "neither may start with the other" in result.output
    result = CliRunner().invoke(redbeat, ["--redis-url", "redis-cluster://127.0.0.1:1", "move-prefix",
                                          "--to", "beat:"])
    assert result.exit_code == 1 and "has no hash tag" in result.output


def test_a_cluster_that_is_down_is_said_in_one_line():
    result = CliRunner().invoke(redbeat, ["--redis-url", "redis-cluster://127.0.0.1:1", "move-prefix", "--to", NEW])
    assert result.exit_code == 4  # Redis out of reach (docs/cli.rst, "Exit codes")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


# -- deciding one entry -----------------------------------------------------------------------

def fields(task: str = "t", runs: int = 1) -> dict[bytes, bytes]:
    return {b"definition": task.encode(), b"meta": json.dumps({"total_run_count": runs}).encode()}


@pytest.mark.parametrize("source, target, target_type, force, action", [
    (fields(), None, "none", False, MoveAction.COPY),
    (fields(), fields(), "hash", False, MoveAction.DONE),
    (None, fields(), "hash", False, MoveAction.DONE),
    (None, None, "none", False, MoveAction.SKIP),
    ({b"meta": b"{}"}, None, "none", False, MoveAction.SKIP),
    (fields(runs=3), fields(runs=5), "hash", False, MoveAction.DONE),
    (fields(runs=5), fields(runs=0), "hash", False, MoveAction.REPLACE),
    (fields("a"), fields("b"), "hash", False, MoveAction.CONFLICT),
    (fields("a"), fields("b"), "hash", True, MoveAction.REPLACE),
    (fields(), None, "string", True, MoveAction.CONFLICT),
])
def test_decide_entry(source, target, target_type, force, action):
    assert decide_entry(source, target, target_type, force)[0] is action

