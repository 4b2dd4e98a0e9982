"""Bad input that used to stop every beat (issue 16, items 1 to 5), written raw
with redis-cli into the schedule of real ``celery beat`` processes while they run.

Each test runs a canary entry beside the bad input: every second, catch-up
"all", its own key. Its cadence must not change: every slot published once,
consecutive slots one second apart (no run lost), and each run in the broker
soon after its slot, except while the test itself makes ticks impossible (the
schedule key of the wrong type). The broker is the session's redis-server
(db 1); no worker runs, the messages stay in the queue to be counted.

Two tests need no beat: the reason a bad rrule is parked with, and what
``redbeat status`` makes of a heartbeat that says ticks fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from click.testing import CliRunner
from conftest import Processes, RedisServer, assert_each_slot_once, messages, published, start_beat, wait_for

from redbeat.cli import redbeat
from redbeat.entry import RedBeatSchedulerEntry

LOCK_TIMEOUT = 4.0
MAX_AGE = 5.0  # redbeat status --max-age: a tick that cannot complete must show within this
# How late a canary run may reach the broker (a lock fail-over included: the
# standby checks the lock every second).
MAX_LATENESS = 2.5
SCHEDULE = "redbeat::schedule"
INFLIGHT = "redbeat::inflight"
STATICS = "redbeat::statics"
LOCK = "redbeat::lock"


@pytest.fixture
def lock_timeout() -> float:
    return LOCK_TIMEOUT


def redis_cli(server: RedisServer, *command: str, stdin: bytes | None = None) -> str:
    """One command written raw, as an operator or another program would; ``stdin`` as its last argument."""
    args = ["redis-cli", "-p", str(server.port), *(["-x"] if stdin is not None else []), *command]
    output = subprocess.run(args, input=stdin, capture_output=True, timeout=10, check=True).stdout.decode()
    assert not output.startswith(("ERR", "WRONGTYPE", "NOPERM")), output
    return output


def definition(name: str, schedule: dict | float, *args: str, **fields: object) -> str:
    return json.dumps({"name": name, "task": "e2e_app.record", "schedule": schedule,
                       "args": list(args) or [name], **fields})


def add_entry(server: RedisServer, key: str, definition_json: str) -> None:
    redis_cli(server, "HSET", key, "definition", definition_json)
    redis_cli(server, "ZADD", SCHEDULE, "0", key)


def status(server: RedisServer) -> tuple[int, str]:
    """``redbeat status --max-age 5``: its exit code and output."""
    result = CliRunner().invoke(redbeat, ["--redis-url", server.url(), "status", "--max-age", str(MAX_AGE)])
    return result.exit_code, result.output


def status_report(server: RedisServer) -> dict:
    """``redbeat status --json``."""
    result = CliRunner().invoke(redbeat, ["--redis-url", server.url(), "status", "--max-age", str(MAX_AGE), "--json"])
    return json.loads(result.output)


def last_tick_older_than(server: RedisServer, age: float) -> dict | None:
    report = status_report(server)
    return report if report["last_tick_age"] > age else None


def unhealthy(server: RedisServer) -> tuple[int, str] | None:
    """What ``status`` says, if it exits non-zero."""
    code, output = status(server)
    return (code, output) if code else None


def show(server: RedisServer, name: str) -> tuple[float, subprocess.CompletedProcess]:
    """``redbeat show NAME`` as a process of its own (it hung on a costly rrule): how long it took, and what it did."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", server.url(), "show", name],
                            capture_output=True, text=True, timeout=30)
    return time.monotonic() - started, result


def logs(beats: Processes) -> str:
    return "".join(beats.log(name) for name in beats.started)


def error_lines(beats: Processes) -> list[str]:
    return [line for line in logs(beats).splitlines() if "ERROR/" in line or "WARNING/" in line]


def start_two_beats(beats: Processes) -> None:
    start_beat(beats, "beat-a")
    wait_for(lambda: "Acquired lock" in beats.log("beat-a"), timeout=30, message="beat A active")
    start_beat(beats, "beat-b")
    wait_for(lambda: "standing by" in beats.log("beat-b"), timeout=30, message="beat B standing by")


class Canary:
    """An entry every second that no bad input may disturb; notes when each of its runs reaches the broker."""

    KEY = "redbeat:canary"

    def __init__(self, server: RedisServer, broker: redis.Redis) -> None:
        self.server = server
        self.broker = broker
        self.arrived: dict[float, float] = {}  # scheduled time: when the test first saw the message
        self.outages: list[tuple[float, float]] = []  # when the test made ticks impossible
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def add(self) -> None:
        add_entry(self.server, self.KEY, definition("canary", {"__type__": "interval", "every": 1}, catch_up="all"))

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            seen_at = time.time()
            for message in published(self.broker):
                headers = message["headers"]
                if headers["redbeat_key"] == self.KEY:
                    self.arrived.setdefault(headers["redbeat_scheduled"], seen_at)

    @contextmanager
    def watching(self) -> Iterator[Canary]:
        self.add()
        self._watcher.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._watcher.join(timeout=5)

    def wait_runs(self, count: int = 2, timeout: float = 6.0, message: str = "canary runs") -> None:
        """Wait until ``count`` more runs, each due after now, reached the broker."""
        now = time.time()
        wait_for(lambda: sum(1 for slot in list(self.arrived) if slot >= now) >= count, timeout=timeout,
                 message=message)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """A stretch in which the test itself stops ticks: runs due meanwhile may be late (not lost)."""
        started = time.time()
        try:
            yield
        finally:
            self.outages.append((started, time.time()))

    def assert_cadence_kept(self) -> None:
        scheduled = assert_each_slot_once(self.broker, self.KEY)
        assert len(scheduled) >= 5, scheduled
        gaps = [round(b - a, 6) for a, b in zip(scheduled, scheduled[1:])]
        assert set(gaps) == {1.0}, f"canary slots lost or moved: gaps {gaps}"
        lateness = {slot: round(self.arrived[slot] - slot, 2) for slot in scheduled
                    if slot in self.arrived and not any(start - 1 <= slot <= end for start, end in self.outages)}
        late = {slot: seconds for slot, seconds in lateness.items() if seconds > MAX_LATENESS}
        assert not late, f"canary runs late by more than {MAX_LATENESS}s (slot: lateness): {late}"
        print(f"canary: {len(scheduled)} slots once each, none lost; outside outages at most "
              f"{max(lateness.values()):.2f}s late")


@pytest.fixture
def canary(schedule_server: RedisServer, broker_redis: redis.Redis) -> Iterator[Canary]:
    with Canary(schedule_server, broker_redis).watching() as watched:
        yield watched


# -- item 1: rrules slow to evaluate ---------------------------------------------------------

COSTLY_RRULES = {
    # Legitimate: a count far beyond what anyone will reach; runs every second.
    "count-huge": {"__type__": "rrule", "freq": "SECONDLY", "count": 1000000000000, "dtstart": 0},
    # Legitimate: a million seconds from 2023-01-01, long over: finished, not parked.
    "count-ended": {"__type__": "rrule", "freq": "SECONDLY", "count": 1000000, "dtstart": 1672531200},
    # Never match: parked, with a reason.
    "february-30-daily": {"__type__": "rrule", "freq": "DAILY", "bymonth": 2, "bymonthday": 30},
    "february-30-yearly": {"__type__": "rrule", "freq": "YEARLY", "bymonth": 2, "bymonthday": 30},
    "weekday-9": {"__type__": "rrule", "freq": "DAILY", "byweekday": [{"__type__": "weekday", "wkday": 9}]},
}
NEVER_MATCH = ["february-30-daily", "february-30-yearly", "weekday-9"]


@pytest.mark.e2e
def test_costly_rrules_cost_only_themselves_on_two_beats(beats, schedule_server, broker_redis, canary):
    start_two_beats(beats)
    canary.wait_runs(message="canary runs before the bad input")
    for name, schedule in COSTLY_RRULES.items():
        add_entry(schedule_server, f"redbeat:{name}", definition(name, schedule))
    written = time.monotonic()

    client = schedule_server.client()
    wait_for(lambda: all(client.hexists(f"redbeat:{name}", "parked") for name in NEVER_MATCH), timeout=15,
             message="the rules that never match parked")
    print(f"costly rrules: parked {time.monotonic() - written:.2f}s after they were written")
    wait_for(lambda: client.zscore(SCHEDULE, "redbeat:count-ended") == -1, timeout=10,
             message="the ended rule finished")
    canary.wait_runs(3, message="canary runs after the bad input")
    wait_for(lambda: len(assert_each_slot_once(broker_redis, "redbeat:count-huge")) >= 4, timeout=6,
             message="the rule with a huge count running every second")

    for name in NEVER_MATCH:
        assert client.zscore(SCHEDULE, f"redbeat:{name}") == -1
        assert json.loads(client.hget(f"redbeat:{name}", "parked"))["reason"]
        assert any(f"parked entry redbeat:{name}," in line for line in error_lines(beats)), name
    assert not client.hexists("redbeat:count-ended", "parked")
    assert not any("count-" in line for line in error_lines(beats)), error_lines(beats)
    # Its first run is at its score, 0 (due now: FORMAT.md), then every occurrence, on whole seconds.
    huge = assert_each_slot_once(broker_redis, "redbeat:count-huge")[1:]
    assert {round(b - a, 6) for a, b in zip(huge, huge[1:])} == {1.0} and huge[0] % 1 == 0, huge

    code, output = status(schedule_server)
    assert code == 0 and output.rstrip().endswith("healthy"), output
    for name in COSTLY_RRULES:
        took, shown = show(schedule_server, name)
        assert took < 5 and shown.returncode == 0 and "Traceback" not in shown.stderr, (name, took, shown)
        print(f"redbeat show {name}: {took:.2f}s")
    canary.wait_runs(message="canary runs at the end")
    canary.assert_cadence_kept()
    assert all(process.poll() is None for process in beats.started.values())


def test_a_weekday_out_of_range_is_refused_naming_the_field(app):
    with pytest.raises(ValueError, match=r"wkday' must be 0 \(MO\) to 6 \(SU\), not 9"):
        RedBeatSchedulerEntry.from_stored(definition("weekday-9", COSTLY_RRULES["weekday-9"]), None, app=app,
                                          key="redbeat:weekday-9")


# -- item 2: unreadable runs in flight ---------------------------------------------------------

def in_flight_record(task_id: str, key: str, **fields: object) -> str:
    now = time.time()
    return json.dumps({"task_id": task_id, "key": key, "scheduled": now - 5, "claimed_at": now - 5,
                       "token": "a-beat-that-died", "retry_at": now - 1, "attempts": 0, **fields})


@pytest.mark.e2e
def test_unreadable_runs_in_flight_are_set_aside_with_an_error_line(beats, schedule_server, broker_redis, canary):
    start_beat(beats, "beat")
    canary.wait_runs(message="canary runs before the bad input")
    # Another application's hash, named by a record below: never run.
    redis_cli(schedule_server, "HSET", "session:42", "definition", definition("session", 1, "FOREIGN"))
    client = schedule_server.client()
    records = {
        "attempts-infinite": in_flight_record("attempts-infinite", Canary.KEY).replace(
            '"attempts": 0', '"attempts": 1e999').encode(),
        "nested-deeply": b'{"task_id": "nested-deeply", "key": ' + b"[" * 10000 + b"]" * 10000 + b"}",
        "outside-prefix": in_flight_record("outside-prefix", "session:42").encode(),
        "garbage": b"\x00not json at all\xff",
    }
    for task_id, record in records.items():
        redis_cli(schedule_server, "HSET", INFLIGHT, task_id, stdin=record)

    wait_for(lambda: not client.hexists(INFLIGHT, "garbage") and client.hlen(INFLIGHT) == 0, timeout=10,
             message="the unreadable records set aside")
    canary.wait_runs(3, message="canary runs after the bad input")
    removed = [int(count) for count in re.findall(r"ERROR/.*removing (\d+) unreadable in-flight record", logs(beats))]
    assert sum(removed) == len(records), logs(beats)
    assert not [m for m in messages(broker_redis) if m["headers"]["redbeat_key"] == "session:42"]
    assert "tick failed" not in logs(beats) and beats.started["beat"].poll() is None
    canary.assert_cadence_kept()


# -- item 3: schedule members outside the prefix --------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("user", ["default", "limited to redbeat:*"])
def test_members_outside_the_prefix_are_dropped_never_read_written_or_run(
        user, beats, schedule_server, broker_redis, canary):
    if user != "default":
        schedule_server.client().execute_command("ACL", "SETUSER", "limited", "on", ">secret", "~redbeat:*", "+@all")
        beats.env["E2E_REDBEAT_URL"] = f"redis://limited:secret@127.0.0.1:{schedule_server.port}/0"
    start_beat(beats, "beat")
    canary.wait_runs(message="canary runs before the bad input")
    assert user == "default" or "redis://limited:**@" in beats.log("beat")
    client = schedule_server.client(decode=False)
    # Another application's hash, with a definition beat could run: it must not.
    redis_cli(schedule_server, "HSET", "session:42", "user", "alice", "definition",
              definition("session", 1, "FOREIGN"))
    foreign = client.dump("session:42")
    lock = client.get(LOCK)
    members = ["session:42", LOCK, INFLIGHT, "redbeat::heartbeat"]  # RedBeat's own keys are no entries either
    for member in members:
        redis_cli(schedule_server, "ZADD", SCHEDULE, "0", member)

    wait_for(lambda: not any(client.zscore(SCHEDULE, member) is not None for member in members), timeout=10,
             message="the members outside the prefix dropped")
    canary.wait_runs(3, message="canary runs after the bad input")
    assert client.dump("session:42") == foreign  # byte-identical: no parked field, nothing written
    assert client.get(LOCK) == lock and client.type(INFLIGHT) in (b"hash", b"none")
    assert not [m for m in messages(broker_redis) if m["argsrepr"] == "['FOREIGN']"]
    warnings = [line for line in error_lines(beats) if "not an entry key under the prefix" in line]
    assert {member for member in members if any(f"removing {member} " in line for line in warnings)} == set(members)
    assert "NOPERM" not in logs(beats) and "tick failed" not in logs(beats)
    assert schedule_server.client().acl_log() == []
    canary.assert_cadence_kept()


# -- items 4 and 5: RedBeat's own keys of the wrong type ----------------------------------------

WRITE = {"string": ["SET", "{key}", "not a redbeat value"], "hash": ["HSET", "{key}", "field", "value"],
         "list": ["RPUSH", "{key}", "item"]}


def make_wrong(server: RedisServer, key: str, kind: str) -> None:
    redis_cli(server, "DEL", key)
    redis_cli(server, *(word.format(key=key) for word in WRITE[kind]))


@pytest.mark.e2e
def test_own_keys_of_the_wrong_type_are_named_and_beat_dispatches_what_it_can(
        beats, schedule_server, broker_redis, canary):
    start_two_beats(beats)
    canary.wait_runs(message="canary runs before the bad input")
    client = schedule_server.client()

    # The in-flight hash (a list stands for the hash case: a hash is its type): moved aside, runs go on.
    for kind in ("string", "list"):
        make_wrong(schedule_server, INFLIGHT, kind)
        wait_for(lambda kind=kind: f"{INFLIGHT} was a {kind}, not the hash of runs in flight" in logs(beats),
                 timeout=5, message=f"the {kind} in-flight key named")
        assert client.type(INFLIGHT) in ("hash", "none")
        assert [key for key in client.scan_iter(f"{INFLIGHT}:wrongtype:*") if client.type(key) == kind]
        canary.wait_runs(message=f"canary runs after the in-flight key was a {kind}")

    # The set of static names is read when a beat takes the lock; a lock of the
    # wrong type makes the holder lose it and the next holder replace it.
    for statics_kind, lock_kind in (("string", "hash"), ("hash", "list")):
        make_wrong(schedule_server, STATICS, statics_kind)
        assert status(schedule_server)[0] == 0  # beat does not need it to dispatch
        make_wrong(schedule_server, LOCK, lock_kind)
        wait_for(lambda lock_kind=lock_kind: f"lock key {LOCK} held a {lock_kind}, not a lock" in logs(beats),
                 timeout=8, message=f"the {lock_kind} lock replaced")
        wait_for(lambda kind=statics_kind: f"{STATICS} was a {kind}, not the set of static entry names" in logs(beats),
                 timeout=5, message=f"the {statics_kind} statics key named")
        assert client.type(LOCK) == "string" and client.type(STATICS) == "set"
        assert "static-every-second" in client.smembers(STATICS)
        canary.wait_runs(message=f"canary runs after a {lock_kind} lock")
        wait_for(lambda: status(schedule_server)[0] == 0, timeout=5, message="status healthy again")

    # The schedule itself: nothing can be dispatched, which status must say, until it is fixed.
    for kind in ("string", "hash"):
        with canary.outage():
            made_wrong = time.monotonic()
            make_wrong(schedule_server, SCHEDULE, kind)
            code, output = wait_for(lambda: unhealthy(schedule_server), timeout=MAX_AGE, message="status unhealthy")
            print(f"{kind} schedule: status unhealthy after {time.monotonic() - made_wrong:.2f}s")
            assert "UNHEALTHY" in output and SCHEDULE in output, output
            wait_for(lambda: "ticks failing for" in status(schedule_server)[1], timeout=5,
                     message="status saying the ticks fail")
            assert f"WrongTypeError: {SCHEDULE} is a {kind}" in status(schedule_server)[1]
            report = status_report(schedule_server)
            assert report["healthy"] is False and report["failing_since"] and SCHEDULE in report["error"]
            if kind == "string":
                # Health means ticks complete: the last completed tick ages while they fail.
                report = wait_for(lambda: last_tick_older_than(schedule_server, MAX_AGE), timeout=MAX_AGE + 3,
                                  message="the last completed tick ageing")
                assert report["failing_for"] > MAX_AGE - 1, report
                assert report["beat"]["last_tick"] <= report["beat"]["failing_since"], report
            assert f"cannot tick: WrongTypeError: {SCHEDULE} is a {kind}" in logs(beats)
            redis_cli(schedule_server, "DEL", SCHEDULE)
            redis_cli(schedule_server, "ZADD", SCHEDULE, "0", Canary.KEY)
            fixed = time.monotonic()
            wait_for(lambda: status(schedule_server)[0] == 0, timeout=5, message="status healthy once fixed")
            print(f"{kind} schedule: status healthy {time.monotonic() - fixed:.2f}s after the fix")
        canary.wait_runs(message=f"canary runs after the {kind} schedule was fixed")
        assert client.zscore(SCHEDULE, "redbeat:static-every-second") is not None  # beat wrote it back

    canary.assert_cadence_kept()
    assert all(process.poll() is None for process in beats.started.values())


@pytest.mark.e2e
def test_a_lock_that_never_expires_is_replaced(beats, schedule_server, broker_redis, canary):
    start_two_beats(beats)
    canary.wait_runs(message="canary runs before the bad input")
    redis_cli(schedule_server, "SET", LOCK, "not a beat")  # no expiry: no beat ever writes a lock like this
    canary.wait_runs(timeout=LOCK_TIMEOUT + 3, message="canary runs with a lock that never expires")
    canary.assert_cadence_kept()


def write_heartbeat(client: redis.Redis, **fields: object) -> None:
    now = time.time()
    client.set("redbeat::heartbeat", json.dumps({"token": "vm:1:t", "host": "vm", "pid": 1, "version": "3",
                                                  "last_tick": now, "active_since": now - 60, **fields}))


def test_status_counts_a_beat_whose_ticks_fail_as_unhealthy_however_young_its_last_tick(redis_server, schedule_redis):
    server_url = redis_server.url()
    failing_since = time.time() - 12
    write_heartbeat(schedule_redis, failing_since=failing_since, error="ResponseError: NOPERM\nforged line")
    result = CliRunner().invoke(redbeat, ["--redis-url", server_url, "status", "--max-age", "60"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "UNHEALTHY: ticks failing for 12s: ResponseError: NOPERM\\nforged line"
    assert "failing: since " in result.output
    report = json.loads(CliRunner().invoke(redbeat, ["--redis-url", server_url, "status", "--json"]).output)
    assert report["healthy"] is False and report["error"] == "ResponseError: NOPERM\nforged line"
    assert report["failing_for"] == pytest.approx(12, abs=2) and report["failing_since"].startswith("20")

    write_heartbeat(schedule_redis, failing_since=failing_since, error=["not text"])
    result = CliRunner().invoke(redbeat, ["--redis-url", server_url, "status"])
    assert result.exit_code == 1 and "ticks failing for 12s: (no reason given)" in result.output

    write_heartbeat(schedule_redis)  # the next tick completed: no failing_since
    result = CliRunner().invoke(redbeat, ["--redis-url", server_url, "status", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["healthy"] is True
    assert (report["failing_since"], report["failing_for"], report["error"]) == (None, None, None)
