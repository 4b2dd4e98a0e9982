"""Every schedule type beat accepts answers Celery's schedule interface with beat's
own slot: ``now + remaining_estimate(last_run_at)`` is the next slot beat dispatches,
and ``is_due`` agrees, across both daylight-saving changes of a zone, with
``last_run_at`` in UTC, in the zone or in Celery's ``timezone``. User code, 2.x's
``entry.is_due`` and monitoring integrations (sentry-sdk's beat integration)
ask the schedule object, not beat. Unit tests: fixed clocks, no Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_interval
from celery.schedules import solar
from hypothesis import given, settings
from hypothesis import strategies as st

from redbeat.decoder import loads
from redbeat.entry import RedBeatSchedulerEntry
from redbeat.planning import Policy, first_slot
from redbeat.schedules import clocked, crontab, rrule
from redbeat.slots import next_slot

UTC = timezone.utc
ZONES = ["Europe/Berlin", "America/New_York"]
# (spring forward, fall back) of 2026, as UTC instants
CHANGES = {
    "Europe/Berlin": (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)),
    "America/New_York": (datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)),
}
APPS = {zone: Celery(set_as_current=False, config_source={"timezone": zone}) for zone in [None, *ZONES]}


def schedules_in(zone: str, app: Celery) -> dict:
    """Every type beat accepts, as a user writes it or as RedBeat reads it from Redis."""
    local = ZoneInfo(zone)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "crontab hourly": crontab(minute=0, timezone=zone),
        "crontab 02:30": crontab(minute=30, hour=2, timezone=zone),
        "crontab in Celery's zone": crontab(minute="*/15", app=app),
        "rrule hourly in a zone": rrule("HOURLY", dtstart=start, timezone=zone),
        "rrule 02:30 in a zone": rrule("DAILY", byhour=[2], byminute=[30], bysecond=[0], dtstart=start,
                                       timezone=zone),
        "rrule started in a zone": rrule("DAILY", dtstart=datetime(2026, 1, 1, 2, 30, tzinfo=local)),
        "rrule hourly from UTC": rrule("HOURLY", dtstart=start),
        "clocked at a repeated time": clocked(datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=local)),
        "clocked at a skipped time": clocked(datetime(2026, 3, 8, 2, 30, tzinfo=local)),
        "solar": solar("sunrise", 52.5, 13.4, app=app),
        "interval as stored": loads('{"__type__": "interval", "every": 5400}'),
        "relative hourly as stored": loads('{"__type__": "interval", "every": 3600, "relative": true}'),
        "relative daily as stored": loads('{"__type__": "interval", "every": 86400, "relative": true}'),
        "int shorthand": RedBeatSchedulerEntry("n", "t", 3600, app=app).schedule,
        "float shorthand": RedBeatSchedulerEntry("n", "t", 90.5, app=app).schedule,
    }


NAMES = sorted(schedules_in("Europe/Berlin", APPS[None]))


def assert_answers_as_beat(sched, last_run_at: datetime, now: datetime) -> None:
    sched.nowfun = lambda: now
    slot = next_slot(sched, last_run_at)
    assert first_slot(sched, Policy(), last_run_at, None, now) == slot  # what beat's planning dispatches
    remaining = sched.remaining_estimate(last_run_at)
    if slot is None:
        assert remaining is None
        assert not sched.is_due(last_run_at)[0]
        return
    assert now.astimezone(UTC) + remaining == slot
    due, next_check = sched.is_due(last_run_at)
    assert due == (slot <= now)
    if not due:
        assert next_check == pytest.approx((slot - now).total_seconds())
        return
    following = next_slot(sched, now)
    expected = None if following is None else (following - now).total_seconds()
    assert next_check == (expected if expected is None else pytest.approx(expected))


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), change=st.sampled_from([0, 1]), name=st.sampled_from(NAMES),
       minutes=st.integers(-8 * 60, 8 * 60), seconds=st.sampled_from([0, 1, 59]),
       written_in=st.sampled_from(["UTC", "zone", "Celery's"]), app_zone=st.sampled_from([None, "zone"]),
       waited=st.sampled_from([timedelta(0), timedelta(seconds=1), timedelta(minutes=40), timedelta(hours=2),
                               timedelta(days=1)]))
def test_every_schedule_answers_with_the_slot_beat_dispatches(zone, change, name, minutes, seconds, written_in,
                                                              app_zone, waited):
    app = APPS[zone if app_zone else None]
    sched = schedules_in(zone, app)[name]
    sched.app = app
    last_run_at = CHANGES[zone][change] + timedelta(minutes=minutes, seconds=seconds)
    last_zone = {"UTC": UTC, "zone": ZoneInfo(zone), "Celery's": app.timezone}[written_in]
    last_run_at = last_run_at.astimezone(last_zone)
    now = (last_run_at + waited).astimezone(app.timezone)  # Celery's clock is in its zone
    assert_answers_as_beat(sched, last_run_at, now)


def test_an_hourly_crontab_in_europe_answers_with_beats_slot_at_the_autumn_change():
    # 02:00 CEST (00:00 UTC) ran; 02:00 happens twice, and beat runs the second one, an hour later.
    last = datetime(2026, 10, 25, 2, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert_answers_as_beat(crontab(minute=0, timezone="Europe/Berlin"), last, last + timedelta(minutes=30))
    assert next_slot(crontab(minute=0, timezone="Europe/Berlin"), last) == datetime(2026, 10, 25, 1, tzinfo=UTC)


def test_an_rrule_in_a_zone_answers_with_beats_slot_when_asked_with_a_time_in_that_zone():
    # It passed the zone's wall time to slots.py as if it were UTC: an hour off in Berlin in summer.
    berlin = ZoneInfo("Europe/Berlin")
    rule = rrule("DAILY", byhour=[9], byminute=[0], bysecond=[0], dtstart=datetime(2026, 1, 1, tzinfo=UTC),
                 timezone="Europe/Berlin")
    last = datetime(2026, 7, 1, 8, 30, tzinfo=berlin)  # 06:30 UTC, before today's 09:00 (07:00 UTC)
    now = datetime(2026, 7, 1, 8, 45, tzinfo=berlin)
    rule.nowfun = lambda: now
    assert now + rule.remaining_estimate(last) == datetime(2026, 7, 1, 7, tzinfo=UTC)


def test_an_rrule_started_in_a_zone_counts_the_time_left_in_real_time_across_spring_forward():
    # Its occurrences and the clock in one zone were subtracted as wall times.
    new_york = ZoneInfo("America/New_York")
    rule = rrule("DAILY", dtstart=datetime(2026, 1, 1, 2, 30, tzinfo=new_york))
    last = datetime(2026, 3, 8, 1, 8, tzinfo=new_york)
    now = datetime(2026, 3, 8, 3, 8, tzinfo=new_york)  # 07:08 UTC; 02:30 EST does not exist: 07:30 UTC
    rule.nowfun = lambda: now
    assert rule.remaining_estimate(last) == timedelta(minutes=22)
    assert rule.is_due(last) == (False, 22 * 60)


def test_a_clocked_run_in_a_zone_counts_the_time_left_in_real_time_across_a_change():
    berlin = ZoneInfo("Europe/Berlin")
    once = clocked(datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=berlin))  # 01:30 UTC
    now = datetime(2026, 10, 25, 2, 40, fold=0, tzinfo=berlin)  # 00:40 UTC
    once.nowfun = lambda: now
    assert once.remaining_estimate(None) == timedelta(minutes=50)
    assert once.remaining_estimate(datetime(2026, 10, 25, 2, 35, fold=1, tzinfo=berlin)) is None  # ran
    assert once.is_due(datetime(2026, 3, 1, tzinfo=berlin)) == (False, 50 * 60)


def test_a_relative_daily_interval_rounds_to_midnight_utc_as_beat_does_whatever_the_zone_of_last_run_at():
    daily = loads('{"__type__": "interval", "every": 86400, "relative": true}')
    last = datetime(2026, 6, 1, 20, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 18:00 UTC
    daily.nowfun = lambda: last
    assert last + daily.remaining_estimate(last) == next_slot(daily, last) == datetime(2026, 6, 2, tzinfo=UTC)


def test_celerys_own_schedules_in_an_entry_answer_as_beat_does_before_they_are_stored():
    # As written in beat_schedule or a RedBeatSchedulerEntry: Celery's types, not yet read back from Redis.
    app = APPS["Europe/Berlin"]
    daily = RedBeatSchedulerEntry("d", "t", celery_interval(timedelta(days=1), relative=True, app=app), app=app)
    hourly = RedBeatSchedulerEntry("h", "t", celery_crontab(minute=0, app=app), app=app)
    assert type(daily.schedule).__module__ == type(hourly.schedule).__module__ == "redbeat.schedules"
    last = datetime(2026, 6, 1, 20, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 18:00 UTC
    daily.schedule.nowfun = lambda: last
    assert last + daily.schedule.remaining_estimate(last) == datetime(2026, 6, 2, tzinfo=UTC)
    assert daily.schedule == celery_interval(timedelta(days=1), relative=True)
