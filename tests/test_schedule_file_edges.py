"""The edges of the schedule file and the bulk commands (export, import, import --prune,
--match with --yes, the streaming JSON reader):

- an import never writes RedBeat's own keys (a name starting with ':', an export row keyed
  as the schedule) nor a key under the prefix holding another type: such rows are invalid
  in the plan, and nothing is written;
- --prune removes entries whose names are not UTF-8 (by their key's bytes), and never
  removes one of RedBeat's own keys found as a schedule member (it says so);
- bulk commands say an entry whose name is not UTF-8 in one line and go on with the others;
- a specs export keeps a field holding Infinity or NaN as text, and imports back unchanged;
- the reader reads a number cut by its read boundary whole, an export whose members were
  sorted, and a file starting with a byte order mark."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from redbeat.cli import redbeat
from redbeat.client import get_store
from redbeat.entrywrites import ImportedWrite
from redbeat.jsonstream import CHUNK, JsonReader
from redbeat.storepart import NoEntryKeyError

SCHEDULE = "redbeat::schedule"


@pytest.fixture
def cli(redis_url):
    runner = CliRunner()

    def run(*args, stdin=None):
        return runner.invoke(redbeat, ["--redis-url", redis_url, *args], input=stdin)
    return run


def definition(name: str, **more) -> str:
    return json.dumps({"name": name, "task": "tasks.report", "schedule": {"__type__": "interval", "every": 60},
                       "args": [], "kwargs": {}, "options": {}, "enabled": True, **more})


def put(client, key: bytes | str, score: float = 1e9, definition_text: str | None = None) -> None:
    """An entry under ``key`` (bytes for a name that is not UTF-8), as beat leaves it."""
    raw = key if isinstance(key, bytes) else key.encode()
    client.hset(raw, "definition", definition_text or definition(raw[len(b"redbeat:"):].decode("utf-8", "replace")))
    client.zadd(SCHEDULE, {raw: score})


def one_spec(tmp_path, name: str = "keep"):
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({name: {"task": "tasks.report", "schedule": 60}}))
    return path


def no_traceback(result) -> bool:
    return result.exception is None or isinstance(result.exception, SystemExit)


# -- keys an import never writes ----------------------------------------------------------

def test_import_of_an_export_row_keyed_as_the_schedule_keeps_the_schedule(cli, schedule_redis, tmp_path):
    put(schedule_redis, "redbeat:keep")
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"format": "redbeat-export", "version": 1, "prefix": "redbeat:", "statics": [],
                                "entries": [{"key": "redbeat::schedule", "score": 1, "fields": {}}]}))
    cli("import", str(path), "--apply")
    assert schedule_redis.zscore(SCHEDULE, "redbeat:keep") == 1e9


def test_import_refuses_a_spec_named_as_one_of_redbeats_own_keys(cli, schedule_redis, tmp_path):
    schedule_redis.hset("redbeat::inflight", "token", "record")
    result = cli("import", str(one_spec(tmp_path, ":inflight")), "--apply")
    assert result.exit_code == 1
    assert schedule_redis.hkeys("redbeat::inflight") == ["token"]
    assert schedule_redis.zcard(SCHEDULE) == 0


def test_prune_removes_an_entry_whose_name_is_not_utf8(cli, schedule_redis, tmp_path):
    put(schedule_redis, b"redbeat:caf\xe9")
    put(schedule_redis, "redbeat:old")
    result = cli("import", str(one_spec(tmp_path, "new")), "--prune", "--apply")
    assert result.exit_code == 0, result.output
    assert schedule_redis.zrange(SCHEDULE, 0, -1) == ["redbeat:new"]


def test_prune_never_deletes_one_of_redbeats_own_keys(cli, schedule_redis, tmp_path):
    put(schedule_redis, "redbeat:keep")
    schedule_redis.set("redbeat::lock", "token")
    schedule_redis.zadd(SCHEDULE, {"redbeat::lock": 5})
    result = cli("import", str(one_spec(tmp_path)), "--apply", "--prune")
    assert result.exit_code == 0, result.output
    assert schedule_redis.get("redbeat::lock") == "token"
    assert "left alone: redbeat::lock" in result.output


def backup_of(path, *names: str):
    rows = [{"key": f"redbeat:{name}", "score": 5, "fields": {"definition": definition(name)}} for name in names]
    path.write_text(json.dumps({"format": "redbeat-export", "version": 1, "prefix": "redbeat:", "statics": [],
                                "entries": rows}))
    return path


def test_import_of_an_export_leaves_someone_elses_key_under_the_prefix(cli, schedule_redis, tmp_path):
    schedule_redis.set("redbeat:s", "someone else's")
    result = cli("import", str(backup_of(tmp_path / "export.json", "s")), "--apply")
    assert schedule_redis.type("redbeat:s") in ("string", b"string")
    assert schedule_redis.get("redbeat:s") == "someone else's"
    assert result.exit_code == 1


def test_import_of_a_spec_over_someone_elses_key_is_invalid_in_the_plan(cli, schedule_redis, tmp_path):
    schedule_redis.set("redbeat:s", "someone else's")
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({name: {"task": "tasks.report", "schedule": 60} for name in ("t", "s")}))
    result = cli("import", str(path), "--apply")
    assert result.exit_code == 1, result.output
    assert schedule_redis.zcard(SCHEDULE) == 0


def test_write_imported_refuses_one_of_redbeats_own_keys_and_writes_nothing(app, schedule_redis):
    writes = [ImportedWrite(b"redbeat:fine", 5, {b"definition": b"{}"}, True),
              ImportedWrite(b"redbeat::schedule", 5, {}, True)]
    with pytest.raises(NoEntryKeyError):
        get_store(app).write_imported(writes)
    assert schedule_redis.keys("*") == []


# -- bulk ---------------------------------------------------------------------------------

def test_bulk_remove_over_a_name_that_is_not_utf8_removes_it_with_the_others(cli, schedule_redis):
    for key in (b"redbeat:a1", b"redbeat:caf\xe9", b"redbeat:z1"):
        put(schedule_redis, key)
    result = cli("remove", "--match", "*", "--yes")
    assert no_traceback(result), repr(result.exception)
    assert result.exit_code == 0
    assert schedule_redis.zcard(SCHEDULE) == 0 and not schedule_redis.exists(b"redbeat:caf\xe9")


def test_bulk_pause_over_a_name_that_is_not_utf8_has_no_traceback(cli, schedule_redis):
    put(schedule_redis, b"redbeat:caf\xe9")
    assert no_traceback(cli("pause", "--match", "*", "--yes"))


# -- exactness ----------------------------------------------------------------------------

def test_specs_export_of_a_definition_holding_infinity_imports_back(cli, schedule_redis, tmp_path):
    put(schedule_redis, "redbeat:limit", definition_text=definition("limit", kwargs={"limit": float("inf")}))
    out = tmp_path / "specs.json"
    result = cli("export", "--format", "specs", "-o", str(out))
    assert result.exit_code == 0, repr(result.exception)
    result = cli("import", str(out), "--json")
    assert json.loads(result.output)["unchanged"] == ["limit"]


def test_reader_reads_a_number_cut_by_the_read_boundary():
    text = "[" + " " * (CHUNK - 3) + "1.5]"
    assert text[CHUNK - 2:CHUNK] == "1."
    reader = JsonReader(io.StringIO(text))
    assert [reader.value() for _ in reader.items()] == [1.5]


class CountedReads(io.StringIO):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.reads = 0

    def read(self, size: int | None = -1) -> str:
        self.reads += 1
        return super().read(size)


def test_reader_reads_one_huge_value_in_a_few_growing_reads():
    # Each read is as long as what is held, so a value is parsed a few times over, not once per CHUNK.
    stream = CountedReads(json.dumps(["x" * (256 * CHUNK)]))
    reader = JsonReader(stream)
    assert [len(reader.value()) for _ in reader.items()] == [256 * CHUNK]
    assert stream.reads < 20


@pytest.mark.parametrize("fmt", ["export", "specs"])
def test_an_export_with_its_members_sorted_still_imports(cli, schedule_redis, tmp_path, fmt):
    put(schedule_redis, "redbeat:keep")
    out = tmp_path / "export.json"
    cli("export", "--format", fmt, "-o", str(out))
    out.write_text(json.dumps(json.loads(out.read_text()), sort_keys=True, indent=2))
    result = cli("import", str(out), "--json")
    assert result.exit_code == 0, result.output
    # A specs export's definitions are decoded, so sorting reorders their fields too: the same
    # definition, but no longer the same text, which an exact copy writes as stored text.
    assert json.loads(result.output)["unchanged" if fmt == "export" else "update"] == ["keep"]


def test_a_specs_file_with_a_byte_order_mark_imports(cli, schedule_redis, tmp_path):
    path = tmp_path / "specs.json"
    path.write_text("\ufeff" + json.dumps({"keep": {"task": "tasks.report", "schedule": 60}}), encoding="utf-8")
    result = cli("import", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["create"] == ["keep"]
