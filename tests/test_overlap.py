"""Overlap policies without Redis: the pure decisions of overlap.py at fixed clocks, and the
decide stage with the newest worker event of an entry handed in."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from redbeat import RedBeatSchedulerEntry
from redbeat.cli import redbeat
from redbeat.client import get_store
from redbeat.decide import Decider
from redbeat.decoder import DecodeError, meta_json
from redbeat.entry import definition_digest, entry_run_bound
from redbeat.keys import KeyNames
from redbeat.metrics import MissedReason
from redbeat.overlap import (
    TIME_LIMIT_GRACE,
    WAITING_POLL,
    Blocker,
    BoundSource,
    Overlap,
    RunBound,
    blocker,
    mentions_overlap,
    run_bound,
    settle,
)
from redbeat.records import InFlight, Outcome, OutcomeKind, RunEvent, Status
from redbeat.runs import task_id_for
from redbeat.store import DueRecord
from redbeat.validation import check_options

UTC = timezone.utc
NOW = datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC)
T = NOW.timestamp()
BOUND = RunBound(60.0, BoundSource.ENTRY)
MINUTELY = {"name": "job", "task": "tasks.job", "schedule": {"__type__": "interval", "every": 60}}
SLOTS = [NOW - timedelta(seconds=s) for s in (20, 10, 0)]


def event(kind: str, at: float, task_id: str = "t-1") -> RunEvent:
    return RunEvent(task_id, kind, at, "celery@w1", 7)


# -- the bound --------------------------------------------------------------------------------

def test_the_bound_is_the_entrys_own_then_the_tasks_time_limit_then_the_apps_then_the_setting():
    assert run_bound(90, 30, 20, 3600) == RunBound(90.0, BoundSource.ENTRY)
    assert run_bound(None, 30, 20, 3600) == RunBound(30 + TIME_LIMIT_GRACE, BoundSource.TASK)
    assert run_bound(None, None, 20, 3600) == RunBound(20 + TIME_LIMIT_GRACE, BoundSource.APP)
    assert run_bound(None, None, None, 3600) == RunBound(3600.0, BoundSource.SETTING)


def test_an_entrys_bound_comes_from_its_tasks_time_limit_when_its_app_knows_the_task(fake_app):
    @fake_app.task(name="tasks.limited", time_limit=120)
    def limited() -> None: ...

    entry = RedBeatSchedulerEntry("job", "tasks.limited", 60, app=fake_app)
    assert entry_run_bound(entry) == RunBound(120 + TIME_LIMIT_GRACE, BoundSource.TASK)
    entry.max_run_time = 5
    assert entry_run_bound(entry) == RunBound(5.0, BoundSource.ENTRY)
    assert entry_run_bound(RedBeatSchedulerEntry("x", "tasks.unknown", 60, app=fake_app)).source is BoundSource.SETTING


# -- the run that blocks ----------------------------------------------------------------------

def test_without_any_worker_event_nothing_blocks_as_the_policy_cannot_know():
    assert blocker(None, "t-1", T - 1, BOUND, T) is None


@pytest.mark.parametrize("kind", ["started", "retried"])
def test_a_run_started_or_retried_within_the_bound_blocks_until_the_bound(kind):
    found = blocker(event(kind, T - 10), "t-1", T - 11, BOUND, T)
    assert found == Blocker("t-1", kind, T - 10, T + 50)
    assert "t-1 has not finished" in found.reason() and "counts as finished at" in found.reason()


def test_a_run_started_longer_ago_than_the_bound_counts_as_finished():
    assert blocker(event("started", T - 60), "t-1", T - 61, BOUND, T) is None


@pytest.mark.parametrize("kind", ["succeeded", "failed", "revoked", "ignored", "rejected"])
def test_a_run_that_ended_blocks_nothing(kind):
    assert blocker(event(kind, T - 5), "t-1", T - 8, BOUND, T) is None


def test_a_run_published_after_the_newest_event_blocks_as_not_started_yet():
    found = blocker(event("succeeded", T - 5, "t-1"), "t-2", T - 2, BOUND, T)
    assert found == Blocker("t-2", "published", T - 2, T + 58)
    assert blocker(event("succeeded", T - 5, "t-1"), "t-2", T - 70, BOUND, T) is None  # its bound passed too


# -- settling the due slots -------------------------------------------------------------------

def test_allow_runs_every_slot_whatever_runs():
    busy = Blocker("t", "started", T, T + 1)
    assert settle(Overlap.ALLOW, busy, None, SLOTS).runs == SLOTS


def test_skip_skips_every_slot_while_a_run_goes_on_and_runs_the_first_once_none_does():
    busy = Blocker("t", "started", T, T + 1)
    assert settle(Overlap.SKIP, busy, None, SLOTS).skipped == SLOTS
    idle = settle(Overlap.SKIP, None, None, SLOTS)
    assert idle.runs == SLOTS[:1] and idle.skipped == SLOTS[1:] and idle.waiting is None


def test_buffer_one_keeps_one_slot_waiting_and_skips_the_others():
    busy = Blocker("t", "started", T, T + 1)
    plan = settle(Overlap.BUFFER_ONE, busy, None, SLOTS)
    assert plan.runs == [] and plan.waiting == SLOTS[0] and plan.skipped == SLOTS[1:]
    still = settle(Overlap.BUFFER_ONE, busy, SLOTS[0], SLOTS[1:])
    assert still.waiting == SLOTS[0] and still.skipped == SLOTS[1:]


def test_buffer_one_runs_the_waiting_slot_once_the_previous_run_finished_and_the_next_due_waits():
    plan = settle(Overlap.BUFFER_ONE, None, SLOTS[0], SLOTS[1:2])
    assert plan.runs == [SLOTS[0]] and plan.waiting == SLOTS[1] and plan.skipped == []


def test_a_due_slot_that_is_the_waiting_one_again_is_not_counted_twice():
    plan = settle(Overlap.BUFFER_ONE, None, SLOTS[1], SLOTS)
    assert plan.runs == [SLOTS[1]] and plan.waiting == SLOTS[2] and plan.skipped == []


def test_a_slot_left_waiting_runs_when_the_policy_changed_to_allow():
    assert settle(Overlap.ALLOW, None, SLOTS[0], []).runs == [SLOTS[0]]


def test_only_definitions_that_mention_overlap_make_beat_read_worker_events():
    assert mentions_overlap(b'{"task": "t", "overlap": "skip"}')
    assert not mentions_overlap(b'{"task": "t"}') and not mentions_overlap(None)


@pytest.mark.parametrize("fields, words", [
    ({"overlap": "forbid"}, "allow, skip, buffer_one"),
    ({"max_run_time": 0}, "more than 0"),
    ({"max_run_time": -5}, "more than 0"),
    ({"max_run_time": True}, "more than 0"),
    ({"max_run_time": 1e9}, "at most"),
])
def test_a_policy_or_bound_out_of_range_is_refused_naming_the_field(fields, words):
    with pytest.raises(DecodeError, match=words):
        check_options(fields)


def test_overlapped_slots_count_under_their_own_missed_reason():
    reason = Blocker("t", "started", T, T + 1).reason()
    assert MissedReason.of(reason) == MissedReason.OVERLAP


# -- the decide stage -------------------------------------------------------------------------

@pytest.fixture
def decider(fake_app):
    return Decider(fake_app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "host:1:token", 10.0)


def due(policy: str, last: datetime, status: Status | None = None, count: int = 3) -> DueRecord:
    definition = json.dumps({**MINUTELY, "overlap": policy, "max_run_time": 600}).encode()
    return DueRecord(b"redbeat:job", 0.0, definition, meta_json(last, count).encode(),
                     None if status is None else status.to_json().encode())


LAST = NOW - timedelta(seconds=65)  # the slot at NOW - 5 s is due
SLOT = LAST + timedelta(seconds=60)


def test_skip_records_the_due_slot_as_missed_with_the_running_task_and_moves_on(decider):
    running = event("started", T - 30, task_id_for("redbeat:job", LAST.timestamp())).to_json().encode()
    decision = decider.decide(due("skip", LAST), NOW, running)
    assert decision.action == "move" and not decision.runs and decision.meta == meta_json(LAST, 3)
    [skipped] = decision.skipped
    assert skipped.run.task_id == task_id_for("redbeat:job", SLOT.timestamp()) and skipped.outcome == "missed"
    assert "has not finished (started since" in skipped.reason
    status = json.loads(decision.status)
    assert status["missed"] == 1 and status["last_missed_at"] == SLOT.timestamp()
    assert status["next_slot"] == (SLOT + timedelta(seconds=60)).timestamp()


def test_skip_runs_the_slot_once_the_previous_run_ended(decider):
    ended = event("succeeded", T - 20, task_id_for("redbeat:job", LAST.timestamp())).to_json().encode()
    decision = decider.decide(due("skip", LAST, Status(last_dispatched_at=LAST.timestamp())), NOW, ended)
    assert decision.action == "run" and not decision.skipped


def test_without_worker_events_an_overlap_policy_runs_as_allow(decider):
    assert decider.decide(due("skip", LAST), NOW, None).action == "run"


def test_buffer_one_keeps_the_slot_waiting_and_looks_again_a_poll_later(decider):
    running = event("started", T - 30).to_json().encode()
    decision = decider.decide(due("buffer_one", LAST), NOW, running)
    assert decision.action == "move" and not decision.skipped
    assert json.loads(decision.status)["waiting_slot"] == SLOT.timestamp()
    assert decision.score == T + WAITING_POLL


def test_buffer_one_publishes_the_waiting_run_with_its_own_slots_task_id_once_the_previous_ended(decider):
    waiting = Status(next_slot=SLOT + timedelta(seconds=60), waiting_slot=SLOT.timestamp(),
                     last_dispatched_at=LAST.timestamp())
    ended = event("succeeded", T - 1).to_json().encode()
    decision = decider.decide(due("buffer_one", LAST, waiting), NOW, ended)
    [run] = decision.runs
    assert decision.action == "run" and run.task_id == task_id_for("redbeat:job", SLOT.timestamp())
    assert "waiting_slot" not in json.loads(decision.status)
    assert json.loads(decision.meta)["total_run_count"] == 4


def test_buffer_one_skips_a_slot_that_comes_while_one_waits(decider):
    waiting = Status(next_slot=SLOT, waiting_slot=(SLOT - timedelta(seconds=30)).timestamp())
    running = event("started", T - 30).to_json().encode()
    decision = decider.decide(due("buffer_one", LAST, waiting), NOW, running)
    assert [o.run.scheduled for o in decision.skipped] == [SLOT.timestamp()]
    assert json.loads(decision.status)["waiting_slot"] == waiting.waiting_slot


# -- the fields through the command line and the entry API (a real redis-server) ---------------

def cli(redis_url: str, *args: str) -> str:
    result = CliRunner().invoke(redbeat, ["--redis-url", redis_url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_add_edit_show_and_export_carry_the_policy_and_its_bound(redis_url, schedule_redis):
    cli(redis_url, "add", "nightly", "--task", "t.nightly", "--every", "60", "--option", "overlap=buffer_one",
        "--option", "max_run_time=90")
    shown = json.loads(cli(redis_url, "show", "nightly", "--json"))
    assert shown["overlap"] == {"policy": "buffer_one", "max_run_time": 90.0,
                                "bound_source": "the entry's max_run_time", "running": None, "waiting": None,
                                "worker_reports": False}
    cli(redis_url, "edit", "nightly", "overlap", "skip")
    text = cli(redis_url, "show", "nightly")
    assert "overlap: skip; a started run counts as finished after 90s (the entry's max_run_time)" in text
    assert "no worker reports runs of this entry" in text
    definition = json.loads(cli(redis_url, "export", "--format", "specs"))["entries"]["nightly"]["definition"]
    assert (definition["overlap"], definition["max_run_time"]) == ("skip", 90)


def test_show_says_which_run_goes_on_and_until_when_it_blocks(redis_url, schedule_redis):
    cli(redis_url, "add", "busy", "--task", "t.busy", "--every", "60", "--option", "overlap=skip",
        "--option", "max_run_time=600")
    started = float(schedule_redis.execute_command("TIME")[0])
    schedule_redis.lpush("redbeat::worker-events:busy", RunEvent("t-7", "started", float(started)).to_json())
    running = json.loads(cli(redis_url, "show", "busy", "--json"))["overlap"]["running"]
    assert running["task_id"] == "t-7" and running["state"] == "started"
    assert running["counts_as_finished_at"] == datetime.fromtimestamp(started + 600, UTC).isoformat()
    assert "overlap: running since " in cli(redis_url, "show", "busy")


def test_doctor_notes_an_overlap_policy_that_no_worker_reports_runs_for(redis_url, schedule_redis):
    cli(redis_url, "add", "unwatched", "--task", "t.u", "--every", "60", "--option", "overlap=skip")
    findings = json.loads(CliRunner().invoke(redbeat, ["--redis-url", redis_url, "doctor", "--json"]).output)
    [finding] = [f for f in findings if f["kind"] == "overlap-inactive"]
    assert finding["notice"] and finding["key"] == "redbeat:unwatched" and "as with allow" in finding["explanation"]


def test_saving_an_entry_whose_run_waits_keeps_it_due_soon_not_at_its_next_slot(app, schedule_redis):
    entry = RedBeatSchedulerEntry("daily", "t.daily", 86400, app=app, overlap="buffer_one").save()
    now = float(schedule_redis.execute_command("TIME")[0])
    schedule_redis.hset(entry.key, "status", Status(waiting_slot=now - 5).to_json())
    entry.description = "edited while a run waits"
    entry.save()
    assert schedule_redis.zscore("redbeat::schedule", entry.key) <= now + 5


# -- the Redis part -----------------------------------------------------------------------------

def test_the_tick_reads_worker_events_only_for_due_entries_that_mention_overlap(fake_app):
    store = get_store(fake_app)
    client = fake_app.redbeat_redis
    for name in ("plain", "policy", "silent"):
        client.lpush(f"redbeat::worker-events:{name}", RunEvent("t", "started", T).to_json())
    client.delete("redbeat::worker-events:silent")
    records = [DueRecord(f"redbeat:{name}".encode(), 0.0, definition, None) for name, definition in (
        ("plain", b'{"task": "t"}'), ("policy", b'{"task": "t", "overlap": "skip"}'),
        ("silent", b'{"task": "t", "overlap": "skip"}'))]
    assert set(store.newest_events(records)) == {b"redbeat:policy"}
    assert store.newest_events(records[:1]) == {}


def test_skipped_slots_are_pushed_onto_their_history_capped(fake_app):
    store = get_store(fake_app)
    store.conf.history_size = 2
    skipped = [Outcome(InFlight(f"t-{n}", "redbeat:job", T + n, T, "tok", T), OutcomeKind.MISSED, T + n,
                       "overlap: busy") for n in range(3)]
    store.record_skipped(skipped)
    stored = [json.loads(raw) for raw in fake_app.redbeat_redis.lrange("redbeat::history:job", 0, -1)]
    assert [(r["task_id"], r["outcome"], r["reason"]) for r in stored] == [("t-2", "missed", "overlap: busy"),
                                                                           ("t-1", "missed", "overlap: busy")]


def test_a_run_now_request_beside_a_waiting_run_publishes_both_each_marked_as_it_is(decider):
    record = due("buffer_one", LAST)
    record.status = Status(next_slot=SLOT + timedelta(seconds=60), waiting_slot=SLOT.timestamp(),
                           last_dispatched_at=LAST.timestamp(),
                           definition=definition_digest(record.definition)).to_json().encode()
    record.run_now = str(T - 1).encode()
    ended = event("succeeded", T - 1).to_json().encode()
    runs = decider.decide(record, NOW + timedelta(seconds=30), ended).runs
    assert [(run.scheduled, run.run_now) for run in runs] == [(SLOT.timestamp(), False), (T - 1, True)]
