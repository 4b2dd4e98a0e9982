"""Fault injection against real processes on loopback: beats killed, paused and cut
off from Redis, and bad input written into a live schedule. Every wait is bounded.

The schedule lives on a redis-server of the test's own (so it can be restarted);
the broker is the session's server (db 1). No worker runs: the messages stay in
the broker queue, where the test counts them per scheduled slot.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from conftest import Processes, RedisServer, assert_each_slot_once, messages, published, start_beat, wait_for

pytestmark = pytest.mark.e2e

LOCK_TIMEOUT = 2.0


@pytest.fixture
def lock_timeout() -> float:
    return LOCK_TIMEOUT


def test_killed_holder_is_replaced_within_the_lock_timeout_and_no_slot_runs_twice(beats, broker_redis):
    start_beat(beats, "beat-a")
    wait_for(lambda: "Acquired lock" in beats.log("beat-a"), timeout=30, message="beat A active")
    start_beat(beats, "beat-b")
    wait_for(lambda: "standing by" in beats.log("beat-b"), timeout=30, message="beat B standing by")
    wait_for(lambda: len(messages(broker_redis)) >= 3, timeout=15, message="runs under beat A")

    beats.stop("beat-a", signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: "Acquired lock" in beats.log("beat-b"), timeout=LOCK_TIMEOUT + 5, interval=0.02,
             message="beat B taking over")
    takeover = time.monotonic() - killed_at
    assert takeover <= LOCK_TIMEOUT + 1.0, f"takeover took {takeover:.2f}s"
    count = len(messages(broker_redis))
    wait_for(lambda: len(messages(broker_redis)) >= count + 3, timeout=15, message="runs under beat B")
    beats.stop("beat-b")

    scheduled = assert_each_slot_once(broker_redis)
    gaps = [b - a for a, b in zip(scheduled, scheduled[1:])]
    # Every slot is one interval after the dispatch before it: only the fail-over stretches one gap.
    assert sum(1 for gap in gaps if gap > 1.5) <= 1, gaps
    assert max(gaps) <= LOCK_TIMEOUT + 2.5, gaps
    print(f"takeover after kill -9: {takeover:.2f}s; {len(scheduled)} slots, 0 duplicates")


def test_paused_holder_dispatches_nothing_after_it_wakes_and_does_not_crash(beats, broker_redis):
    beat_a = start_beat(beats, "beat-a")
    wait_for(lambda: "Acquired lock" in beats.log("beat-a"), timeout=30, message="beat A active")
    start_beat(beats, "beat-b")
    wait_for(lambda: "standing by" in beats.log("beat-b"), timeout=30, message="beat B standing by")
    wait_for(lambda: len(messages(broker_redis)) >= 2, timeout=15, message="runs under beat A")

    beat_a.send_signal(signal.SIGSTOP)
    origin_a = f"gen{beat_a.pid}@"
    try:
        sent_by_a = sum(1 for m in messages(broker_redis) if m["headers"]["origin"].startswith(origin_a))
        wait_for(lambda: "Acquired lock" in beats.log("beat-b"), timeout=LOCK_TIMEOUT + 5,
                 message="beat B taking over from the paused beat")
    finally:
        beat_a.send_signal(signal.SIGCONT)
    wait_for(lambda: "lost lock" in beats.log("beat-a"), timeout=10, message="beat A noticing it lost the lock")
    count = len(messages(broker_redis))
    wait_for(lambda: len(messages(broker_redis)) >= count + 3, timeout=15, message="runs under beat B")

    assert beat_a.poll() is None, "the paused beat crashed"
    assert "standing by" in beats.log("beat-a")
    assert sum(1 for m in messages(broker_redis) if m["headers"]["origin"].startswith(origin_a)) == sent_by_a
    assert_each_slot_once(broker_redis)


def test_beat_survives_five_redis_restarts_and_dispatches_after_each(beats, schedule_server, broker_redis):
    beat = start_beat(beats, "beat")
    wait_for(lambda: len(messages(broker_redis)) >= 1, timeout=30, message="first run")
    for restart in range(5):
        schedule_server.stop()
        wait_for(lambda restart=restart: beats.log("beat").count("is unavailable") > restart, timeout=10,
                 message=f"beat noticing outage {restart + 1}")
        schedule_server.start()  # empty: the data is gone, the static entry comes back from beat
        count = len(messages(broker_redis))
        wait_for(lambda count=count: len(messages(broker_redis)) > count, timeout=10,
                 message=f"a run after restart {restart + 1}")
    assert beat.poll() is None
    assert beats.log("beat").count("ticking normally again") >= 5
    assert_each_slot_once(broker_redis)


BAD_ENTRIES = {
    "bad-json": ["HSET", "redbeat:bad-json", "definition", '{"name": "bad-json", "task": '],
    "bad-type": ["HSET", "redbeat:bad-type", "definition",
                 '{"name": "bad-type", "task": "t", "schedule": {"__type__": "lunar"}}'],
    "no-task": ["HSET", "redbeat:no-task", "definition",
                '{"name": "no-task", "schedule": {"__type__": "interval", "every": 1}}'],
    "bad-cron": ["HSET", "redbeat:bad-cron", "definition",
                 '{"name": "bad-cron", "task": "t", "schedule": {"__type__": "crontab", "hour": "25"}}'],
    "no-definition": ["HSET", "redbeat:no-definition", "meta", '{"last_run_at": null}'],
    "bad-meta": ["HSET", "redbeat:bad-meta", "definition",
                 '{"name": "bad-meta", "task": "t", "schedule": 5}', "meta", '{"total_run_count": "many"}'],
}


def test_bad_input_written_into_a_live_schedule_costs_only_the_bad_entries(beats, schedule_server, broker_redis):
    beat = start_beat(beats, "beat")
    wait_for(lambda: len(messages(broker_redis)) >= 2, timeout=30, message="runs before the bad input")
    cli = ["redis-cli", "-p", str(schedule_server.port)]
    for command in BAD_ENTRIES.values():
        subprocess.run(cli + command, check=True, capture_output=True, timeout=10)
    # Bytes that are not UTF-8, written raw from standard input.
    subprocess.run(cli + ["-x", "HSET", "redbeat:not-utf8", "definition"], input=b'{"name": "\xff\xfe"}',
                   check=True, capture_output=True, timeout=10)
    members = [*(f"redbeat:{name}" for name in BAD_ENTRIES), "redbeat:not-utf8", "redbeat:orphan"]
    for member in members:
        subprocess.run(cli + ["ZADD", "redbeat::schedule", "0", member], check=True, capture_output=True, timeout=10)
    subprocess.run(cli + ["ZADD", "redbeat::schedule", "inf", "redbeat:never"], check=True, capture_output=True,
                   timeout=10)

    client = schedule_server.client()
    wait_for(lambda: all(client.hexists(m, "parked") for m in members if m != "redbeat:orphan"), timeout=10,
             message="every bad entry parked")
    wait_for(lambda: client.zscore("redbeat::schedule", "redbeat:orphan") is None, timeout=10,
             message="the orphan member removed")
    count = len(messages(broker_redis))
    wait_for(lambda: len(messages(broker_redis)) >= count + 3, timeout=15, message="good runs after the bad input")

    assert beat.poll() is None
    assert {m["task"] for m in messages(broker_redis)} == {"e2e_app.record"}
    for member in members[:-1]:
        assert client.zscore("redbeat::schedule", member) == -1
        assert json.loads(client.hget(member, "parked"))["reason"]
    scheduled = assert_each_slot_once(broker_redis)
    gaps = [b - a for a, b in zip(scheduled, scheduled[1:])]
    assert max(gaps) < 1.5, f"the good entry lost its timing: {gaps}"


def broker_env(project_env: dict, schedule_server: RedisServer, broker: RedisServer, **settings: str) -> dict:
    """The environment of a beat on ``schedule_server`` whose broker is a server of the
    test's own (``broker``, so that the test can stop it), with more e2e_app settings."""
    return dict(project_env, E2E_REDBEAT_URL=schedule_server.url(0), E2E_BROKER_URL=broker.url(0),
                E2E_RECORD_URL=broker.url(2), E2E_LOCK_TIMEOUT=str(LOCK_TIMEOUT), PYTHONUNBUFFERED="1", **settings)


def test_broker_outage_is_retried_with_the_same_task_ids_and_never_crashes_beat(
        tmp_path, schedule_server, project_env):
    broker = RedisServer(tmp_path / "broker-data")
    # catch_up "all": every run that waited out the outage is published (with "once"
    # only the newest would be, the others recorded as missed).
    env = broker_env(project_env, schedule_server, broker, E2E_CATCH_UP="all")
    try:
        with Processes(tmp_path, env) as processes:
            beat = start_beat(processes, "beat")
            client = broker.client(0)
            wait_for(lambda: len(published(client)) >= 2, timeout=30, message="runs before the outage")
            broker.stop()
            wait_for(lambda: "could not publish" in processes.log("beat"), timeout=15,
                     message="beat noticing the broker is down")
            wait_for(lambda: schedule_server.client().hlen("redbeat::inflight") >= 2, timeout=15,
                     message="runs kept in flight for a retry")
            waiting = {json.loads(r)["task_id"] for r in schedule_server.client().hvals("redbeat::inflight")}
            broker.start()  # empty: what was queued before the outage is gone with it
            client = broker.client(0)
            wait_for(lambda: schedule_server.client().hlen("redbeat::inflight") == 0, timeout=40,
                     message="the runs in flight published after the outage")
            wait_for(lambda: waiting <= {m["id"] for m in published(client)}, timeout=10,
                     message="the retried runs in the queue with their task ids")
            assert beat.poll() is None
            assert_each_slot_once(client)
    finally:
        broker.stop()


def test_runs_waiting_out_a_broker_outage_are_missed_past_their_deadline_never_published_late(
        tmp_path, schedule_server, project_env):
    deadline, every = 1.0, 0.2
    schedule = schedule_server.client()
    schedule.hset("redbeat:fast", "definition", json.dumps({
        "name": "fast", "task": "e2e_app.record", "args": ["fast"], "starting_deadline": deadline,
        "schedule": {"__type__": "interval", "every": every}}))
    schedule.zadd("redbeat::schedule", {"redbeat:fast": 0})

    def history(outcome=None):
        records = [json.loads(r) for r in schedule.lrange("redbeat::history:fast", 0, -1)]
        return [r for r in records if outcome is None or r["outcome"] == outcome]

    broker = RedisServer(tmp_path / "broker-data")
    env = broker_env(project_env, schedule_server, broker, E2E_HISTORY_SIZE="2000")
    try:
        with Processes(tmp_path, env) as processes:
            beat = start_beat(processes, "beat")
            wait_for(lambda: len(history("published")) >= 5, timeout=30, message="runs before the outage")
            broker.stop()
            # An outage of a few seconds: fifteen failed publishes, one every 0.2 s.
            wait_for(lambda: processes.log("beat").count("could not publish") >= 15, timeout=30,
                     message="publishes failing during the outage")
            broker.start()
            restarted = time.time()
            wait_for(lambda: sum(r["scheduled"] > restarted for r in history("published")) >= 10, timeout=30,
                     message="runs on time after the outage")
            assert beat.poll() is None
        sent_after = {m["headers"]["redbeat_scheduled"] for m in published(broker.client(0))
                      if m["headers"]["redbeat_key"] == "redbeat:fast"}
    finally:
        broker.stop()

    records = history()
    late = [r for r in records if r["outcome"] == "published" and r["lateness"] > deadline + 0.25]
    assert not late, f"published past the {deadline}s deadline: {late}"
    missed = history("missed")
    assert len(missed) >= 5, "the runs of the outage were missed"
    assert all(r["reason"] == "its starting deadline passed while it waited in flight" for r in missed), missed
    # Nothing lost: each slot is in the history once (published, missed or given up), or was passed
    # over when claiming (catch-up: counted in status.missed, with the runs missed in flight).
    slots = sorted(r["scheduled"] for r in records)
    assert len(slots) == len(set(slots)), sorted((r["scheduled"], r["outcome"], r["dispatched"]) for r in records)
    expected = round((slots[-1] - slots[0]) / every) + 1
    passed_over = json.loads(schedule.hget("redbeat:fast", "status"))["missed"] - len(missed)
    assert len(slots) + passed_over == expected, (len(slots), passed_over, expected)
    # What reached the broker after the outage is what the history says was published.
    assert sent_after <= {r["scheduled"] for r in history("published")}
    print(f"broker outage, every {every}s, deadline {deadline}s: {len(missed)} runs missed in flight, "
          f"{passed_over} passed over, latest publish {max(r['lateness'] for r in history('published')):.3f}s")
