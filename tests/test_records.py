"""Every stored record reads back what it wrote, and reads what others write without failing beat."""

import json
from datetime import datetime, timezone

import pytest

from redbeat.decoder import DecodeError
from redbeat.records import (
    Heartbeat,
    HistoryRecord,
    InFlight,
    Meta,
    Outcome,
    OutcomeKind,
    Parked,
    Status,
)

AT = datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)


def test_meta_reads_back_what_it_wrote_in_2x_format():
    meta = Meta(AT, 7)
    assert Meta.from_json(meta.to_json()) == meta
    assert json.loads(meta.to_json())["last_run_at"]["__type__"] == "datetime"
    assert Meta.from_json(None) == Meta() == Meta.from_json(b"")


@pytest.mark.parametrize("raw, words", [
    (b"[1]", "meta must be a JSON object"),
    (b'{"total_run_count": true}', "total_run_count"),
    (b'{"last_run_at": "yesterday"}', "last_run_at"),
    (b"\xff", "UTF-8"),
    (b"{", "not valid JSON"),
])
def test_meta_refuses_what_is_no_meta_naming_the_field(raw, words):
    with pytest.raises(DecodeError, match=words):
        Meta.from_json(raw)


def test_status_reads_back_and_counts_anything_unreadable_as_empty():
    status = Status(next_slot=AT, last_dispatched_at=1.5e9, missed=2, last_missed_at=1.6e9, definition="ab")
    assert Status.from_json(status.to_json()) == status
    assert json.loads(status.to_json(missed=3))["missed"] == 3
    for raw in (b"[", b"[]", b'{"missed": "x"}', b'{"last_dispatched_at": 1e999}', b'{"next_slot": -1e20}'):
        assert Status.from_json(raw) == Status()


@pytest.mark.parametrize("changes", [
    {},
    {"next_slot": AT, "definition": "0123456789abcdef"},
    {"last_dispatched_at": 1700000000.123456, "missed": 0, "last_missed_at": 1.5e9},
    {"missed": 10**20, "definition": "caf\u00e9 \"quoted\" \u2603", "last_dispatched_at": 1700000000},
    {"last_missed_at": float("nan"), "missed": True, "definition": None},
])
def test_status_writes_the_text_json_dumps_writes(changes):
    status = Status(last_dispatched_at=1.25, missed=2)
    fields = {"next_slot": None, "last_dispatched_at": 1.25, "missed": 2, "last_missed_at": None, "definition": None,
              **changes}
    if fields["next_slot"] is not None:
        fields["next_slot"] = fields["next_slot"].timestamp()
    assert status.to_json(**changes) == json.dumps({k: v for k, v in fields.items() if v is not None})


def test_parked_reads_any_text_as_its_reason():
    assert Parked.from_json(Parked("bad rule", 1.7e9).to_json()) == Parked("bad rule", 1.7e9)
    assert Parked.from_json(b"by hand").reason == "by hand"
    assert Parked.from_json(b'{"reason": ""}').reason == "parked"
    assert Parked.from_json(b'"quoted"').reason == "quoted"


def test_in_flight_writes_what_json_dumps_would_and_reads_it_back():
    run = InFlight("id-1", "redbeat:a\n", 1.7e9, 1.7e9 + 1, "tok", 1.7e9 + 30, attempts=2, run_now=True)
    assert json.loads(run.to_json()) == {"task_id": "id-1", "key": "redbeat:a\n", "scheduled": 1.7e9,
                                         "claimed_at": 1.7e9 + 1, "token": "tok", "retry_at": 1.7e9 + 30,
                                         "attempts": 2, "run_now": True}
    assert InFlight.from_json(run.to_json()) == run
    with pytest.raises(ValueError):
        InFlight.from_json(json.dumps({**json.loads(run.to_json()), "scheduled": -5}))


def test_a_history_record_is_written_from_its_outcome_and_read_back():
    run = InFlight("id-1", "redbeat:a", 1000.0, 1000.0, "tok", 1030.0)
    written = Outcome(run, OutcomeKind.GIVEN_UP, 1002.5, 'said "no"').history_record().to_json()
    assert json.loads(written) == {"task_id": "id-1", "scheduled": 1000.0, "dispatched": 1002.5, "lateness": 2.5,
                                   "outcome": "given-up", "reason": 'said "no"'}
    assert HistoryRecord.from_json(written) == HistoryRecord("id-1", 1000.0, 1002.5, "given-up", 'said "no"')
    # A plain tuple serves as an outcome, and a published run has no reason.
    assert "reason" not in json.loads(Outcome(*(run, "published", 1001.0)).history_record().to_json())


@pytest.mark.parametrize("raw", [b"[]", b"{", b'{"task_id": 1}', b"[" * 100_000])
def test_a_history_record_that_is_none_is_refused_with_value_error(raw):
    with pytest.raises(ValueError):
        HistoryRecord.from_json(raw)


def test_the_heartbeat_leaves_unset_fields_out_and_reads_back():
    beat = Heartbeat(token="tok", last_tick=1.7e9, host="h", pid=7, version="3", active_since=1.7e9,
                     lock_timeout=25.0, max_interval=5.0, clock_offset=0.1)
    written = json.loads(beat.to_json())
    assert "failing_since" not in written and "error" not in written and "claiming_paused" not in written
    assert Heartbeat.from_json(beat.to_json()) == (beat, written)
    failing = Heartbeat(token="tok", last_tick=1.7e9, failing_since=1.7e9 + 5, error="boom")
    assert json.loads(failing.to_json())["error"] == "boom"


def test_a_heartbeat_of_the_wrong_shape_is_refused_and_bad_fields_are_unset():
    for raw in (b"[]", b"{", b'{"last_tick": "now"}', b'{"token": "t"}'):
        with pytest.raises(ValueError):
            Heartbeat.from_json(raw)
    beat, _ = Heartbeat.from_json(b'{"last_tick": 1.7e9, "pid": true, "failing_since": 1e99, "error": 5}')
    assert beat.pid is None and beat.failing_since is None and beat.error is None
