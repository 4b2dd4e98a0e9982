"""The decide stage without Redis: a DueRecord in, a Decision out, at a fixed clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from redbeat import RedBeatSchedulerEntry
from redbeat.decide import Decider
from redbeat.decoder import dumps, meta_json
from redbeat.keys import KeyNames
from redbeat.runs import task_id_for
from redbeat.store import NEVER, DueRecord

UTC = timezone.utc
NOW = datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC)
HOURLY = {"name": "job", "task": "tasks.job", "schedule": {"__type__": "interval", "every": 3600}}


@pytest.fixture
def decider(fake_app):
    return Decider(fake_app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "host:1:token", 10.0)


def record(definition=HOURLY, meta=None, key=b"redbeat:job", score=0.0, kind="hash", run_now=None):
    raw = definition if definition is None or isinstance(definition, bytes) else json.dumps(definition).encode()
    return DueRecord(key, score, raw, meta.encode() if isinstance(meta, str) else meta, None, run_now, kind=kind)


def test_a_member_outside_the_prefix_is_dropped(decider):
    assert decider.decide(record(key=b"session:42", kind="outside"), NOW).action == "drop"


def test_a_member_whose_key_is_gone_or_no_hash_is_dropped(decider):
    assert decider.decide(record(kind="none"), NOW).action == "drop"
    assert decider.decide(record(kind="string"), NOW).action == "drop"


@pytest.mark.parametrize("bad, words", [
    ({"definition": None}, "no 'definition'"),
    ({"definition": b"{"}, "not valid JSON"),
    ({"key": b"redbeat:job\xff"}, "not valid UTF-8"),
    ({"definition": {**HOURLY, "schedule": {"__type__": "rrule", "freq": "DAILY", "byweekday": 9}}}, "weekdays 0"),
])
def test_bad_input_is_parked_with_a_reason_and_never_due(decider, bad, words):
    decision = decider.decide(record(**bad), NOW)
    assert decision.action == "park" and decision.score == NEVER
    assert words in json.loads(decision.reason)["reason"]


def test_a_paused_entry_moves_to_its_next_slot_and_runs_nothing(decider):
    last = NOW - timedelta(minutes=30)
    decision = decider.decide(record({**HOURLY, "enabled": False}, meta=meta_json(last, 3)), NOW)
    assert decision.action == "move" and not decision.runs
    assert decision.score == (last + timedelta(hours=1)).timestamp()


def test_an_entry_not_due_yet_moves_and_records_the_slot_it_waits_for(decider):
    last = NOW - timedelta(minutes=30)
    decision = decider.decide(record(meta=meta_json(last, 3)), NOW)
    assert decision.action == "move" and json.loads(decision.status)["next_slot"]


def test_a_due_entry_runs_its_slot_with_a_task_id_derived_from_it(decider):
    last = NOW - timedelta(hours=1, seconds=5)
    decision = decider.decide(record(meta=meta_json(last, 3)), NOW)
    slot = last + timedelta(hours=1)
    assert decision.action == "run"
    [run] = decision.runs
    assert run.task_id == task_id_for("redbeat:job", slot.timestamp()) and run.token == "host:1:token"
    assert run.retry_at == NOW.timestamp() + 10.0
    assert json.loads(decision.meta)["total_run_count"] == 4


def test_a_finished_one_off_that_asked_for_delete_is_deleted(decider):
    at = NOW - timedelta(minutes=5)
    definition = json.loads(dumps({"name": "once", "task": "tasks.once", "on_finish": "delete",
                                   "schedule": {"__type__": "clocked", "at": at}}))
    assert decider.decide(record(definition, meta=meta_json(at, 1)), NOW).action == "delete"
