"""The decide stage without Redis: a DueRecord in, a Decision out, at a fixed clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest

from redbeat import RedBeatSchedulerEntry
from redbeat.decide import Decider, Definitions
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


def test_a_member_outside_the_prefix_or_without_an_entry_hash_says_so_in_a_warning(decider, caplog):
    decider.decide(record(key=b"session:42", kind="outside"), NOW)
    decider.decide(record(kind="none"), NOW)
    decider.decide(record(kind="string"), NOW)
    assert [r.getMessage() for r in caplog.records] == [
        "beat: removing session:42 from the schedule: it is not an entry key under the prefix redbeat: "
        "(beat never reads, writes or runs keys of other applications, nor its own redbeat::... keys)",
        "beat: removing redbeat:job from the schedule: there is no key under that key "
        "(members must be full keys such as redbeat:<name>; the key itself is left alone)",
        "beat: removing redbeat:job from the schedule: there is a string, not an entry hash, under that key "
        "(members must be full keys such as redbeat:<name>; the key itself is left alone)",
    ]


@pytest.mark.parametrize("bad, words", [
    ({"meta": "[]"}, "meta must be a JSON object"),
    ({"definition": {"name": "job", "schedule": HOURLY["schedule"]}}, "'task' is missing"),
    ({"definition": {**HOURLY, "options": {"task_id": "x"}}}, "sets task_id"),
])
def test_a_bad_meta_or_definition_field_is_parked_naming_it(decider, caplog, bad, words):
    decision = decider.decide(record(**bad), NOW)
    assert decision.action == "park" and words in json.loads(decision.reason)["reason"]
    message = caplog.records[-1].getMessage()
    assert message.startswith("beat: parked entry redbeat:job, it will not run until fixed: ")
    assert message.endswith(" (write a correct definition and ZADD it back to the schedule)")


def test_a_due_entry_runs_every_slot_its_catch_up_policy_keeps(decider):
    last = NOW - timedelta(hours=3, seconds=5)
    decision = decider.decide(record({**HOURLY, "catch_up": "all"}, meta=meta_json(last, 3)), NOW)
    slots = [last + timedelta(hours=hours) for hours in (1, 2, 3)]
    assert decision.action == "run"
    assert [run.scheduled for run in decision.runs] == [slot.timestamp() for slot in slots]
    assert json.loads(decision.meta)["total_run_count"] == 6
    assert decision.score == (slots[-1] + timedelta(hours=1)).timestamp()
    assert json.loads(decision.status)["last_dispatched_at"] == NOW.timestamp()


def test_missed_slots_are_counted_in_the_status_and_logged(decider, caplog):
    last = NOW - timedelta(hours=3, seconds=5)
    decision = decider.decide(record(meta=meta_json(last, 3)), NOW)  # catch-up once: the newest runs
    [run] = decision.runs
    assert run.scheduled == (last + timedelta(hours=3)).timestamp()
    status = json.loads(decision.status)
    assert status["missed"] == 2 and status["last_missed_at"] == (last + timedelta(hours=2)).timestamp()
    assert caplog.records[-1].getMessage() == "beat: job missed 2 slot(s) (catch-up once)"


def test_slots_past_their_starting_deadline_move_the_entry_without_a_run(decider):
    last = NOW - timedelta(hours=1, minutes=5)
    decision = decider.decide(record({**HOURLY, "starting_deadline": 60}, meta=meta_json(last, 3)), NOW)
    assert decision.action == "move" and not decision.runs
    assert json.loads(decision.status)["missed"] == 1
    assert json.loads(decision.meta) == json.loads(meta_json(last, 3))


def test_a_run_now_request_runs_once_with_an_id_from_when_it_was_asked(decider):
    last = NOW - timedelta(minutes=30)
    asked = NOW.timestamp() - 2
    decision = decider.decide(record(meta=meta_json(last, 3), run_now=str(asked).encode()), NOW)
    [run] = decision.runs
    assert decision.action == "run" and run.run_now and run.scheduled == asked and run.publish_by is None
    assert run.task_id == task_id_for("redbeat:job", asked)
    assert decision.score == (last + timedelta(hours=1)).timestamp()  # the regular schedule stays
    assert json.loads(decision.meta) == {"last_run_at": json.loads(dumps(last)), "total_run_count": 4}


def test_a_run_now_request_without_a_time_counts_from_now(decider):
    decision = decider.decide(record(meta=meta_json(NOW - timedelta(minutes=30), 3), run_now=b"1"), NOW)
    assert [run.scheduled for run in decision.runs] == [NOW.timestamp()]


def test_a_run_now_request_is_served_by_the_run_due_anyway(decider):
    last = NOW - timedelta(hours=1, seconds=5)
    decision = decider.decide(record(meta=meta_json(last, 3), run_now=b"1"), NOW)
    [run] = decision.runs
    assert not run.run_now and run.scheduled == (last + timedelta(hours=1)).timestamp()


def test_a_finished_one_off_is_disabled_by_default_and_kept(decider):
    at = NOW - timedelta(minutes=5)
    once = {"name": "once", "task": "tasks.once", "schedule": {"__type__": "clocked", "at": at}}
    decision = decider.decide(record(json.loads(dumps(once))), NOW)
    assert decision.action == "run" and decision.score == NEVER
    assert [run.scheduled for run in decision.runs] == [at.timestamp()]
    assert json.loads(decision.definition)["enabled"] is False


def test_an_entry_that_asked_for_delete_is_moved_not_deleted_while_its_last_run_is_claimed(decider):
    at = NOW - timedelta(minutes=5)
    definition = json.loads(dumps({"name": "once", "task": "tasks.once", "on_finish": "delete",
                                   "schedule": {"__type__": "clocked", "at": at}}))
    decision = decider.decide(record(definition), NOW)
    assert decision.action == "run" and decision.score == NEVER and decision.definition is None


def test_a_never_run_entry_waits_for_the_score_its_writer_gave_it(decider):
    later = NOW + timedelta(minutes=10)
    decision = decider.decide(record(score=later.timestamp()), NOW)
    assert decision.action == "move" and decision.score == later.timestamp()
    assert decision.status is None  # the score says it already: nothing to record


# -- decoded definitions kept between decides ----------------------------------------------

CRON = {"name": "cron", "task": "tasks.cron", "args": [[1]], "kwargs": {"a": {"b": 1}},
        "options": {"headers": {"tenant": "a"}}, "schedule": {"__type__": "crontab", "minute": "*/5"}}


def cron_record(definition=CRON):
    return record(definition, key=b"redbeat:cron", meta=meta_json(NOW - timedelta(minutes=5, seconds=10), 1))


def test_a_crontab_definition_is_decoded_once_and_each_entry_gets_its_own_containers(decider):
    first = decider.decide(cron_record(), NOW).entry
    first.args[0].append(2)
    first.kwargs["a"]["b"] = 2
    first.options["headers"]["tenant"] = "b"
    with mock.patch.object(RedBeatSchedulerEntry, "decode_definition", side_effect=AssertionError("decoded")):
        second = decider.decide(cron_record(), NOW).entry
    assert (second.args, second.kwargs, second.options) == ([[1]], {"a": {"b": 1}}, {"headers": {"tenant": "a"}})
    assert second.schedule == first.schedule


def test_an_edited_definition_is_decoded_again(fake_app):
    decider = Decider(fake_app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "t", 10.0, definitions=Definitions())
    decider.decide(cron_record(), NOW)
    edited = decider.decide(cron_record({**CRON, "schedule": {"__type__": "crontab", "minute": "*/10"}}), NOW)
    assert edited.entry.schedule._orig_minute == "*/10"


def test_decoded_definitions_are_bounded_and_only_crontabs_are_kept(fake_app):
    definitions = Definitions(size=2)
    decider = Decider(fake_app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "t", 10.0, definitions=definitions)
    for minute in range(5):
        decider.decide(cron_record({**CRON, "schedule": {"__type__": "crontab", "minute": str(minute)}}), NOW)
    decider.decide(record(), NOW)  # an interval: cheap to decode, not kept
    assert len(definitions._decoded) == 2


def test_a_long_definition_is_never_kept_so_the_cache_stays_small(fake_app):
    definitions = Definitions()
    decider = Decider(fake_app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "token", 10.0, definitions)
    payload = "x" * 200_000
    now = datetime.now(timezone.utc)
    for number in range(40):
        definition = json.dumps({"name": f"big{number}", "task": "t", "args": [payload],
                                 "schedule": {"__type__": "crontab", "minute": "*"}}).encode()
        decider.decide(DueRecord(f"redbeat:big{number}".encode(), 0.0, definition, None), now)
    assert sum(len(definition) for _, definition in definitions._decoded) == 0


def test_the_definitions_used_most_recently_stay_when_the_cache_is_full(fake_app):
    definitions = Definitions(size=2)
    decode = definitions.decode
    texts = [json.dumps({"task": "t", "schedule": {"__type__": "crontab", "minute": str(m)}}).encode()
             for m in range(3)]
    decode(RedBeatSchedulerEntry, texts[0])
    decode(RedBeatSchedulerEntry, texts[1])
    decode(RedBeatSchedulerEntry, texts[0])  # used again: the least recently used is now texts[1]
    decode(RedBeatSchedulerEntry, texts[2])
    assert [text for _, text in definitions._decoded] == [texts[0], texts[2]]
