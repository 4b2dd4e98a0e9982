"""The schedule-wide view: entries by state counted from Redis (``census``), its gauges
(``schedulemetrics.ScheduleCollector``), and the ``redbeat metrics`` command serving them."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import free_port, wait_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError

from redbeat.census import Census, census, snapshot
from redbeat.config import ensure_conf
from redbeat.metricsserver import start_beat_metrics
from redbeat.schedulemetrics import ScheduleCollector

SCHEDULE = "redbeat::schedule"


def definition(name: str, **fields: object) -> str:
    return json.dumps({"name": name, "task": "tasks.raw", "schedule": {"__type__": "interval", "every": 60},
                       **fields})


def write(client, name: str, score: float, **fields: str) -> None:
    """An entry as another program writes it: HSET, then ZADD."""
    client.hset(f"redbeat:{name}", mapping=fields)
    client.zadd(SCHEDULE, {f"redbeat:{name}": score})


def write_each_state(client) -> None:
    future = time.time() + 3600
    write(client, "active", future, definition=definition("active"))
    write(client, "due-now", 0, definition=definition("due-now"))
    # "enabled": false deeper down is an argument, not the entry's switch.
    write(client, "active-with-kwargs", future, definition=definition("active-with-kwargs",
                                                                      kwargs={"enabled": False}))
    write(client, "malformed", future, definition="{not json")
    write(client, "paused", future, definition=definition("paused", enabled=False))
    write(client, "parked", -1, definition="{not json", parked=json.dumps({"reason": "bad JSON"}))
    write(client, "parked-scored", future, definition=definition("parked-scored"), parked='{"reason": "x"}')
    write(client, "finished", -1, definition=definition("finished", enabled=False),
          status=json.dumps({"given_up": 2, "last_failure": {"at": 1.0, "class": "permanent",
                                                              "reason": 'said "given_up": 40'}}))
    write(client, "gave-up", future, definition=definition("gave-up"), status='{"given_up": 3}')
    client.zadd(SCHEDULE, {"redbeat:orphan": future, "someone-else:key": future})
    client.set("redbeat:a-string", "x")
    client.zadd(SCHEDULE, {"redbeat:a-string": future})


def test_census_counts_entries_by_state_from_raw_writes(app, schedule_redis):
    write_each_state(schedule_redis)
    assert census(app) == Census(active=5, paused=1, parked=2, finished=1, orphans=3, given_up=5)


def test_census_reads_the_schedule_in_chunks_and_counts_each_entry_once(app, schedule_redis):
    for number in range(250):
        write(schedule_redis, f"e{number}", number, definition=definition(f"e{number}"),
              **({"parked": "{}"} if number % 10 == 0 else {}))
    counted = census(app, chunk=20)
    assert (counted.active, counted.parked) == (225, 25)


def test_census_of_an_empty_schedule_is_all_zero(app):
    assert census(app) == Census()


def families(registry: CollectorRegistry) -> dict[str, list]:
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(found: dict[str, list], name: str, **labels: str) -> float | None:
    # The parser names a counter's family without its _total.
    for sample in found.get(name, found.get(name.removesuffix("_total"), [])):
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None


def collector_registry(app, **options) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ScheduleCollector(app, **options))
    return registry


def test_collector_serves_the_schedule_wide_gauges(app, schedule_redis):
    write_each_state(schedule_redis)
    schedule_redis.set("redbeat::heartbeat", json.dumps({"last_tick": 1700000000.5}))
    schedule_redis.set("redbeat::lock", "host:123:token")
    found = families(collector_registry(app))
    assert value(found, "redbeat_schedule_up") == 1
    assert {state: value(found, "redbeat_schedule_entries", state=state)
            for state in ("active", "paused", "parked", "finished")} == \
        {"active": 5, "paused": 1, "parked": 2, "finished": 1}
    assert value(found, "redbeat_schedule_runs_given_up") == 5
    assert value(found, "redbeat_schedule_orphans") == 3
    assert value(found, "redbeat_schedule_due") == 1
    assert value(found, "redbeat_schedule_most_overdue_seconds") == 0
    assert value(found, "redbeat_schedule_runs_in_flight") == 0
    assert value(found, "redbeat_schedule_runs_stuck_in_flight") == 0
    assert value(found, "redbeat_schedule_last_tick_timestamp_seconds") == 1700000000.5
    assert value(found, "redbeat_schedule_lock_held") == 1


def test_without_a_heartbeat_the_last_tick_is_absent_and_no_lock_is_held(app):
    found = families(collector_registry(app))
    assert value(found, "redbeat_schedule_last_tick_timestamp_seconds") is None
    assert value(found, "redbeat_schedule_lock_held") == 0
    assert value(found, "redbeat_schedule_entries", state="active") == 0


def test_collector_reads_redis_at_most_once_per_refresh(app):
    reads = []

    def read(target):
        reads.append(time.monotonic())
        return snapshot(target)
    cached = CollectorRegistry()
    cached.register(ScheduleCollector(app, refresh=3600, read=read))
    for _ in range(3):
        generate_latest(cached)
    assert len(reads) == 1
    every = CollectorRegistry()
    every.register(ScheduleCollector(app, refresh=0, read=read))
    for _ in range(2):
        generate_latest(every)
    assert len(reads) == 3


def test_collector_says_redis_is_down_without_failing_the_scrape(app):
    def unreachable(target):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    found = families(collector_registry(app, refresh=0, read=unreachable))
    assert value(found, "redbeat_schedule_up") == 0
    assert "redbeat_schedule_entries" not in found or not found["redbeat_schedule_entries"]
    assert value(found, "redbeat_schedule_due") is None


def histogram(found: dict[str, list], name: str) -> tuple[dict[str, float], float | None, float | None]:
    """A histogram's cumulative buckets by ``le``, its count and its sum (None: not served)."""
    samples = {(sample.name.removeprefix(name), sample.labels.get("le")): sample.value
               for sample in found.get(name, [])}
    buckets = {le: runs for (suffix, le), runs in samples.items() if suffix == "_bucket"}
    return buckets, samples.get(("_count", None)), samples.get(("_sum", None))


def write_outcomes(client) -> None:
    """The workers' schedule-wide counts, written as outcomecounts.py's docstring says."""
    client.hset("redbeat::run-outcomes", mapping={
        "outcome:succeeded": 7, "outcome:failed": 2, "outcome:retried": 1, "outcome:duplicate": 3,
        # One bucket per field, not cumulative; a run above the last bound counts in duration:count only.
        "duration:le:0.01": 4, "duration:le:1": 3, "duration:le:3600": 1, "duration:count": 9, "duration:sum": 4000.5})


def test_collector_serves_outcomes_durations_and_failing_entries_from_the_workers_counts(app, schedule_redis):
    write_outcomes(schedule_redis)
    future = time.time() + 3600
    for name in ("failing", "fine"):
        write(schedule_redis, name, future, definition=definition(name))
    write(schedule_redis, "failing-parked", -1, definition=definition("failing-parked"), parked="{}")
    # A removed entry's member counts for nothing.
    schedule_redis.zadd("redbeat::failing", {"redbeat:failing": 100.0, "redbeat:failing-parked": 90.0,
                                             "redbeat:removed": 50.0})
    found = families(collector_registry(app))
    assert {outcome: value(found, "redbeat_run_outcomes_total", outcome=outcome)
            for outcome in ("succeeded", "failed", "retried", "revoked", "ignored", "rejected", "duplicate")} == \
        {"succeeded": 7, "failed": 2, "retried": 1, "revoked": 0, "ignored": 0, "rejected": 0, "duplicate": 3}
    buckets, count, total = histogram(found, "redbeat_run_duration_seconds")
    assert (buckets["0.01"], buckets["0.5"], buckets["1.0"], buckets["1800.0"], buckets["3600.0"]) == (4, 4, 7, 7, 8)
    assert buckets["+Inf"] == 9 and len(buckets) == 15
    assert (count, total) == (9, 4000.5)
    assert value(found, "redbeat_entries_failing") == 2


def test_without_workers_recording_runs_the_outcome_metrics_are_zero(app, schedule_redis):
    write(schedule_redis, "fine", time.time() + 60, definition=definition("fine"))
    found = families(collector_registry(app))
    assert value(found, "redbeat_run_outcomes_total", outcome="failed") == 0
    assert histogram(found, "redbeat_run_duration_seconds")[1] == 0
    assert value(found, "redbeat_entries_failing") == 0


def test_outcome_keys_of_the_wrong_type_leave_the_rest_of_the_reading_whole(app, schedule_redis):
    write(schedule_redis, "fine", time.time() + 60, definition=definition("fine"))
    schedule_redis.set("redbeat::run-outcomes", "x")
    schedule_redis.set("redbeat::failing", "x")
    found = families(collector_registry(app))
    assert value(found, "redbeat_schedule_up") == 1
    assert value(found, "redbeat_schedule_entries", state="active") == 1
    assert value(found, "redbeat_run_outcomes_total", outcome="failed") is None
    assert histogram(found, "redbeat_run_duration_seconds")[1] is None
    assert value(found, "redbeat_entries_failing") == 0


def test_outcome_metrics_are_absent_when_redis_cannot_be_read(app):
    def unreachable(target):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    found = families(collector_registry(app, refresh=0, read=unreachable))
    assert value(found, "redbeat_run_outcomes_total", outcome="failed") is None
    assert value(found, "redbeat_entries_failing") is None


def test_beats_own_endpoint_includes_the_schedule_wide_gauges(app, schedule_redis):
    write(schedule_redis, "paused", time.time() + 60, definition=definition("paused", enabled=False))
    app.conf.redbeat_metrics_port = free_port()
    metrics = start_beat_metrics(ensure_conf(app), lambda: (True, "ticking"))
    try:
        found = families(metrics.registry)  # type: ignore[attr-defined]
    finally:
        metrics.close()
    assert value(found, "redbeat_schedule_entries", state="paused") == 1
    assert value(found, "redbeat_due_backlog") == 0


# -- the `redbeat metrics` command ------------------------------------------------------------

def scrape(port: int, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scraped(port: int, auth: str | None = None) -> dict[str, list]:
    status, text = scrape(port, auth)
    assert status == 200, text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


class Exporter:
    """``redbeat metrics`` as a real process, stopped by PID."""

    def __init__(self, redis_url: str, *options: str, env: dict | None = None, command: list[str] | None = None,
                 cwd: str | None = None) -> None:
        self.port = free_port()
        command = command or [sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url, "--timeout", "1"]
        self.process = subprocess.Popen(
            [*command, "metrics", "--port", str(self.port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
        self.result: tuple[int, str, str] | None = None

    def serving(self) -> bool:
        assert self.process.poll() is None, self.process.communicate()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> tuple[int, str, str]:
        if self.result is not None:
            return self.result
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate(timeout=10)
        self.result = (self.process.returncode, out, err)
        return self.result


@pytest.fixture
def exporter(schedule_server):
    started = []

    def start(*options: str, **settings: object) -> Exporter:
        running = Exporter(schedule_server.url(0), *options, **settings)  # type: ignore[arg-type]
        started.append(running)
        wait_for(running.serving, timeout=30, message="redbeat metrics listening")
        return running
    yield start
    for running in started:
        running.stop()


def test_metrics_command_serves_the_gauges_and_follows_writes(exporter, schedule_server):
    client = schedule_server.client(0)
    write(client, "first", time.time() + 60, definition=definition("first"))
    running = exporter("--refresh", "0.2")
    assert value(scraped(running.port), "redbeat_schedule_entries", state="active") == 1
    write(client, "second", -1, definition=definition("second"))
    wait_for(lambda: value(scraped(running.port), "redbeat_schedule_entries", state="finished") == 1,
             timeout=10, message="the write to show after a refresh")
    assert "process_cpu_seconds" in scraped(running.port)  # the process's own metrics too
    code, out, err = running.stop()
    assert code == 0, err
    assert f"http://127.0.0.1:{running.port}/metrics" in out and "Traceback" not in err


def test_metrics_command_says_redis_is_down_and_still_answers(exporter, schedule_server):
    running = exporter("--refresh", "0")
    assert value(scraped(running.port), "redbeat_schedule_up") == 1
    schedule_server.stop()
    try:
        wait_for(lambda: value(scraped(running.port), "redbeat_schedule_up") == 0, timeout=15,
                 message="redbeat_schedule_up 0")
    finally:
        schedule_server.start()
    wait_for(lambda: value(scraped(running.port), "redbeat_schedule_up") == 1, timeout=15,
             message="redbeat_schedule_up 1 again")
    code, _, err = running.stop()
    assert code == 0 and "Traceback" not in err


def test_metrics_command_requires_the_credentials_set(exporter):
    running = exporter(env={"REDBEAT_METRICS_AUTH": "prom:s3cret"})
    assert scrape(running.port)[0] == 401
    assert scrape(running.port, "prom:wrong")[0] == 401
    assert value(scraped(running.port, "prom:s3cret"), "redbeat_schedule_up") == 1
    code, out, err = running.stop()
    assert code == 0 and "s3cret" not in out + err and "basic authentication" in out


def test_metrics_command_refuses_other_addresses_without_credentials(schedule_server):
    env = {k: v for k, v in os.environ.items() if k != "REDBEAT_METRICS_AUTH"}
    done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", schedule_server.url(0), "metrics",
                           "--host", "0.0.0.0", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 5
    assert done.stderr.count("\n") == 1 and "without authentication" in done.stderr


def test_metrics_command_says_the_port_is_taken_in_one_line(schedule_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", schedule_server.url(0), "metrics",
                               "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1 port {port}" in done.stderr


def test_metrics_command_ends_on_sigint_too(exporter):
    running = exporter()
    running.process.send_signal(signal.SIGINT)
    code, _, err = running.stop()
    assert code == 0 and "Traceback" not in err



def test_metrics_command_names_the_extra_when_prometheus_client_is_missing(tmp_path, schedule_server):
    blocker = tmp_path / "prometheus_client"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", schedule_server.url(0), "metrics",
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 5
    assert done.stderr.count("\n") == 1 and "pip install 'celery-redbeat[metrics]'" in done.stderr


def test_metrics_command_runs_inside_a_celery_project(exporter, schedule_server, redis_server, project_env, tmp_path):
    write(schedule_server.client(0), "project-entry", time.time() + 60, definition=definition("project-entry"))
    env = dict(project_env, E2E_REDBEAT_URL=schedule_server.url(0), E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2))
    running = exporter(env=env, cwd=str(tmp_path),
                       command=[sys.executable, "-m", "celery", "-A", "e2e_app", "redbeat"])
    assert value(scraped(running.port), "redbeat_schedule_entries", state="active") == 1
    code, _, err = running.stop()
    assert code == 0 and "Traceback" not in err
