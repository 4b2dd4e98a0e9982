"""Unit tests of the scheduling rules with a controllable clock: catch-up policies,
starting deadline, windows, run limits, one-off entries, jitter, preview, drift."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from celery.schedules import crontab, schedule

from redbeat import RedBeatSchedulerEntry
from redbeat.planning import Policy, fire_time, latest_start, plan_runs, plan_waiting
from redbeat.schedules import clocked

UTC = timezone.utc
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
EVERY_MINUTE = schedule(timedelta(minutes=1))


DEFAULT_POLICY = Policy()


def plan(policy=DEFAULT_POLICY, last_run_at=T0, pointer=None, count=0, now=T0, sched=EVERY_MINUTE, key="redbeat:k"):
    return plan_runs(key, sched, policy, last_run_at, pointer, count, now)


def test_an_entry_on_time_runs_its_slot():
    result = plan(now=T0 + MINUTE + timedelta(milliseconds=30))
    assert result.runs == [T0 + MINUTE]
    assert result.missed == 0
    assert result.next_slot == T0 + 2 * MINUTE


def test_an_entry_not_due_yet_runs_nothing_and_says_when_to_look_again():
    result = plan(now=T0 + timedelta(seconds=59))
    assert result.runs == [] and result.fire_at == T0 + MINUTE


def test_no_drift_the_next_slot_follows_the_slot_not_the_dispatch():
    last, count, now = T0, 0, T0
    for _ in range(1440):  # a day of an every-minute entry, each dispatched 0.7 s late
        now = (last + MINUTE) + timedelta(seconds=0.7)
        result = plan(last_run_at=last, count=count, now=now)
        assert len(result.runs) == 1
        last, count = result.runs[-1], count + 1
    assert last == T0 + timedelta(days=1)


@pytest.mark.parametrize("policy, runs, missed", [
    ("skip", [], 10),
    ("once", [T0 + 10 * MINUTE], 9),
    ("all", [T0 + i * MINUTE for i in range(1, 11)], 0),
])
def test_catch_up_after_beat_was_down_for_ten_slots(policy, runs, missed):
    result = plan(Policy(catch_up=policy), now=T0 + 10 * MINUTE + timedelta(seconds=20))
    assert result.runs == runs
    assert result.missed == missed
    assert result.next_slot == T0 + 11 * MINUTE  # then the normal cadence


def test_catch_up_all_is_bounded():
    result = plan(Policy(catch_up="all", catch_up_max=3), now=T0 + 10 * MINUTE)
    assert result.runs == [T0 + 8 * MINUTE, T0 + 9 * MINUTE, T0 + 10 * MINUTE]
    assert result.missed == 7


def test_skip_still_runs_a_slot_that_is_merely_late():
    result = plan(Policy(catch_up="skip"), now=T0 + MINUTE + timedelta(seconds=3))
    assert result.runs == [T0 + MINUTE]


def test_a_run_later_than_the_starting_deadline_is_skipped_and_counted_missed():
    result = plan(Policy(starting_deadline=30), now=T0 + MINUTE + timedelta(seconds=45))
    assert result.runs == [] and result.missed == 1 and result.next_slot == T0 + 2 * MINUTE
    assert plan(Policy(starting_deadline=30), now=T0 + MINUTE + timedelta(seconds=10)).runs == [T0 + MINUTE]


def test_skipped_slots_are_not_reconsidered():
    skipped = plan(Policy(catch_up="skip"), now=T0 + 5 * MINUTE + timedelta(seconds=1))
    assert skipped.runs == [] and skipped.next_slot == T0 + 6 * MINUTE
    again = plan(Policy(catch_up="skip"), pointer=skipped.next_slot, now=T0 + 5 * MINUTE + timedelta(seconds=2))
    assert again.runs == [] and again.missed == 0 and again.fire_at == T0 + 6 * MINUTE


def test_a_later_last_run_at_written_by_another_program_wins_over_the_pointer():
    result = plan(last_run_at=T0 + 30 * MINUTE, pointer=T0 + 2 * MINUTE, now=T0 + 3 * MINUTE)
    assert result.runs == [] and result.fire_at == T0 + 31 * MINUTE


def test_start_and_end_window():
    window = Policy(start_at=T0 + 10 * MINUTE, end_at=T0 + 12 * MINUTE)
    assert plan(window, now=T0 + 5 * MINUTE).fire_at == T0 + 10 * MINUTE
    assert plan(window, last_run_at=T0 + 11 * MINUTE, now=T0 + 12 * MINUTE).runs == [T0 + 12 * MINUTE]
    assert plan(window, last_run_at=T0 + 11 * MINUTE, now=T0 + 12 * MINUTE).finished
    assert plan(window, last_run_at=T0 + 12 * MINUTE, now=T0 + 20 * MINUTE).runs == []


def test_max_runs_stops_the_entry():
    assert plan(Policy(max_runs=3), count=2, now=T0 + MINUTE).runs == [T0 + MINUTE]
    assert plan(Policy(max_runs=3), count=2, now=T0 + MINUTE).finished
    assert plan(Policy(max_runs=3), count=3, now=T0 + MINUTE).runs == []
    capped = plan(Policy(max_runs=3, catch_up="all"), count=1, now=T0 + 10 * MINUTE)
    assert len(capped.runs) == 2 and capped.finished


def test_clocked_runs_once_at_its_instant():
    at = T0 + timedelta(hours=3)
    one_off = clocked(at)
    assert plan(sched=one_off, last_run_at=None, now=T0).fire_at == at
    result = plan(sched=one_off, last_run_at=None, now=at + timedelta(seconds=1))
    assert result.runs == [at] and result.finished
    assert plan(sched=one_off, last_run_at=at, now=at + timedelta(hours=1)).runs == []


def test_jitter_delays_each_slot_stably_within_the_window():
    policy = Policy(jitter=30)
    delays = [(fire_time("redbeat:k", T0 + i * MINUTE, 30) - (T0 + i * MINUTE)).total_seconds()
              for i in range(50)]
    assert all(0 <= d < 30 for d in delays)
    assert len(set(delays)) > 40  # spread, not one fixed offset
    assert fire_time("redbeat:k", T0, 30) == fire_time("redbeat:k", T0, 30)  # stable across restarts
    assert fire_time("redbeat:other", T0, 30) != fire_time("redbeat:k", T0, 30)
    fire = fire_time("redbeat:k", T0 + MINUTE, 30)
    assert plan(policy, now=fire - timedelta(milliseconds=1)).runs == []
    assert plan(policy, now=fire).runs == [T0 + MINUTE]


def test_preview_matches_what_the_scheduler_decides(fake_app):
    entry = RedBeatSchedulerEntry("p", "t", crontab(minute="*/5"), jitter=20, app=fake_app)
    entry.last_run_at = T0
    preview = entry.preview(4, now=T0 + timedelta(seconds=1))
    now, last, count = T0, T0, 0
    for expected in preview:
        now = expected["fire_at"]
        result = plan_runs(entry.key, entry.schedule, entry.policy(), last, None, count, now)
        assert result.runs == [expected["slot"]]
        last, count = result.runs[-1], count + 1
    assert [p["slot"] for p in preview] == [T0 + i * 5 * MINUTE for i in range(1, 5)]


def test_preview_shows_utc_and_the_entrys_zone(fake_app):
    from redbeat.schedules import crontab as zoned_crontab

    entry = RedBeatSchedulerEntry("z", "t", zoned_crontab(minute="0", hour="9", timezone="Asia/Tokyo"),
                                  app=fake_app)
    entry.last_run_at = T0
    [first] = entry.preview(1, now=T0)
    assert first["slot"] == datetime(2026, 5, 5, 0, tzinfo=UTC)
    assert first["local"].hour == 9 and str(first["local"].tzinfo) == "Asia/Tokyo"


def test_options_are_stored_only_when_set(fake_app):
    plain = RedBeatSchedulerEntry("plain", "t", EVERY_MINUTE, app=fake_app).to_definition()
    assert set(plain) == {"name", "task", "args", "kwargs", "options", "schedule", "enabled"}
    bounded = RedBeatSchedulerEntry("b", "t", EVERY_MINUTE, max_runs=3, catch_up="skip", app=fake_app)
    assert bounded.to_definition()["max_runs"] == 3 and bounded.to_definition()["catch_up"] == "skip"


@pytest.mark.parametrize("field, value, words", [
    ("catch_up", "sometimes", "catch_up' must be one of skip, once, all, not 'sometimes'$"),
    ("catch_up", True, "catch_up' must be one of skip, once, all, not True$"),
    ("on_finish", "explode", "on_finish' must be one of disable, delete"),
    ("overlap", "skp", r"overlap' must be one of allow, skip, buffer_one, not 'skp' \(did you mean 'skip'\?\)"),
    ("max_runs", "3", "max_runs' must be a whole number"),
    ("jitter", -1, "jitter' must be a number of seconds from 0 to"),
    ("start_at", "tomorrow", "start_at' must be a datetime object"),
])
def test_invalid_options_are_refused_naming_the_field(field, value, words):
    import json

    from redbeat.decoder import DecodeError

    definition = {"name": "x", "task": "t", "schedule": 60, field: value}
    with pytest.raises(DecodeError, match=words):
        RedBeatSchedulerEntry.decode_definition(json.dumps(definition))


@pytest.mark.parametrize("policy, last_missed", [
    ("skip", T0 + 10 * MINUTE),
    ("once", T0 + 9 * MINUTE),  # the 10th ran
    ("all", None),
])
def test_the_last_missed_slot_is_the_newest_slot_that_did_not_run(policy, last_missed):
    result = plan(Policy(catch_up=policy), now=T0 + 10 * MINUTE + timedelta(seconds=20))
    assert result.last_missed == last_missed


def test_the_last_missed_slot_of_an_interval_far_behind_is_the_one_before_the_run():
    result = plan(Policy(catch_up="once"), now=T0 + 100_000 * MINUTE + timedelta(seconds=20))
    assert result.runs == [T0 + 100_000 * MINUTE]
    assert result.last_missed == T0 + 99_999 * MINUTE


def test_a_never_run_rule_that_is_over_runs_nothing_and_finishes():
    from redbeat.schedules import rrule
    over = rrule("SECONDLY", dtstart=T0 - timedelta(days=30), count=10**6)  # its last second passed days ago
    result = plan(last_run_at=None, sched=over, now=T0)
    assert result.runs == [] and result.finished
    running = rrule("SECONDLY", dtstart=T0 - timedelta(days=30), count=10**7)
    assert plan(last_run_at=None, sched=running, now=T0).runs == [T0]  # never run: due now, as 2.x had it


# -- runs waiting in flight ------------------------------------------------------------

SECOND = timedelta(seconds=1)


def waiting(policy, slots, now, last_run_at=None):
    return plan_waiting("redbeat:k", policy, last_run_at, slots, now)


def test_runs_waiting_in_flight_past_their_starting_deadline_are_missed():
    slots = [T0, T0 + SECOND, T0 + 2 * SECOND]
    result = waiting(Policy(catch_up="all", starting_deadline=1.5), slots, now=T0 + 3 * SECOND)
    assert result.late == [T0, T0 + SECOND]
    assert result.publish == [T0 + 2 * SECOND] and result.superseded == []


@pytest.mark.parametrize("catch_up", ["skip", "once"])
def test_several_runs_waiting_in_flight_collapse_to_the_newest(catch_up):
    slots = [T0 + 2 * MINUTE, T0, T0 + MINUTE]
    result = waiting(Policy(catch_up=catch_up), slots, now=T0 + 10 * MINUTE, last_run_at=T0 + 2 * MINUTE)
    assert result.publish == [T0 + 2 * MINUTE]
    assert result.superseded == [T0, T0 + MINUTE] and result.late == []


def test_a_run_waiting_behind_a_newer_slot_already_claimed_is_superseded():
    result = waiting(Policy(catch_up="once"), [T0], now=T0 + MINUTE, last_run_at=T0 + 30 * SECOND)
    assert result.publish == [] and result.superseded == [T0]


def test_catch_up_all_publishes_the_newest_catch_up_max_runs_waiting_oldest_first():
    slots = [T0 + i * MINUTE for i in range(5)]
    result = waiting(Policy(catch_up="all", catch_up_max=3), slots, now=T0 + 10 * MINUTE, last_run_at=slots[-1])
    assert result.publish == slots[2:] and result.superseded == slots[:2]


def test_a_single_run_waiting_within_its_deadline_is_published():
    result = waiting(Policy(catch_up="skip", starting_deadline=30), [T0], now=T0 + 29 * SECOND, last_run_at=T0)
    assert result.publish == [T0] and result.late == result.superseded == []


def test_the_latest_start_is_the_fire_time_plus_the_deadline_even_past_what_datetime_holds():
    policy = Policy(starting_deadline=5, jitter=60)
    assert latest_start("redbeat:k", T0, policy) == fire_time("redbeat:k", T0, 60).timestamp() + 5
    assert latest_start("redbeat:k", T0, Policy()) is None
    assert latest_start("redbeat:k", T0, Policy(starting_deadline=1e300)) == 1e300
