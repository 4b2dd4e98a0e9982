"""Every slot starts exactly once under load while beats and workers are killed.

Real processes on loopback (tests/fault_app.py): 20 entries every second,
two beats (one active, one standing by), two solo workers with RedBeat's
worker component on. Several times over, the active beat is killed with
SIGKILL (at times mid-publish: it publishes in batches of 5), and then a
worker is killed while a task runs. The task counts its starts by task id
(RedBeat's id per slot) on the worker side; at the end every slot published
must have started exactly once, and every entry's slots must follow each
other one second apart, none lost. A run whose worker was killed mid-task
counts as started: it is not started again, whether its message was acked
early (Celery's default, it is gone) or late (redelivered and refused).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter, defaultdict

import pytest
import redis
from conftest import Processes, RedisServer, wait_for

pytestmark = pytest.mark.e2e

ENTRIES = 20
ROUNDS = 3
LOCK_TIMEOUT = 2.0


def write_entries(schedule: redis.Redis) -> None:
    for number in range(ENTRIES):
        name = f"load-{number:02d}"
        schedule.hset(f"redbeat:{name}", "definition", json.dumps({
            "name": name, "task": "fault_app.count_start", "args": [0.2],
            "schedule": {"__type__": "interval", "every": 1}}))
        schedule.zadd("redbeat::schedule", {f"redbeat:{name}": 0})


class Fleet:
    """The beats and workers of one run, restarted under new names after each kill."""

    def __init__(self, processes: Processes, schedule: redis.Redis, record: redis.Redis) -> None:
        self.processes, self.schedule, self.record = processes, schedule, record
        self.started = 0
        self.beats: list[str] = []
        self.workers: list[str] = []

    def _name(self, kind: str) -> str:
        self.started += 1
        return f"{kind}-{self.started}"

    def start_beat(self) -> None:
        name = self._name("beat")
        self.processes.start(name, "beat", "-S", "redbeat", "-l", "info")
        self.beats.append(name)

    def start_worker(self) -> None:
        name = self._name("worker")
        self.processes.start(name, "worker", "-P", "solo", "-l", "info", "-n", f"{name}@%h", "--without-gossip",
                             "--without-mingle", "--without-heartbeat")
        self.workers.append(name)

    def active_beat(self) -> str | None:
        token = self.schedule.get("redbeat::lock")
        for name in self.beats:
            process = self.processes.started[name]
            if token and process.poll() is None and f":{process.pid}:" in token:
                return name
        return None

    def starts(self) -> int:
        return sum(int(count) for count in self.record.hvals("fault:starts"))

    def wait_for_more_starts(self, more: int) -> None:
        target = self.starts() + more
        wait_for(lambda: self.starts() >= target, timeout=60, message=f"{more} more starts")

    def kill_active_beat(self) -> str:
        name = wait_for(self.active_beat, timeout=30, message="an active beat")
        self.processes.stop(name, signal.SIGKILL)
        self.beats.remove(name)
        self.start_beat()  # the killed one comes back, as a standby
        wait_for(lambda: self.active_beat() not in (None, name), timeout=LOCK_TIMEOUT + 15,
                 message="a standby taking over")
        return name

    def kill_worker_mid_task(self) -> str:
        """Kill a worker while it runs a task; the id of the run it was in."""
        pids = {self.processes.started[name].pid: name for name in self.workers}

        def running() -> tuple[str, str] | None:
            for pid, task_id in self.record.hgetall("fault:running").items():
                if int(pid) in pids:
                    return pids[int(pid)], task_id
            return None
        name, task_id = wait_for(running, timeout=30, interval=0.005, message="a worker mid-task")
        self.processes.stop(name, signal.SIGKILL)
        self.workers.remove(name)
        self.record.hdel("fault:running", self.processes.started[name].pid)
        self.start_worker()
        return task_id


def drained(broker: redis.Redis, record: redis.Redis) -> bool:
    return (broker.llen("celery") == 0 and broker.hlen("unacked") == 0 and record.hlen("fault:running") == 0)


@pytest.mark.parametrize("acks", ["early", "late"])
def test_every_slot_starts_once_through_kill_9_of_beats_and_workers_under_load(tmp_path, project_env, acks):
    server = RedisServer(tmp_path)
    schedule, broker, record = (server.client(db) for db in (0, 1, 2))
    env = dict(project_env, E2E_REDBEAT_URL=server.url(0), E2E_BROKER_URL=server.url(1),
               E2E_RECORD_URL=server.url(2), E2E_LOCK_TIMEOUT=str(LOCK_TIMEOUT), PYTHONUNBUFFERED="1",
               E2E_ACKS_LATE="1" if acks == "late" else "0")
    write_entries(schedule)
    try:
        with Processes(tmp_path, env, app_module="fault_app") as processes:
            fleet = Fleet(processes, schedule, record)
            killed_runs, stopped_at = run_under_faults(fleet)
            # Reserved messages of killed workers come back after the visibility timeout (6 s).
            wait_for(lambda: drained(broker, record), timeout=60, interval=0.2, message="every message consumed")
            for name in list(fleet.workers):
                processes.stop(name)
        starts = Counter({task_id: int(count) for task_id, count in record.hgetall("fault:starts").items()})
        slots = record.hgetall("fault:slots")
        refused = int(schedule.hget("redbeat::run-outcomes", "outcome:duplicate") or 0)
    finally:
        server.stop()

    assert not [task_id for task_id, count in starts.items() if count != 1], "slots started more than once"
    assert all(starts[task_id] == 1 for task_id in killed_runs), "a run killed mid-task counts as started"
    by_entry: dict[str, list[float]] = defaultdict(list)
    for task_id in starts:
        key, scheduled = slots[task_id].split()
        by_entry[key].append(float(scheduled))
    assert len(by_entry) == ENTRIES
    for key, times in by_entry.items():
        times.sort()
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert all(0.5 < gap < 1.5 for gap in gaps), f"{key}: slots lost between {gaps}"
        assert times[-1] >= stopped_at - LOCK_TIMEOUT - 3, f"{key}: the last slots lost"
    if acks == "late":  # the killed runs' messages came back and were refused, not run again
        assert refused >= len(killed_runs)
    print(f"acks {acks}: {len(starts)} slots of {ENTRIES} entries, each started once; {ROUNDS} beats and "
          f"{ROUNDS} workers killed with SIGKILL; {refused} second deliveries refused")


def run_under_faults(fleet: Fleet) -> tuple[list[str], float]:
    """Start two beats and two workers, kill the active beat and a worker mid-task ROUNDS
    times, then stop the beats; the ids of the runs killed mid-task, and when beats stopped."""
    fleet.start_beat()
    wait_for(fleet.active_beat, timeout=30, message="the first beat active")
    fleet.start_beat()
    fleet.start_worker()
    fleet.start_worker()
    killed_runs = []
    for _ in range(ROUNDS):
        fleet.wait_for_more_starts(3 * ENTRIES)
        fleet.kill_active_beat()
        killed_runs.append(fleet.kill_worker_mid_task())
    fleet.wait_for_more_starts(2 * ENTRIES)
    stopped_at = time.time()
    for name in list(fleet.beats):
        fleet.processes.stop(name)
    return killed_runs, stopped_at
