"""When an entry's slots fall: the next slot after an instant, in the entry's zone.

Wall-clock schedules (crontab, and rrule with a time zone) are evaluated in
local time and turned into instants with these rules for daylight-saving
changes, as Vixie cron does:

- a local time that does not exist (spring forward) runs once, at the first
  valid instant after it (the end of the gap);
- a local time that happens twice (fall back) runs once, at its first
  occurrence;
- except for expressions that run every hour (crontab hour ``*``, rrule
  ``HOURLY`` or finer without ``byhour``): they follow elapsed time, so they
  neither skip nor repeat a real hour. A wall time inside a gap does not
  exist for them, and a repeated wall time runs at both occurrences.

Every instant is a UTC datetime.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from itertools import product

from celery.schedules import BaseSchedule, crontab, schedule

UTC = timezone.utc
# How far ahead a wall-clock schedule is searched for its next slot: a
# crontab like "Feb 29 on a Monday" recurs within 28 years.
MAX_SEARCH_DAYS = 366 * 29

__all__ = ["next_slot", "resolve_wall_time", "next_cron_slot", "zone_of", "first_instant_after",
           "earliest_wall_after"]


def zone_of(sched: BaseSchedule) -> tzinfo:
    """The zone a schedule's wall-clock times are in: its own, else Celery's ``timezone``."""
    return getattr(sched, "zone", None) or sched.tz


def resolve_wall_time(wall: datetime, zone: tzinfo, every_hour: bool) -> list[datetime]:
    """The UTC instants at which the naive local time ``wall`` runs in ``zone``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) != wall:  # in a gap: does not exist
        return [] if every_hour else [_gap_end(wall, zone, min(first, second), max(first, second))]
    if first != second and every_hour:  # happens twice
        return [first, second]
    return [first]


def _gap_end(wall: datetime, zone: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first instant whose local time is past ``wall`` (the transition ending the gap)."""
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def next_cron_slot(cron: crontab, after: datetime, zone: tzinfo) -> datetime | None:
    """The first slot of ``cron`` strictly after the instant ``after``, in ``zone``."""
    every_hour = len(cron.hour) == 24
    reference = after.astimezone(zone).replace(tzinfo=None)
    local_start = reference.date() - timedelta(days=1)
    hours, minutes = sorted(cron.hour), sorted(cron.minute)
    for offset in range(MAX_SEARCH_DAYS):
        day = local_start + timedelta(days=offset)
        if not _cron_matches_day(cron, day):
            continue
        walls = (datetime.combine(day, time(hour, minute)) for hour, minute in product(hours, minutes))
        offsets = _offsets_around(zone, day)
        if offsets[0] == offsets[1]:
            # No DST change near this day: local time maps one to one onto instants.
            wall = _first_wall_after(day, hours, minutes, reference)
            if wall is not None:
                return wall.replace(tzinfo=zone).astimezone(UTC)
            continue
        slot = _first_after(walls, after, zone, every_hour, offsets)
        if slot is not None:
            return slot
    return None


def _first_wall_after(day: date, hours: list[int], minutes: list[int], reference: datetime) -> datetime | None:
    """The first of ``day``'s wall times (hours x minutes, sorted) later than ``reference``."""
    if day > reference.date():
        return datetime.combine(day, time(hours[0], minutes[0]))
    if day < reference.date():
        return None
    for hour in hours[bisect_left(hours, reference.hour):]:
        if hour > reference.hour:
            return datetime.combine(day, time(hour, minutes[0]))
        later = bisect_right(minutes, reference.minute)
        if later < len(minutes):
            return datetime.combine(day, time(hour, minutes[later]))
    return None


def first_instant_after(walls: Iterable[datetime], after: datetime, zone: tzinfo,
                        every_hour: bool) -> datetime | None:
    """The earliest instant after ``after`` among local times ``walls`` (in order)."""
    day = after.astimezone(zone).date()
    start, end = _offsets_around(zone, day - timedelta(days=1)), _offsets_around(zone, day + timedelta(days=1))
    offsets = (min(start + end), max(start + end))
    return _first_after(walls, after, zone, every_hour, offsets)


def earliest_wall_after(moment: datetime, zone: tzinfo) -> datetime:
    """The naive local time in ``zone`` before which no wall time can run after
    the instant ``moment``, whatever DST does around it: a wall time ``w`` runs
    at ``w`` minus the zone's offset, so at most at ``w - min(offset)``."""
    day = moment.astimezone(zone).date()
    offsets = _offsets_around(zone, day - timedelta(days=1)) + _offsets_around(zone, day + timedelta(days=1))
    return (moment.astimezone(UTC) + min(offsets)).replace(tzinfo=None)


def _offsets_around(zone: tzinfo, day: date) -> tuple[timedelta, timedelta]:
    """``zone``'s UTC offsets 3 hours before ``day`` starts and 3 hours after it ends."""
    start = datetime.combine(day, time()) - timedelta(hours=3)
    end = datetime.combine(day, time()) + timedelta(hours=27)
    before, after = start.replace(tzinfo=zone).utcoffset(), end.replace(tzinfo=zone).utcoffset()
    assert before is not None and after is not None  # an attached zone always gives an offset
    return before, after


def _cron_matches_day(cron: crontab, day: date) -> bool:
    # Celery numbers weekdays from Sunday = 0, and requires both day fields to match.
    return (day.month in cron.month_of_year and day.day in cron.day_of_month
            and (day.weekday() + 1) % 7 in cron.day_of_week)


def _first_after(walls: Iterable[datetime], after: datetime, zone: tzinfo, every_hour: bool,
                 offsets: tuple[timedelta, timedelta]) -> datetime | None:
    """The earliest instant of these local times (in order) that is after ``after``.

    ``offsets`` are the zone's UTC offsets around the change: a wall time
    ``w`` runs between ``w - max(offsets)`` and ``w - min(offsets)`` (UTC).
    """
    low, high = min(offsets), max(offsets)
    after_naive = after.replace(tzinfo=None)
    found = None
    for wall in walls:
        if wall - low <= after_naive:  # every instant of it is at or before ``after``
            continue
        if found is not None and wall - high > found.replace(tzinfo=None):
            break  # this and later walls run after what we have
        for instant in resolve_wall_time(wall, zone, every_hour):
            if instant > after and (found is None or instant < found):
                found = instant
    return found


def next_slot(sched: BaseSchedule, after: datetime) -> datetime | None:
    """The first slot of ``sched`` strictly after the instant ``after`` (None: no more).

    Intervals count from ``after``; wall-clock schedules are evaluated in
    their zone with the daylight-saving rules above; other schedules
    (Celery's solar, custom ones) answer through ``remaining_estimate``.
    """
    after = after.astimezone(UTC) if after.tzinfo else after.replace(tzinfo=UTC)
    if isinstance(sched, crontab):
        return next_cron_slot(sched, after, zone_of(sched))
    wall_clock_next = getattr(sched, "next_slot_after", None)
    if wall_clock_next is not None:
        slot = wall_clock_next(after)
        return None if slot is None else slot.astimezone(UTC)
    if isinstance(sched, schedule) and not sched.relative:
        return after + sched.run_every
    return _estimated_slot(sched, after)


def _estimated_slot(sched: BaseSchedule, after: datetime) -> datetime | None:
    # Celery's schedules read the clock themselves; pinning it to ``after``
    # makes the answer depend on ``after`` alone.
    saved = sched.nowfun
    sched.nowfun = lambda: after
    try:
        remaining = sched.remaining_estimate(after)
    finally:
        sched.nowfun = saved
    if remaining is None:
        return None
    slot = after + remaining
    return slot if slot > after else after + timedelta(seconds=1)
