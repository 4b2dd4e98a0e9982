"""The command line against bad data and a moving schedule, on a real redis-server:
every command finishes, each bad entry shows on its own row, RedBeat's own keys
of the wrong type and Redis failures are said in one line, and reads are exact
while the schedule changes under them."""

from __future__ import annotations

import json
import random
import re
import threading
import time

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redbeat.cli import redbeat

GOOD = {"task": "tasks.good", "schedule": {"__type__": "interval", "every": 30}}
SCHEDULE = "redbeat::schedule"


def invoke(url: str, *args: str, color: bool = False) -> Result:
    return CliRunner().invoke(redbeat, ["--redis-url", url, *args], color=color)


def finished(result: Result, codes: tuple[int, ...] = (0, 1)) -> str:
    """The output of a command that ended as a command should: no traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{result.output}") from result.exception
    assert result.exit_code in codes, result.output
    assert "Traceback" not in result.output
    return result.output


def add_entry(client, name: bytes | str, score: float = 0, **fields) -> None:
    key = (b"redbeat:" + name) if isinstance(name, bytes) else f"redbeat:{name}"
    fields.setdefault("definition", json.dumps({**GOOD, "name": "x"}))
    client.hset(key, mapping=fields)
    client.zadd(SCHEDULE, {key: score})


@pytest.fixture
def raw(redis_server, redis_url):
    """A client that writes and reads bytes, as redis-cli would."""
    return redis_server.client(0, decode=False)


# -- exact reads while scores move -----------------------------------------------------

class ScoreChurn:
    """A thread that rewrites the score of every entry, again and again, as a busy
    beat does, and the field ``x-score`` with it in one transaction (beat writes
    meta and score together). A real beat moves a few thousand scores a second
    only when it also publishes a few thousand messages, which takes more than
    this machine's two cores; the thread moves scores far faster than that."""

    def __init__(self, redis_server, keys: list[str]) -> None:
        self.client = redis_server.client(0)
        self.keys = keys
        self.rewrites = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        randomness = random.Random(7)
        while not self.stopping.is_set():
            pipe = self.client.pipeline(transaction=True)
            for key in randomness.sample(self.keys, 200):
                score = time.time() + randomness.uniform(-5, 5)
                pipe.zadd(SCHEDULE, {key: score})
                pipe.hset(key, "x-score", repr(score))
            pipe.execute()
            self.rewrites += 200

    def moved_during(self, command) -> object:
        """The result of ``command`` run while at least 1,000 scores moved (a fast command, or
        a loaded machine that starves the thread, is run again: at most ten times)."""
        for _ in range(10):
            before = self.rewrites
            result = command()
            if self.rewrites - before >= 1000:
                return result
        raise AssertionError("the scores hardly moved during any run: the test proves nothing")

    def __enter__(self) -> ScoreChurn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


ENTRIES = 3000


@pytest.fixture
def busy_schedule(redis_server, schedule_redis):
    names = [f"e{i:05d}" for i in range(ENTRIES)]
    pipe = schedule_redis.pipeline(transaction=False)
    for name in names:
        pipe.hset(f"redbeat:{name}", mapping={"definition": json.dumps({**GOOD, "name": name}), "x-score": "0"})
        pipe.zadd(SCHEDULE, {f"redbeat:{name}": 0})
    pipe.execute()
    with ScoreChurn(redis_server, [f"redbeat:{name}" for name in names]) as churn:
        yield names, churn


def test_export_is_complete_and_exact_while_scores_move(busy_schedule, redis_url, schedule_redis, tmp_path):
    names, churn = busy_schedule
    export = json.loads(finished(churn.moved_during(lambda: invoke(redis_url, "export")), (0,)))
    keys = [item["key"] for item in export["entries"]]
    assert len(keys) == len(set(keys)) == ENTRIES
    assert set(keys) == {f"redbeat:{name}" for name in names}
    # Each entry's score and hash were read at one moment.
    assert all(float(item["fields"]["x-score"]) == item["score"] for item in export["entries"])

    churn.stop()
    schedule_redis.flushdb()
    dump = tmp_path / "export.json"
    dump.write_text(json.dumps(export))
    report = json.loads(finished(invoke(redis_url, "import", str(dump), "--apply", "--json"), (0,)))
    assert len(report["create"]) == report["written"] == ENTRIES and report["duplicates"] == {}
    assert schedule_redis.zcard(SCHEDULE) == ENTRIES


def test_list_and_doctor_are_exact_while_scores_move(busy_schedule, redis_url):
    names, churn = busy_schedule
    listed = json.loads(finished(churn.moved_during(lambda: invoke(redis_url, "list", "--json")), (0,)))
    assert sorted(item["name"] for item in listed) == names
    # No entry is taken for an unscheduled one because it moved.
    findings = json.loads(finished(churn.moved_during(lambda: invoke(redis_url, "doctor", "--json")), (0,)))
    assert [finding for finding in findings if not finding["notice"]] == []


def test_doctor_rechecks_a_hash_before_calling_it_unscheduled(app, schedule_redis):
    from redbeat import admin
    from redbeat.client import get_store

    schedule_redis.hset("redbeat:late", "definition", json.dumps({**GOOD, "name": "late"}))
    store = get_store(app)
    # Scheduled after the members were read, before the hashes are scanned.
    schedule_redis.zadd(SCHEDULE, {"redbeat:late": 0})
    assert list(store.unscheduled_hashes(set())) == []
    schedule_redis.zrem(SCHEDULE, "redbeat:late")
    assert [f.key for f in admin.doctor(app)] == ["redbeat:late"]


def test_import_counts_what_it_writes_and_reports_duplicates(redis_url, schedule_redis, tmp_path):
    definition = json.dumps({**GOOD, "name": "twice"})
    rows = [{"key": "redbeat:twice", "score": 10, "fields": {"definition": definition}},
            {"key": "redbeat:once", "score": 5, "fields": {"definition": definition}},
            {"key": "redbeat:twice", "score": 20, "fields": {"definition": definition}}]
    dump = tmp_path / "export.json"
    dump.write_text(json.dumps({"format": "redbeat-export", "version": 1, "prefix": "redbeat:", "entries": rows}))
    report = json.loads(finished(invoke(redis_url, "import", str(dump), "--apply", "--json"), (0,)))
    assert sorted(report["create"]) == ["once", "twice"] and report["written"] == 2
    assert report["duplicates"] == {"twice": 2}
    assert schedule_redis.zscore(SCHEDULE, "redbeat:twice") == 20  # the last one given
    output = finished(invoke(redis_url, "import", str(dump), "--apply"), (0,))
    assert "duplicate: twice is given 2 times" in output and "written: 0 entries" in output


@pytest.mark.parametrize("row, words", [
    ("not a row", "must be an object"),
    ({"key": "other:x", "fields": {}}, "starts with the prefix"),
    ({"key": "redbeat:x", "score": "soon", "fields": {}}, "'score' must be a number"),
    ({"key": "redbeat:x", "score": 1, "fields": {"definition": 5}}, "must map field names to text"),
])
def test_import_refuses_rows_that_are_not_entries(redis_url, schedule_redis, tmp_path, row, words):
    dump = tmp_path / "export.json"
    dump.write_text(json.dumps({"format": "redbeat-export", "prefix": "redbeat:", "entries": [row]}))
    output = finished(invoke(redis_url, "import", str(dump), "--apply"), (1,))
    assert "invalid: row 1: " in output and words in output and schedule_redis.dbsize() == 0


# -- one bad entry, one bad row -----------------------------------------------------------

@pytest.mark.parametrize("score", [float("inf"), float("-inf"), 1e308, -1e308, 253402300800, 0, -1])
def test_any_score_redis_takes_shows_on_its_own_row(raw, redis_url, tmp_path, score):
    add_entry(raw, "odd", score)
    add_entry(raw, "canary", 100)
    assert "canary" in finished(invoke(redis_url, "list"), (0,))
    assert {item["name"] for item in json.loads(finished(invoke(redis_url, "list", "--json"), (0,)))} == {
        "odd", "canary"}
    finished(invoke(redis_url, "show", "odd"), (0,))
    finished(invoke(redis_url, "doctor"))
    dump = tmp_path / "export.json"
    dump.write_text(finished(invoke(redis_url, "export"), (0,)))
    json.loads(dump.read_text(), parse_constant=pytest.fail)  # strict JSON: no Infinity
    raw.flushdb()
    finished(invoke(redis_url, "import", str(dump), "--apply"), (0,))
    assert raw.zscore(SCHEDULE, "redbeat:odd") == score


DEEP = "[" * 100000 + "]" * 100000
BAD_FIELDS = {
    "parked is not JSON": {"parked": "{oops"},
    "parked is a list": {"parked": "[1, 2]"},
    "parked is a number": {"parked": "7"},
    "parked is a string": {"parked": '"reasons"'},
    "parked is null": {"parked": "null"},
    "parked is empty": {"parked": ""},
    "parked reason is an object": {"parked": '{"reason": {"a": 1}}'},
    "parked is not UTF-8": {"parked": b"\xff\xfe"},
    "parked is nested deeply": {"parked": DEEP},
    "definition is not JSON": {"definition": "{"},
    "definition is a list": {"definition": "[]"},
    "definition is a string": {"definition": '"x"'},
    "definition is not UTF-8": {"definition": b'{"task": "\xff"}'},
    "definition is nested deeply": {"definition": DEEP},
    "definition has NaN": {"definition": json.dumps({**GOOD, "schedule": float("nan")})},
    "no definition": {"definition": None, "meta": "{}"},
    "meta is a list": {"meta": "[]"},
    "meta is a string": {"meta": '"x"'},
    "meta has odd types": {"meta": '{"last_run_at": 5, "total_run_count": "many"}'},
    "meta is nested deeply": {"meta": DEEP},
    "meta last run is huge": {"meta": json.dumps({"last_run_at": {"__type__": "datetime", "year": 9999, "month": 12,
                                                                 "day": 31, "hour": 23, "timezone": -86000}})},
    "status is a list": {"status": "[]"},
    "status has odd types": {"status": '{"next_slot": "x", "missed": 1e999, "last_dispatched_at": [1]}'},
    "status is nested deeply": {"status": DEEP},
    "run_now is odd": {"run_now": "[]"},
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_one_bad_entry_shows_its_own_error_and_every_command_finishes(raw, redis_url, case):
    fields = {name: value for name, value in BAD_FIELDS[case].items() if value is not None}
    if BAD_FIELDS[case].get("definition", "") is None:
        raw.hset("redbeat:bad", mapping=fields)
        raw.zadd(SCHEDULE, {"redbeat:bad": 0})
    else:
        add_entry(raw, "bad", **fields)
    add_entry(raw, "canary", 100)
    listing = finished(invoke(redis_url, "list"), (0,))
    assert "canary" in listing and "bad" in listing
    assert len(json.loads(finished(invoke(redis_url, "list", "--json"), (0,)))) == 2
    finished(invoke(redis_url, "show", "bad"), (0,))
    json.loads(finished(invoke(redis_url, "show", "bad", "--json"), (0,)))
    finished(invoke(redis_url, "doctor"))
    json.loads(finished(invoke(redis_url, "export"), (0,)))
    finished(invoke(redis_url, "status"))


@pytest.mark.parametrize("record", [
    b"7", b"[1, 2]", b'"text"', b"null", b"{oops", b"\xff", DEEP.encode(),
    json.dumps({"scheduled": "x", "dispatched": 1e308, "lateness": "late", "outcome": [1], "task_id": None}).encode(),
    json.dumps({"scheduled": -5, "dispatched": True, "lateness": 1e999}).encode().replace(b"Infinity", b"1e999"),
])
def test_history_records_of_any_shape_show_as_rows(raw, redis_url, record):
    add_entry(raw, "e")
    raw.lpush("redbeat::history:e", json.dumps({"task_id": "good-id", "scheduled": 1.0, "dispatched": 1.5,
                                                 "lateness": 0.5, "outcome": "published"}))
    raw.lpush("redbeat::history:e", record)
    output = finished(invoke(redis_url, "show", "e"), (0,))
    assert "good-id" in output
    history = json.loads(finished(invoke(redis_url, "show", "e", "--json"), (0,)))["history"]
    assert len(history) == 2


def test_keys_that_are_not_utf8_show_and_round_trip(raw, redis_url, tmp_path):
    add_entry(raw, b"caf\xe9", definition=json.dumps({**GOOD, "name": "cafe"}))
    raw.lpush(b"redbeat::history:caf\xe9", json.dumps({"task_id": "t1", "outcome": "published"}))
    assert "caf\\xe9" in finished(invoke(redis_url, "list"), (0,))
    # A name that is not UTF-8 arrives from the shell with surrogate escapes.
    assert "t1" in finished(invoke(redis_url, "show", "caf\udce9"), (0,))
    assert finished(invoke(redis_url, "doctor"), (0,)).splitlines()[-1].startswith("nothing wrong found")
    dump = tmp_path / "export.json"
    dump.write_text(finished(invoke(redis_url, "export"), (0,)))
    before = raw.hgetall(b"redbeat:caf\xe9")
    raw.flushdb()
    finished(invoke(redis_url, "import", str(dump), "--apply"), (0,))
    assert raw.hgetall(b"redbeat:caf\xe9") == before and raw.zscore(SCHEDULE, b"redbeat:caf\xe9") == 0


def test_members_that_are_not_entries_show_as_such(raw, redis_url, tmp_path):
    raw.zadd(SCHEDULE, {"session:42": 0, "redbeat:text": 0, "redbeat:gone": 0})
    raw.hset("session:42", "definition", json.dumps(GOOD))
    raw.set("redbeat:text", "someone else's string")
    add_entry(raw, "canary", 100)
    listing = finished(invoke(redis_url, "list"), (0,))
    assert "outside the prefix" in listing and "is a string, not an entry hash" in listing and "orphan" in listing
    findings = {f["key"]: f["kind"] for f in json.loads(finished(invoke(redis_url, "doctor", "--json"), (1,)))
                if not f["notice"]}
    assert findings == {"session:42": "foreign", "redbeat:text": "not-a-hash", "redbeat:gone": "orphan"}
    export = json.loads(finished(invoke(redis_url, "export"), (0,)))
    assert "session:42" not in {item["key"] for item in export["entries"]}


fields_strategy = st.dictionaries(
    st.sampled_from(["definition", "meta", "status", "parked", "run_now", "other"]),
    st.one_of(st.binary(max_size=40),
              st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3),
                           max_leaves=8).map(lambda value: json.dumps(value).encode())),
    min_size=1, max_size=5)
scores = st.one_of(st.floats(allow_nan=False), st.sampled_from([0.0, -1.0, time.time()]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.binary(min_size=1, max_size=12).filter(lambda b: not b.startswith(b":")), fields=fields_strategy,
       score=scores)
def test_fuzzed_entries_never_stop_a_command(raw, redis_url, tmp_path, name, fields, score):
    raw.flushdb()
    add_entry(raw, name, score, **fields)
    add_entry(raw, "canary", 100)
    assert "canary" in finished(invoke(redis_url, "list"), (0,))
    finished(invoke(redis_url, "show", "--", name.decode("utf-8", "surrogateescape")), (0,))
    finished(invoke(redis_url, "doctor"))
    dump = tmp_path / "export.json"
    dump.write_text(finished(invoke(redis_url, "export"), (0,)))
    key = b"redbeat:" + name
    before = raw.hgetall(key), raw.zscore(SCHEDULE, key)
    raw.flushdb()
    finished(invoke(redis_url, "import", str(dump), "--apply"), (0,))
    assert (raw.hgetall(key), raw.zscore(SCHEDULE, key)) == before


# -- RedBeat's own keys of the wrong type -----------------------------------------------------

OWN_KEYS = {"schedule": ("redbeat::schedule", "zset"), "statics": ("redbeat::statics", "set"),
            "lock": ("redbeat::lock", "string"), "inflight": ("redbeat::inflight", "hash"),
            "heartbeat": ("redbeat::heartbeat", "string"), "history": ("redbeat::history:canary", "list")}
WRITERS = {"string": lambda c, k: c.set(k, "x"), "hash": lambda c, k: c.hset(k, "x", "y"),
           "list": lambda c, k: c.rpush(k, "x"), "zset": lambda c, k: c.zadd(k, {"x": 1}),
           "set": lambda c, k: c.sadd(k, "x")}


def fresh_heartbeat(client) -> None:
    now = time.time()
    client.set("redbeat::heartbeat", json.dumps({"token": "h:1:t", "host": "h", "pid": 1, "version": "3",
                                                  "last_tick": now, "active_since": now}))


def test_status_is_healthy_with_a_fresh_heartbeat(raw, redis_url):
    add_entry(raw, "canary", 100)
    fresh_heartbeat(raw)
    assert finished(invoke(redis_url, "status"), (0,)).rstrip().endswith("healthy")


@pytest.mark.parametrize("role, kind", [(role, kind) for role, (_, expected) in OWN_KEYS.items()
                                        for kind in ("string", "hash", "list", "zset") if kind != expected])
def test_own_keys_of_the_wrong_type_are_named_in_one_line(raw, redis_url, role, kind):
    key, _ = OWN_KEYS[role]
    add_entry(raw, "canary", 100)
    fresh_heartbeat(raw)
    raw.delete(key)
    WRITERS[kind](raw, key)
    blocks = {"list": role == "schedule", "export": role in ("schedule", "statics"),
              "status": role in ("schedule", "inflight", "lock") or role == "heartbeat",
              "show": role == "schedule"}
    for command, stops in blocks.items():
        result = invoke(redis_url, *([command, "canary"] if command == "show" else [command]))
        output = finished(result, (1,) if stops else (0,))
        if stops or command == "status" and role != "history":
            assert key in output, (command, output)
        if stops and command != "status":
            assert len(output.strip().splitlines()) == 1, output
    status = json.loads(finished(invoke(redis_url, "status", "--json")))
    if role in ("schedule", "inflight", "lock"):
        assert status["healthy"] is False and [w["key"] for w in status["wrong_types"]] == [key]
    findings = json.loads(finished(invoke(redis_url, "doctor", "--json"), (1,)))
    assert {"kind": "wrong-type", "key": key} in [{"kind": f["kind"], "key": f["key"]} for f in findings]
    if role == "history":
        assert f"DEL {key}" in finished(invoke(redis_url, "show", "canary"), (0,))


# -- Redis text reaches the terminal escaped -------------------------------------------------

EVIL = "evil\nFORGED LINE \x1b[2J\x1b]0;pwned\x07\u202e"
# What click itself writes when colour is on: bold and coloured text.
STYLES = re.compile("\x1b\\[[0-9;]*m")


@pytest.mark.parametrize("color", [False, True])
def test_redis_text_reaches_the_terminal_escaped(raw, redis_url, tmp_path, color):
    add_entry(raw, EVIL.encode(), definition=json.dumps({**GOOD, "name": EVIL, "task": EVIL}))
    add_entry(raw, b"parked" + EVIL.encode(), parked=json.dumps({"reason": EVIL}), definition=json.dumps(EVIL))
    raw.lpush(f"redbeat::history:{EVIL}".encode(), json.dumps({"task_id": EVIL, "outcome": EVIL, "scheduled": EVIL}))
    raw.set("redbeat::lock", f"{EVIL}:1:token")
    raw.set("redbeat::heartbeat", json.dumps({"token": "x", "host": EVIL, "version": EVIL, "last_tick": time.time()}))
    raw.hset("redbeat:unscheduled" + EVIL, "definition", "{")
    dump = tmp_path / "export.json"
    dump.write_text(finished(invoke(redis_url, "export"), (0,)))
    raw.flushdb()
    outputs = [finished(invoke(redis_url, *args, color=color)) for args in (
        ["import", str(dump)], ["import", str(dump), "--apply"])]
    raw.set("redbeat::lock", f"{EVIL}:1:token")
    raw.set("redbeat::heartbeat", json.dumps({"token": "x", "host": EVIL, "version": EVIL, "last_tick": time.time()}))
    raw.hset("redbeat:unscheduled" + EVIL, "definition", "{")
    outputs += [finished(invoke(redis_url, *args, color=color)) for args in (
        ["list"], ["show", EVIL], ["show", "parked" + EVIL], ["doctor"], ["status"], ["pause", EVIL],
        ["run-now", EVIL], ["remove", EVIL])]
    for output in outputs:
        assert "\\nFORGED LINE \\x1b[2J\\x1b]0;pwned\\x07\\u202e" in output, output
        assert not any(char in STYLES.sub("", output) for char in "\x1b\x07\u202e"), output
        assert "\nFORGED" not in output, output


# -- Redis out of reach -----------------------------------------------------------------------

@pytest.mark.parametrize("args", [["list"], ["show", "x"], ["status"], ["doctor"], ["export"], ["remove", "x"],
                                  ["pause", "x"], ["run-now", "x"], ["edit", "x", "args", "[]"],
                                  ["add", "x", "--task", "t", "--every", "5"]])
@pytest.mark.parametrize("url, words, code", [
    ("redis://127.0.0.1:{port}/0", "cannot reach Redis at redis://127.0.0.1:", 4),
    ("redis://127.0.0.1:not-a-port/0", "bad Redis URL", 5),
    ("nosuch://127.0.0.1/0", "bad Redis URL", 5),
])
def test_redis_out_of_reach_is_one_line(args, url, words, code):
    from conftest import free_port

    result = invoke(url.format(port=free_port()), *args)
    output = finished(result, (code,))
    assert output.startswith("Error: ") and words in output and len(output.strip().splitlines()) == 1, output
