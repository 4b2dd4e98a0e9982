"""Unit tests of wall-clock slots across real daylight-saving transitions
(America/New_York, Europe/London, Australia/Lord_Howe with its 30-minute
shift), for the years 2025 to 2027."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from redbeat import schedules
from redbeat.schedules import ScheduleTooCostlyError, crontab, rrule
from redbeat.slots import next_slot, resolve_wall_time

UTC = timezone.utc
ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe"]
YEARS = [2025, 2026, 2027]


def transitions(zone_name: str, year: int) -> list[tuple[datetime, timedelta]]:
    """(UTC instant, offset change) of each DST transition of the year, found by scanning."""
    zone = ZoneInfo(zone_name)
    found = []
    instant = datetime(year, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=15)
    while instant.year == year:
        before, after = instant.astimezone(zone).utcoffset(), (instant + step).astimezone(zone).utcoffset()
        if before != after:
            found.append((instant + step, after - before))
        instant += step
    return found


def slots_between(sched, start: datetime, end: datetime) -> list[datetime]:
    result, slot = [], start
    while True:
        slot = next_slot(sched, slot)
        if slot is None or slot > end:
            return result
        result.append(slot)


def exists(instant: datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone).replace(tzinfo=None)
    return local.replace(tzinfo=zone).astimezone(UTC) == instant


CASES = [(zone, year) for zone in ZONES for year in YEARS]


@pytest.mark.parametrize("zone_name, year", CASES)
def test_every_year_has_a_spring_and_a_fall_transition(zone_name, year):
    changes = sorted(change for _, change in transitions(zone_name, year))
    shift = timedelta(minutes=30) if zone_name == "Australia/Lord_Howe" else timedelta(hours=1)
    assert changes == [-shift, shift]


@pytest.mark.parametrize("zone_name, year", CASES)
def test_a_time_skipped_by_spring_forward_runs_once_at_the_end_of_the_gap(zone_name, year):
    zone = ZoneInfo(zone_name)
    [(at, shift)] = [(at, change) for at, change in transitions(zone_name, year) if change > timedelta(0)]
    gap_start = (at - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None) + timedelta(seconds=1)
    missing = gap_start + shift / 2  # a wall time inside the gap
    cron = crontab(minute=str(missing.minute), hour=str(missing.hour), timezone=zone_name)
    day_runs = slots_between(cron, at - timedelta(hours=12), at + timedelta(hours=12))
    assert day_runs == [at]  # once, at the first valid instant: the transition
    assert exists(at, zone)


@pytest.mark.parametrize("zone_name, year", CASES)
def test_a_time_repeated_by_fall_back_runs_once_at_its_first_occurrence(zone_name, year):
    zone = ZoneInfo(zone_name)
    [(at, shift)] = [(at, change) for at, change in transitions(zone_name, year) if change < timedelta(0)]
    repeated = (at + timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None)  # happens twice
    cron = crontab(minute=str(repeated.minute), hour=str(repeated.hour), timezone=zone_name)
    day_runs = slots_between(cron, at - timedelta(hours=12), at + timedelta(hours=12))
    first = repeated.replace(tzinfo=zone, fold=0).astimezone(UTC)
    assert day_runs == [first]
    assert first < at


@pytest.mark.parametrize("zone_name, year", CASES)
@pytest.mark.parametrize("expression, period", [("0 * * * *", 3600), ("* * * * *", 60), ("*/15 * * * *", 900)])
def test_hourly_and_finer_expressions_neither_skip_nor_double_an_hour(zone_name, year, expression, period):
    minute, hour, dom, month, dow = expression.split()
    cron = crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow,
                   timezone=zone_name)
    for at, _ in transitions(zone_name, year):
        runs = slots_between(cron, at - timedelta(hours=4), at + timedelta(hours=4))
        gaps = {(b - a).total_seconds() for a, b in zip(runs, runs[1:])}
        if zone_name == "Australia/Lord_Howe" and period == 3600:
            # On the hour while the clock moves by 30 minutes: 1 or 1.5 real hours apart.
            assert gaps <= {3600, 5400}
        else:
            assert gaps == {period}, (at, sorted(gaps))


@pytest.mark.parametrize("zone_name, year", CASES)
def test_a_daily_time_runs_exactly_once_every_local_day(zone_name, year):
    zone = ZoneInfo(zone_name)
    cron = crontab(minute="30", hour="2", timezone=zone_name)
    start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC)
    runs = slots_between(cron, start, datetime(year, 12, 31, 12, tzinfo=zone).astimezone(UTC))
    days = [run.astimezone(zone).date() for run in runs]
    assert len(days) == len(set(days)) == (date(year, 12, 31) - date(year, 1, 1)).days + 1
    assert all(exists(run, zone) for run in runs)


def test_crontab_without_its_own_zone_follows_celerys_timezone_setting():
    from celery import Celery
    from celery.schedules import crontab as celery_crontab

    app = Celery(set_as_current=False)
    app.conf.timezone = "Europe/Paris"
    cron = celery_crontab(minute="0", hour="9", app=app)
    slot = next_slot(cron, datetime(2026, 7, 1, tzinfo=UTC))
    assert slot == datetime(2026, 7, 1, 7, tzinfo=UTC)  # 09:00 CEST


def test_rrule_in_a_zone_keeps_its_wall_time_across_dst():
    rule = rrule("DAILY", dtstart=datetime(2026, 3, 1, 14, 0, tzinfo=UTC), byhour=[9], byminute=[0],
                 bysecond=[0], timezone="America/New_York")
    before = next_slot(rule, datetime(2026, 3, 5, tzinfo=UTC))
    after = next_slot(rule, datetime(2026, 3, 10, tzinfo=UTC))
    assert before.astimezone(ZoneInfo("America/New_York")).hour == 9
    assert after.astimezone(ZoneInfo("America/New_York")).hour == 9
    assert (before.hour, after.hour) == (14, 13)  # EST, then EDT


def test_rrule_without_a_zone_keeps_celery_redbeat_2_behaviour():
    start = datetime(2026, 3, 1, 9, tzinfo=timezone(timedelta(hours=-5)))
    rule = rrule("DAILY", dtstart=start)
    assert next_slot(rule, datetime(2026, 3, 20, tzinfo=UTC)).hour == 14  # the fixed offset holds


def test_resolving_wall_times():
    zone = ZoneInfo("America/New_York")
    assert resolve_wall_time(datetime(2026, 3, 8, 2, 30), zone, every_hour=True) == []
    assert resolve_wall_time(datetime(2026, 3, 8, 2, 30), zone, every_hour=False) == [
        datetime(2026, 3, 8, 7, tzinfo=UTC)]
    assert resolve_wall_time(datetime(2026, 11, 1, 1, 30), zone, every_hour=True) == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)]
    assert resolve_wall_time(datetime(2026, 11, 1, 1, 30), zone, every_hour=False) == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]


FIELDS = {
    "minute": st.sampled_from(["*", "0", "30", "*/15", "5,35", "59", "0-10/5"]),
    "hour": st.sampled_from(["*", "0", "1", "2", "3", "*/2", "1-3", "23"]),
    "day_of_week": st.sampled_from(["*", "0", "1-5", "6"]),
}


@settings(max_examples=60, deadline=None)
@given(minute=FIELDS["minute"], hour=FIELDS["hour"], day_of_week=FIELDS["day_of_week"],
       zone_name=st.sampled_from(ZONES), year=st.sampled_from(YEARS), which=st.sampled_from([0, 1]))
def test_preview_never_yields_a_missing_or_repeated_time_and_always_increases(
        minute, hour, day_of_week, zone_name, year, which):
    zone = ZoneInfo(zone_name)
    at, _ = transitions(zone_name, year)[which]
    cron = crontab(minute=minute, hour=hour, day_of_week=day_of_week, timezone=zone_name)
    runs = slots_between(cron, at - timedelta(days=2), at + timedelta(days=2))
    assert all(b > a for a, b in zip(runs, runs[1:]))
    assert all(exists(run, zone) for run in runs)
    if hour != "*":  # a fixed wall time runs at most once a local day and hour
        locals_ = [run.astimezone(zone).replace(tzinfo=None) for run in runs]
        assert len(locals_) == len(set(locals_))


def test_relative_interval_rounds_to_its_resolution_as_celery_documents():
    from celery.schedules import schedule

    hourly = schedule(timedelta(hours=1), relative=True)
    slot = next_slot(hourly, datetime(2026, 6, 1, 10, 17, 42, tzinfo=UTC))
    assert slot == datetime(2026, 6, 1, 11, 0, tzinfo=UTC)


def test_solar_slots_are_celerys_solar_events():
    from celery.schedules import solar

    sunrise = solar("sunrise", 51.5, -0.12)
    after = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    slot = next_slot(sunrise, after)
    assert datetime(2026, 6, 2, 3, 30, tzinfo=UTC) < slot < datetime(2026, 6, 2, 4, 0, tzinfo=UTC)  # ~04:43 BST
    assert next_slot(sunrise, slot) > slot + timedelta(hours=23)


@pytest.mark.parametrize("zone_name, year", CASES)
def test_an_rrule_finer_than_hourly_in_a_zone_keeps_elapsed_time_across_dst(zone_name, year):
    rule = rrule("MINUTELY", interval=15, dtstart=datetime(year, 1, 1, tzinfo=UTC), timezone=zone_name)
    for at, _ in transitions(zone_name, year):
        runs = slots_between(rule, at - timedelta(hours=3), at + timedelta(hours=3))
        assert {(b - a).total_seconds() for a, b in zip(runs, runs[1:])} == {900}, at


# -- rules that started long ago ----------------------------------------------------------

LATTICE_FREQS = ["WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY"]
STEP_SECONDS = {"WEEKLY": 604800, "DAILY": 86400, "HOURLY": 3600, "MINUTELY": 60, "SECONDLY": 1}


@st.composite
def old_rules(draw):
    freq = draw(st.sampled_from(LATTICE_FREQS))
    interval = draw(st.integers(1, 5))
    # Far enough back that the rule is restarted, near enough that plain dateutil answers quickly.
    periods_back = draw(st.integers(0, 4000))
    now = datetime(2026, 7, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 86400 * 30)))
    dtstart = now - timedelta(seconds=periods_back * interval * STEP_SECONDS[freq] + draw(st.integers(0, 3600)))
    dtstart = dtstart.astimezone(draw(st.sampled_from([UTC, ZoneInfo("Europe/Paris")])))  # its own clock, DST or not
    fields = {}
    if draw(st.booleans()):
        fields["byminute"] = draw(st.lists(st.integers(0, 59), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        fields["byhour"] = draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        fields["byweekday"] = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        fields["bysetpos"] = draw(st.sampled_from([1, -1]))
    if draw(st.booleans()):
        # Around the number of occurrences since the start: some counts are used up, some not.
        fields["count"] = draw(st.integers(0, periods_back * 3 + 10))
    if draw(st.integers(0, 4)) == 0:
        fields["bymonth"] = draw(st.lists(st.integers(1, 12), min_size=1, max_size=6, unique=True))
    zone = draw(st.sampled_from([None, "Europe/London", "America/New_York"]))
    try:
        return rrule(freq, dtstart=dtstart, interval=interval, timezone=zone, **fields), now
    except ValueError:  # dateutil refuses rules that never occur
        assume(False)


@settings(max_examples=150, deadline=None)
@given(old_rules())
def test_a_rule_that_started_long_ago_has_the_same_next_slots_as_from_its_start(rule_and_now):
    rule, now = rule_and_now
    def next_slots() -> list:
        slots = [rule.next_after(now)]
        while slots[-1] is not None and len(slots) < 4:
            slots.append(rule.next_after(slots[-1]))
        return slots

    try:
        restarted = next_slots()
    except ScheduleTooCostlyError:
        assume(False)  # replayed from its start, and too long for that (tested below)
    # dateutil from the rule's real start, count included, without bounds
    rule.restarted_near = lambda reference: (rule._uncounted, rule.count)
    with mock.patch.object(schedules, "MAX_SEARCH_STEPS", 10**9), \
            mock.patch.object(schedules, "MAX_OCCURRENCES", 10**9):
        assert restarted == next_slots()


def test_an_hourly_rule_from_years_ago_is_restarted_near_now():
    rule = rrule("HOURLY", dtstart=datetime(2015, 3, 7, 10, 15, tzinfo=UTC), byminute=[0, 30])
    now = datetime(2026, 7, 1, 12, 40, tzinfo=UTC)
    assert rule.restarted_near(now)[0]._dtstart > now - timedelta(hours=3)
    assert rule.next_after(now) == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)


def test_a_counted_rule_is_restarted_with_the_count_it_has_left():
    # One occurrence per second since 2023: 10**6 of them ended in January 2023.
    start = datetime(2023, 1, 1, tzinfo=UTC)
    ended = rrule("SECONDLY", dtstart=start, count=10**6)
    assert ended.next_after(datetime(2026, 7, 1, tzinfo=UTC)) is None
    assert ended.next_after(start + timedelta(seconds=10**6 - 2)) == start + timedelta(seconds=10**6 - 1)
    assert ended.next_after(start + timedelta(seconds=10**6 - 1)) is None
    running = rrule("SECONDLY", dtstart=datetime(1970, 1, 1, tzinfo=UTC), count=10**12)
    now = datetime(2026, 7, 1, 12, 0, 0, 500000, tzinfo=UTC)
    rule, left = running.restarted_near(now)
    assert rule._dtstart > now - timedelta(seconds=3)
    assert left == 10**12 - (rule._dtstart - running.dtstart).total_seconds()
    assert running.next_after(now) == datetime(2026, 7, 1, 12, 0, 1, tzinfo=UTC)
    # Hourly on weekdays repeats weekly: restarted by whole weeks, 120 occurrences each.
    weekdays = rrule("HOURLY", dtstart=datetime(2024, 1, 1, tzinfo=UTC), byweekday=[0, 1, 2, 3, 4], count=10**6)
    assert weekdays.repeat_period() == timedelta(weeks=1)
    assert weekdays.next_after(datetime(2026, 7, 4, 12, tzinfo=UTC)) == datetime(2026, 7, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize("fields", [
    {"freq": "SECONDLY", "count": 10**12, "dtstart": datetime(1970, 1, 1, tzinfo=UTC)},
    {"freq": "SECONDLY", "count": 10**6, "dtstart": datetime(2023, 1, 1, tzinfo=UTC)},
    {"freq": "MINUTELY", "dtstart": datetime(1970, 1, 1, tzinfo=UTC), "timezone": "Europe/Paris"},
    {"freq": "MONTHLY", "bymonthday": 1, "byhour": list(range(24)), "byminute": list(range(60)),
     "dtstart": datetime(1970, 1, 1, tzinfo=UTC)},
    {"freq": "DAILY", "bymonth": 2, "bymonthday": 29, "byweekday": 0, "dtstart": datetime(2000, 1, 1, tzinfo=UTC)},
])
def test_legitimate_rules_that_started_long_ago_are_evaluated(fields):
    rule = rrule(**fields)
    rule.next_after(datetime(2026, 12, 2, 13, 0, 0, 500000, tzinfo=UTC))  # no ScheduleTooCostlyError


@pytest.mark.parametrize("fields, words", [
    ({"freq": "DAILY", "bymonth": 2, "bymonthday": 30}, "steps"),  # February 30
    ({"freq": "YEARLY", "bymonth": 4, "bymonthday": 31}, "never matches"),
    ({"freq": "SECONDLY", "bymonth": 2, "bymonthday": 30, "count": 5}, "steps"),
    ({"freq": "MINUTELY", "bymonth": 2, "count": 10**9}, "use until instead of count"),
    ({"freq": "DAILY", "byhour": list(range(24)), "byminute": list(range(60)), "bysecond": list(range(60))},
     "steps|occurrences"),
])
def test_rules_too_costly_to_evaluate_are_refused_with_a_reason(fields, words):
    rule = rrule(dtstart=datetime(1970, 1, 1, tzinfo=UTC), **fields)
    with pytest.raises(ScheduleTooCostlyError, match=words):
        rule.next_after(datetime(2026, 12, 2, 13, tzinfo=UTC))


@pytest.mark.parametrize("fields, words", [
    ({"byweekday": 9}, "weekdays 0"),
    ({"byhour": 24}, "byhour values must be whole numbers from 0 to 23"),
    ({"byminute": [0, 61]}, "byminute"),
    ({"bysetpos": 0}, "not 0"),
    ({"bymonth": 13}, "bymonth"),
    ({"bysecond": True}, "bysecond"),
    ({"count": -1}, "count"),
    ({"wkst": 7}, "wkst"),
])
def test_rule_fields_that_could_never_match_are_refused(fields, words):
    with pytest.raises(ValueError, match=words):
        rrule("DAILY", dtstart=datetime(2026, 1, 1, tzinfo=UTC), **fields)


def test_a_minutely_rule_started_in_a_dst_zone_keeps_every_minute_after_a_fall_back():
    # dtstart in a zone with DST but no timezone= argument: dateutil steps in that zone's wall clock.
    rule = rrule("MINUTELY", dtstart=datetime(2023, 10, 1, tzinfo=ZoneInfo("Europe/Paris")))
    moment = datetime(2023, 11, 15, 12, 0, 0, 500000, tzinfo=UTC)
    slots = [rule.next_after(moment)]
    for _ in range(3):
        slots.append(rule.next_after(slots[-1]))
    assert slots[0] == rule.rrule.after(moment)
    assert [slot.astimezone(UTC) for slot in slots] == [datetime(2023, 11, 15, 12, minute, tzinfo=UTC)
                                                        for minute in range(1, 5)]


def test_a_crontab_answers_celerys_interface_with_beats_next_slot_across_dst():
    # Hourly at :00 in Paris; 02:00 CEST is 00:00 UTC on the day of the autumn change.
    # The wall hour 02:00 happens twice: an hourly cron follows elapsed time, so beat runs
    # at 01:00 UTC (02:00 CET), an hour later, where Celery's own arithmetic says otherwise.
    last = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    cron = crontab(minute=0, timezone="Europe/Paris", nowfun=lambda: last)
    assert next_slot(cron, last) == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert cron.remaining_estimate(last) == timedelta(hours=1)
    assert cron.is_due(last) == (False, 3600)


def test_entries_and_decoded_definitions_use_redbeats_crontab(fake_app):
    from celery.schedules import crontab as celery_crontab

    from redbeat import RedBeatSchedulerEntry
    from redbeat.decoder import loads

    entry = RedBeatSchedulerEntry("cron", "tasks.t", celery_crontab(minute="*/5"), app=fake_app)
    assert type(entry.schedule) is crontab and entry.schedule == celery_crontab(minute="*/5")
    assert type(loads('{"__type__": "crontab", "minute": "5"}')) is crontab


@pytest.mark.parametrize("fields", [
    {"freq": "MINUTELY", "count": 10**6, "byweekday": [0, 1, 2, 3, 4]},
    {"freq": "SECONDLY", "count": 10**6, "byhour": list(range(9, 18))},
    {"freq": "SECONDLY", "interval": 10, "count": 10**6, "byweekday": [0, 1, 2, 3, 4]},
    {"freq": "MINUTELY", "count": 10**6, "byweekday": [0, 1, 2, 3, 4, 5, 6], "timezone": "Europe/Paris"},
])
@pytest.mark.parametrize("later", [timedelta(hours=16), timedelta(hours=17), timedelta(days=1),
                                   timedelta(days=30), timedelta(days=365)])
def test_a_counted_rule_with_filters_answers_as_dateutil_does_however_long_it_ran(fields, later):
    start = datetime(2025, 1, 6, tzinfo=UTC)
    rule = rrule(dtstart=start, **fields)
    moment = start + later + timedelta(seconds=0.5)
    if rule.zone is None:
        expected = rule.rrule.after(moment)
    else:
        with mock.patch.object(schedules, "MAX_SEARCH_STEPS", 10**9), \
                mock.patch.object(schedules, "MAX_OCCURRENCES", 10**9):
            rule.restarted_near = lambda reference: (rule._uncounted, rule.count)
            expected = rule.next_after(moment)
        rule = rrule(dtstart=start, **fields)
    assert rule.next_after(moment) == expected


def test_a_counted_rule_replayed_from_its_start_is_bounded_by_its_occurrences_not_its_steps():
    # Every half hour in working hours, March to October: calendar filters, so
    # the count is replayed from 2023; over 11,000 occurrences lie behind.
    rule = rrule("MINUTELY", interval=30, byhour=list(range(8, 18)), bymonth=list(range(3, 11)), count=100_000,
                 dtstart=datetime(2023, 3, 1, tzinfo=UTC))
    assert rule.next_after(datetime(2025, 6, 1, tzinfo=UTC)) == datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def test_a_rule_dateutil_fails_on_is_refused_with_a_reason():
    from dateutil.rrule import MO
    rule = rrule("YEARLY", bymonth=[2], byweekday=[MO(+53)], dtstart=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="rrule cannot be evaluated: IndexError"):
        rule.next_after(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_zero_month_day_is_taken_as_dateutil_took_it():
    rule = rrule("MONTHLY", bymonthday=[0, 15], byhour=[9], dtstart=datetime(2026, 1, 1, tzinfo=UTC))
    assert rule.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 15, 9, tzinfo=UTC)
