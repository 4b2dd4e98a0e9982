"""Schedule types that Celery itself does not ship, usable wherever a Celery
schedule is (in ``beat_schedule`` and in RedBeat entries):

- ``rrule``: an RFC 5545 recurrence rule (python-dateutil), optionally in a
  time zone of its own;
- ``crontab``: Celery's crontab with a time zone of its own;
- ``clocked``: one run at a given instant;
- ``interval``: Celery's interval schedule, answering in UTC as beat does.

Each answers Celery's schedule interface (``remaining_estimate``, ``is_due``)
with the slot beat dispatches (slots.py), so that whoever asks the schedule
(user code, monitoring) hears what beat does.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import dateutil.rrule
from celery import schedules as celery_schedules
from celery.schedules import BaseSchedule, schedstate
from dateutil.relativedelta import relativedelta

from .legacy import Kept, legacy_lookup
from .slots import MAX_SEARCH_DAYS, earliest_wall_after, first_instant_after, next_cron_slot

__all__ = ["rrule", "crontab", "clocked", "interval", "ScheduleTooCostlyError"]

UTC = timezone.utc  # the rrule and crontab arguments named "timezone" shadow the module name
# The period of each frequency whose occurrences repeat every ``interval`` of
# it in the rule's own clock (months and years vary in length, so they do not).
LATTICE_STEPS = {
    dateutil.rrule.WEEKLY: timedelta(weeks=1),
    dateutil.rrule.DAILY: timedelta(days=1),
    dateutil.rrule.HOURLY: timedelta(hours=1),
    dateutil.rrule.MINUTELY: timedelta(minutes=1),
    dateutil.rrule.SECONDLY: timedelta(seconds=1),
}
# A rule whose start is more than this many periods behind is restarted closer.
REANCHOR_AFTER = 1000
# The most occurrences dateutil may produce to find one next slot, those
# before the moment asked about included. Beat evaluates a rule at every run
# of its entry, for every entry due: past this, the rule is too costly and
# its entry is parked rather than holding up the whole schedule.
MAX_OCCURRENCES = 100_000
# The most Python calls dateutil may make while looking for one next
# occurrence: one or more per day it steps through (a yearly rule makes a few
# per year, and stops at year 9999 within a second). dateutil has no bound of
# its own: a daily or finer rule that never matches ("February 30") is
# searched day by day to year 9999 without yielding, for minutes. Counting
# calls, not seconds, gives every beat the same verdict on the same rule,
# however loaded its machine.
MAX_SEARCH_STEPS = 50_000
# The values each "by" field of a rule accepts: (lowest, highest, whether 0 is
# one). A 0 among month days, year days and week numbers matches nothing, but
# dateutil (and so celery-redbeat 2.x) takes it: stored rules may hold one.
BY_FIELD_RANGES = {
    "bysetpos": (-366, 366, False),
    "bymonth": (1, 12, True),
    "bymonthday": (-31, 31, True),
    "byyearday": (-366, 366, True),
    "byweekno": (-53, 53, True),
    "byeaster": (-366, 366, True),
    "byhour": (0, 23, True),
    "byminute": (0, 59, True),
    "bysecond": (0, 59, True),
}
# The cycle over which each time filter repeats.
FILTER_CYCLES = {
    "byweekday": timedelta(weeks=1),
    "byhour": timedelta(days=1),
    "byminute": timedelta(hours=1),
    "bysecond": timedelta(minutes=1),
}
# The filters each frequency spreads inside its periods; the other filters keep some periods only.
SPREADING_FIELDS = {
    dateutil.rrule.WEEKLY: ("byweekday", "byhour", "byminute", "bysecond"),
    dateutil.rrule.DAILY: ("byhour", "byminute", "bysecond"),
    dateutil.rrule.HOURLY: ("byminute", "bysecond"),
    dateutil.rrule.MINUTELY: ("bysecond",),
    dateutil.rrule.SECONDLY: (),
}
# Filters by the calendar (months, years, Easter) never repeat in whole weeks or days.
CALENDAR_FILTERS = ("bymonth", "bymonthday", "byyearday", "byweekno", "byeaster")


class ScheduleTooCostlyError(ValueError):
    """A schedule whose next slot cannot be found with a bounded amount of work."""


class rrule(BaseSchedule):  # noqa: N801 - the name is part of the public import path
    """Runs at the occurrences of a dateutil recurrence rule.

    ``freq`` is a dateutil constant or its name (``"DAILY"``). ``dtstart``
    anchors the rule and defaults to the moment the schedule is built; naive
    datetimes are taken as UTC.
    """

    FREQ_MAP = {
        "YEARLY": dateutil.rrule.YEARLY,
        "MONTHLY": dateutil.rrule.MONTHLY,
        "WEEKLY": dateutil.rrule.WEEKLY,
        "DAILY": dateutil.rrule.DAILY,
        "HOURLY": dateutil.rrule.HOURLY,
        "MINUTELY": dateutil.rrule.MINUTELY,
        "SECONDLY": dateutil.rrule.SECONDLY,
    }
    # Stored in the data format under these names, besides freq/dtstart/until.
    RULE_FIELDS = (
        "interval", "wkst", "count", "bysetpos", "bymonth", "bymonthday", "byyearday",
        "byeaster", "byweekno", "byweekday", "byhour", "byminute", "bysecond",
    )

    def __init__(
        self,
        freq: int | str,
        dtstart: datetime | None = None,
        interval: int = 1,
        wkst: Any = None,
        count: int | None = None,
        until: datetime | None = None,
        bysetpos: Any = None,
        bymonth: Any = None,
        bymonthday: Any = None,
        byyearday: Any = None,
        byeaster: Any = None,
        byweekno: Any = None,
        byweekday: Any = None,
        byhour: Any = None,
        byminute: Any = None,
        bysecond: Any = None,
        timezone: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.timezone = timezone
        self.zone = ZoneInfo(timezone) if timezone else None
        self.freq = self._checked_freq(freq)
        _check_interval_and_count(interval, count)
        _check_by_fields(byweekday, wkst, bysetpos=bysetpos, bymonth=bymonth, bymonthday=bymonthday,
                         byyearday=byyearday, byweekno=byweekno, byeaster=byeaster, byhour=byhour,
                         byminute=byminute, bysecond=bysecond)
        self.dtstart = _aware(dtstart) if dtstart is not None else datetime.now(UTC)
        self.until = _aware(until) if until is not None else None
        self.interval = interval
        self.wkst = wkst
        self.count = count
        self.bysetpos = bysetpos
        self.bymonth = bymonth
        self.bymonthday = bymonthday
        self.byyearday = byyearday
        self.byeaster = byeaster
        self.byweekno = byweekno
        self.byweekday = byweekday
        self.byhour = byhour
        self.byminute = byminute
        self.bysecond = bysecond
        self.rrule, start = self._dateutil_rule()
        self._rule_start = start.replace(microsecond=0)  # as dateutil keeps it
        # Searched without its count, which occurrences_after keeps itself:
        # dateutil refuses a count together with the until that bounds a search.
        self._uncounted = self.rrule if count is None else self.rrule.replace(count=None)
        self._occurrences_per_period: int | None = None

    @classmethod
    def _checked_freq(cls, freq: int | str) -> int:
        """A dateutil frequency constant, from itself or its name."""
        if isinstance(freq, str):
            try:
                freq = cls.FREQ_MAP[freq.upper()]
            except KeyError:
                raise ValueError(f"unknown rrule freq {freq!r}") from None
        if freq not in cls.FREQ_MAP.values():
            raise ValueError(f"unknown rrule freq {freq!r}")
        return freq

    def _dateutil_rule(self) -> tuple[dateutil.rrule.rrule, datetime]:
        """The dateutil rule, and the start it counts from (in the zone's wall clock if it has one)."""
        if self.zone is None:
            # As in celery-redbeat 2.x: occurrences at dtstart's own UTC offset.
            start, until = self.dtstart, self.until
        else:
            # In the zone's wall clock; slots.py turns wall times into instants.
            start = self.dtstart.astimezone(self.zone).replace(tzinfo=None)
            until = self.until.astimezone(self.zone).replace(tzinfo=None) if self.until else None
        rule = dateutil.rrule.rrule(
            self.freq,  # type: ignore[arg-type]  # checked against FREQ_MAP; the stubs want a literal
            dtstart=start, until=until, **{name: getattr(self, name) for name in self.RULE_FIELDS},
        )
        return rule, start

    @property
    def every_hour(self) -> bool:
        """Whether the rule runs every hour, so follows elapsed time across DST changes."""
        return self.freq >= dateutil.rrule.HOURLY and self.byhour is None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment``, or None when the rule is over.

        Raises ScheduleTooCostlyError when that takes more than ``MAX_OCCURRENCES``
        occurrences, or when the rule has none within ``SEARCH_HORIZON``.
        """
        # In UTC: dateutil compares datetimes of one zone by their wall times, and slots.py reads instants in UTC.
        moment = _utc(moment)
        if self.zone is None:
            return next(self.occurrences_after(moment), None)
        # Occurrences are wall times in the zone: start from the earliest wall
        # time that DST nearby could still put after ``moment``, and let
        # slots.py pick the earliest instant among the walls around it.
        walls = self.occurrences_after(earliest_wall_after(moment, self.zone))
        return first_instant_after(walls, moment, self.zone, self.every_hour)

    def occurrences_after(self, reference: datetime) -> Iterator[datetime]:
        """dateutil's occurrences strictly after ``reference`` (in the rule's own
        clock), in order, found with a bounded amount of work."""
        rule, left = self.restarted_near(reference)
        produced = found = 0
        for occurrence in _search(rule, self._cost_hint):
            produced += 1
            if left is not None and produced > left:
                return  # its count is used up
            if produced > MAX_OCCURRENCES:
                raise ScheduleTooCostlyError(f"rrule needs more than {MAX_OCCURRENCES} occurrences to find its next "
                                             f"one after {reference.isoformat()}{self._cost_hint()}")
            if occurrence > reference:
                found += 1
                yield occurrence
        if not found and self.count is None and self.until is None:
            # Nothing ends it, yet dateutil found nothing up to year 9999:
            # say so rather than let the entry quietly finish.
            raise ScheduleTooCostlyError(f"rrule has no occurrence after {reference.isoformat()}: it never matches")

    def _cost_hint(self) -> str:
        if self.count is not None:
            return (": a rule with a count is counted from its dtstart, which costs more the further back it is; "
                    "use until instead of count, or a later dtstart")
        return ": does it ever match? (a coarser freq with by-fields costs less)"

    def restarted_near(self, reference: datetime) -> tuple[dateutil.rrule.rrule, int | None]:
        """The rule without its count, restarted shortly before ``reference`` (in
        the rule's own clock) where that leaves its occurrences unchanged, and
        how many occurrences its count leaves from that start (None: no count).

        dateutil walks every occurrence from the rule's start: an hourly rule
        that started years ago would take a good fraction of a second per
        lookup, for every entry, at every run. Restarting it a whole number of
        periods later keeps the same lattice of occurrences (and the fields
        dateutil derives from the start: its minute, hour, weekday). A count
        is carried over by arithmetic when the occurrences repeat (see
        ``repeat_period``); otherwise a counted rule is replayed from its start.
        """
        step = LATTICE_STEPS.get(self.freq)
        if step is None:
            return self._restarted_by_months(reference), self.count
        period = step * (self.interval or 1)
        if self.count is not None:
            repeat = self.repeat_period()
            if repeat is None:
                return self._uncounted, self.count
            period = repeat
        start = self._rule_start
        if start.tzinfo is not None:
            # dateutil steps in the start's own wall clock (a zone with DST
            # included): count the periods in that clock too.
            reference, start = reference.astimezone(start.tzinfo).replace(tzinfo=None), start.replace(tzinfo=None)
        # Two periods back when the period is a step of the rule; one when it is
        # the (longer) span a count repeats over, whose occurrences are replayed.
        behind = (reference - start) // period - (2 if self.count is None else 1)
        if reference - start < REANCHOR_AFTER * step or behind < 1:
            return self._uncounted, self.count
        left = None if self.count is None else self.count - behind * self._occurrences_in(period)
        return self._uncounted.replace(dtstart=self._rule_start + behind * period), left

    def _restarted_by_months(self, reference: datetime) -> dateutil.rrule.rrule:
        """A monthly or yearly rule without a count, restarted a whole number of
        periods before ``reference``. Only from a day of the month that every
        month has: dateutil takes the day of the month from the start."""
        start = self._rule_start
        if self.count is not None or start.day > 28:
            return self._uncounted
        months = (12 if self.freq == dateutil.rrule.YEARLY else 1) * (self.interval or 1)
        if start.tzinfo is not None:
            reference = reference.astimezone(start.tzinfo)
        behind = ((reference.year - start.year) * 12 + reference.month - start.month) // months - 2
        if behind < 2:
            return self._uncounted
        return self._uncounted.replace(dtstart=start + relativedelta(months=behind * months))

    def repeat_period(self) -> timedelta | None:
        """The span after which a daily or finer rule's occurrences repeat, so that
        every such span holds as many: its period, stretched to a whole number of
        the cycle of each filter it has (byhour on an HOURLY rule repeats
        daily). None for monthly and yearly rules and for calendar filters
        (months, month days, year days, weeks of the year, Easter)."""
        step = LATTICE_STEPS.get(self.freq)
        if step is None or any(getattr(self, name) not in (None, [], ()) for name in CALENDAR_FILTERS):
            return None
        seconds = int((step * (self.interval or 1)).total_seconds())
        for name, cycle in FILTER_CYCLES.items():
            if name not in SPREADING_FIELDS[self.freq] and getattr(self, name) not in (None, [], ()):
                seconds = math.lcm(seconds, int(cycle.total_seconds()))
        return timedelta(seconds=seconds)

    def _occurrences_in(self, period: timedelta) -> int:
        """How many occurrences one ``repeat_period`` of the rule holds."""
        if self._occurrences_per_period is None:
            # The second period is whole: the first may start mid-period.
            first = self._rule_start + period
            count = produced = 0
            for occurrence in _search(self._uncounted, self._cost_hint):
                if occurrence >= first + period:
                    break
                produced += 1
                if produced > MAX_OCCURRENCES:
                    raise ScheduleTooCostlyError(f"rrule has more than {MAX_OCCURRENCES} occurrences in "
                                                 f"two periods of {period}{self._cost_hint()}")
                count += occurrence >= first
            self._occurrences_per_period = count
        return self._occurrences_per_period

    next_slot_after = next_after

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        next_run = self.next_after(last_run_at)
        if next_run is None:
            return None
        return _utc(next_run) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at)
        if remaining is None:
            return schedstate(False, None)
        if remaining.total_seconds() > 0:
            return schedstate(False, remaining.total_seconds())
        following = self.remaining_estimate(self.now())
        return schedstate(True, max(following.total_seconds(), 0) if following else None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, rrule):
            return NotImplemented
        return self._arguments() == other._arguments()

    def __hash__(self) -> int:
        return hash(self.freq)

    def __reduce__(self) -> tuple:
        # The dateutil rule is rebuilt from the arguments rather than pickled.
        return (functools.partial(rrule, **self._arguments()), ())

    def _arguments(self) -> dict:
        return {"freq": self.freq, "dtstart": self.dtstart, "until": self.until, "timezone": self.timezone,
                **{name: getattr(self, name) for name in self.RULE_FIELDS}}

    def __repr__(self) -> str:
        return f"<rrule: {self.rrule!s}>".replace("\n", " ")


class crontab(celery_schedules.crontab):  # noqa: N801 - a drop-in for Celery's crontab
    """Celery's crontab, evaluated in ``timezone`` rather than Celery's ``timezone``
    setting, and answering Celery's schedule interface (``remaining_estimate``,
    hence ``is_due``) with beat's own next slot: Celery's arithmetic disagrees
    with beat around daylight-saving changes (an hourly cron at the autumn
    change in Europe), and whoever asks the schedule must hear what beat does.
    """

    def __init__(self, *args: Any, timezone: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timezone = timezone
        self.zone = ZoneInfo(timezone) if timezone else None

    @classmethod
    def from_celery(cls, cron: celery_schedules.crontab) -> crontab:
        """The same crontab as Celery's ``cron`` (its fields, app and clock)."""
        if isinstance(cron, cls):
            return cron
        ours = cls(cron._orig_minute, cron._orig_hour, cron._orig_day_of_week, cron._orig_day_of_month,
                   cron._orig_month_of_year, **cron._orig_kwargs)
        ours.nowfun, ours._app = cron.nowfun, cron._app
        return ours

    @property
    def tz(self) -> Any:  # what Celery's own crontab code evaluates in
        return self.zone or super().tz

    def next_slot_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after ``moment``, by slots.py's daylight-saving rules."""
        return next_cron_slot(self, _utc(moment), self.tz)

    def remaining_estimate(self, last_run_at: datetime, ffwd: Any = None) -> timedelta:
        slot = self.next_slot_after(self.maybe_make_aware(last_run_at))
        if slot is None:  # no such day in 29 years ("February 30"): never, as far as anyone can wait
            return timedelta(days=MAX_SEARCH_DAYS)
        return slot - self.maybe_make_aware(self.now()).astimezone(UTC)

    def __reduce__(self) -> tuple:
        return (functools.partial(crontab, timezone=self.timezone),
                (self._orig_minute, self._orig_hour, self._orig_day_of_week, self._orig_day_of_month,
                 self._orig_month_of_year), self._orig_kwargs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, celery_schedules.crontab):
            return super().__eq__(other) and getattr(other, "timezone", None) == self.timezone
        return NotImplemented

    __hash__ = celery_schedules.crontab.__hash__

    def __repr__(self) -> str:
        zone = f" in {self.timezone}" if self.timezone else ""
        return super().__repr__()[:-1] + zone + ">"


# Each crontab field with its range, as Celery's crontab parses it.
CRONTAB_FIELD_RANGES = {"minute": (0, 59), "hour": (0, 23), "day_of_week": (0, 6), "day_of_month": (1, 31),
                        "month_of_year": (1, 12)}
_CRONTAB_FIELD_EXAMPLES = "such as '*', '*/15', '0,30' or '1-5'"


def crontab_field_problem(fields: dict[str, Any]) -> str | None:
    """What is wrong with the first bad field of a crontab's (``minute`` ... ``month_of_year``
    given as text, numbers or sets), in words people can act on; None if they parse.
    Celery's own message (``Invalid end range: 61 > 59.``) names neither field nor range."""
    for name, (low, high) in CRONTAB_FIELD_RANGES.items():
        value = fields.get(name)
        if value is None or not isinstance(value, str):
            continue
        try:
            numbers = celery_schedules.crontab_parser(high - low + 1, low).parse(value)
        except Exception as exc:  # celery raises ValueError, and others on odd input
            detail = str(exc)
            if "range" in detail:
                return f"{name.replace('_', '-')} field {value!r} is out of range {low}-{high}"
            what = "a day name or " if name == "day_of_week" else ""
            return (f"{name.replace('_', '-')} field {value!r} is not {what}a number from {low} to {high} or a "
                    f"pattern {_CRONTAB_FIELD_EXAMPLES}")
        if name != "day_of_week" and any(not low <= number <= high for number in numbers):
            return f"{name.replace('_', '-')} field {value!r} is out of range {low}-{high}"
    return None


class interval(celery_schedules.schedule):  # noqa: N801 - named like its tag in the data format
    """Celery's interval schedule, answering ``remaining_estimate`` (hence ``is_due``) from
    ``last_run_at`` in UTC, as beat does: Celery rounds a relative interval of a day or more
    to midnight in the zone of the time it is given, beat to midnight UTC."""

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return super().remaining_estimate(_utc(last_run_at))

    @classmethod
    def from_celery(cls, every: celery_schedules.schedule) -> interval:
        """The same interval as Celery's ``every`` (its period, app and clock)."""
        return cls(run_every=every.run_every, relative=every.relative, nowfun=every.nowfun, app=every._app)


def answering_as_beat(sched: Any) -> Any:
    """``sched``, as RedBeat's own type where Celery's would answer ``remaining_estimate``
    and ``is_due`` otherwise than beat dispatches (other schedules as they are)."""
    if type(sched) is celery_schedules.crontab:
        return crontab.from_celery(sched)
    if type(sched) is celery_schedules.schedule:
        return interval.from_celery(sched)
    return sched


class clocked(BaseSchedule):  # noqa: N801 - named like Celery's schedules
    """One run at the instant ``at`` (a naive datetime is taken as UTC)."""

    def __init__(self, at: datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.at = _aware(at)

    def next_slot_after(self, moment: datetime) -> datetime | None:
        return self.at if _utc(moment) < _utc(self.at) else None

    def remaining_estimate(self, last_run_at: datetime | None) -> timedelta | None:
        if last_run_at is not None and _utc(last_run_at) >= _utc(self.at):
            return None
        return _utc(self.at) - _utc(self.now())

    def is_due(self, last_run_at: datetime | None) -> schedstate:
        remaining = self.remaining_estimate(last_run_at)
        if remaining is None:
            return schedstate(False, None)
        seconds = remaining.total_seconds()
        return schedstate(True, None) if seconds <= 0 else schedstate(False, seconds)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, clocked) and other.at == self.at

    def __hash__(self) -> int:
        return hash(self.at)

    def __reduce__(self) -> tuple:
        return (clocked, (self.at,))

    def __repr__(self) -> str:
        return f"<clocked: {self.at.isoformat()}>"


def _search(occurrences: Iterable[datetime], hint: Callable[[], str]) -> Iterator[datetime]:
    """The occurrences of a dateutil rule or iterator, stopped with ScheduleTooCostlyError once
    dateutil has made ``MAX_SEARCH_STEPS`` Python calls to produce one of them.

    The calls are counted by a profile hook set only while dateutil runs
    (raising in it stops dateutil where it stands), from one occurrence to the
    next: a rule that produces occurrences steadily is bounded by the number
    of them (``MAX_OCCURRENCES``), one that stalls by its steps. Under another
    profiler (cProfile) the hook is left alone, and only ``MAX_OCCURRENCES``
    bounds the search; a profiler set from C without a Python object is
    invisible to ``sys.getprofile`` and is switched off by the search.
    """
    iterator = iter(occurrences)
    steps = 0

    def count_step(frame: Any, event: str, arg: Any) -> None:
        nonlocal steps
        if event == "call":
            steps += 1
            if steps > MAX_SEARCH_STEPS:
                raise ScheduleTooCostlyError(f"rrule took more than {MAX_SEARCH_STEPS} steps to find its next "
                                             f"occurrence{hint()}")

    guarded = sys.getprofile() is None
    while True:
        steps = 0
        if guarded:
            sys.setprofile(count_step)
        try:
            occurrence = next(iterator)
        except StopIteration:
            return
        except ScheduleTooCostlyError:
            raise
        except Exception as exc:  # dateutil's own failures on odd rules (an IndexError for MO(+53) in February)
            raise ValueError(f"rrule cannot be evaluated: {type(exc).__name__}: {exc}") from exc
        finally:
            if guarded:
                sys.setprofile(None)
        yield occurrence


def _check_interval_and_count(interval: Any, count: Any) -> None:
    if interval is not None and (not isinstance(interval, int) or interval < 1):
        raise ValueError(f"rrule interval must be a whole number of at least 1, not {interval!r}")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise ValueError(f"rrule count must be a whole number of at least 0, not {count!r}")


def _check_by_fields(byweekday: Any, wkst: Any, **by_fields: Any) -> None:
    """Refuse "by" values dateutil would take but never match (a weekday of 9, a
    61st minute): such a rule is searched to year 9999 for nothing."""
    for name, value in by_fields.items():
        low, high, zero = BY_FIELD_RANGES[name]
        for item in _as_list(value):
            if (not _whole(item) or not low <= item <= high or (item == 0 and not zero)):
                allowed = f"{low} to {high}" + ("" if zero else ", not 0")
                raise ValueError(f"rrule {name} values must be whole numbers from {allowed}, not {item!r}")
    for name, value in (("byweekday", byweekday), ("wkst", wkst)):
        for item in _as_list(value):
            day = item.weekday if isinstance(item, dateutil.rrule.weekday) else item
            # Not repr(item): dateutil's weekday repr fails on a weekday out of range.
            if not _whole(day) or not 0 <= day <= 6:
                raise ValueError(f"rrule {name} values must be weekdays 0 (MO) to 6 (SU), not {day!r}")
            n = getattr(item, "n", None)
            if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and 1 <= abs(n) <= 53):
                raise ValueError(f"rrule {name} weekday positions must be from -53 to 53 but not 0, not {n!r}")


def _whole(value: Any) -> bool:
    """A whole number, not a bool (dateutil takes no 9.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive taken as UTC). Two datetimes of one zone (the same
    tzinfo object) compare and subtract by their wall times, which is wrong across a
    daylight-saving change: in UTC they are instants."""
    return _aware(moment).astimezone(UTC)


# Names 2.x's schedules module imported, kept importable from it (docs/compat-names.rst).
# Its "schedule" was Celery's BaseSchedule, not Celery's interval schedule.
__getattr__ = legacy_lookup(__name__, {
    "schedule": Kept("celery.schedules", "BaseSchedule"),
    "dateutil_rrule": Kept("dateutil.rrule", "rrule"),
    **{name: Kept("dateutil.rrule", name)
       for name in ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")},
})
