"""Schedule types that Celery itself does not ship, usable wherever a Celery
schedule is (in ``beat_schedule`` and in RedBeat entries):

- ``rrule``: an RFC 5545 recurrence rule (python-dateutil), optionally in a
  time zone of its own;
- ``crontab``: Celery's crontab with a time zone of its own;
- ``clocked``: one run at a given instant.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

import dateutil.rrule
from celery import schedules as celery_schedules
from celery.schedules import BaseSchedule, schedstate

from .slots import first_instant_after

__all__ = ["rrule", "crontab", "clocked"]

UTC = timezone.utc  # the rrule and crontab arguments named "timezone" shadow the module name
MAX_WALLS = 100_000  # occurrences looked at for one next slot, so no rule can loop for ever
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
        if isinstance(freq, str):
            try:
                freq = self.FREQ_MAP[freq.upper()]
            except KeyError:
                raise ValueError(f"unknown rrule freq {freq!r}") from None
        if freq not in self.FREQ_MAP.values():
            raise ValueError(f"unknown rrule freq {freq!r}")
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise ValueError(f"rrule interval must be a whole number of at least 1, not {interval!r}")
        self.freq = freq
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
        if self.zone is None:
            # As in celery-redbeat 2.x: occurrences at dtstart's own UTC offset.
            start, until = self.dtstart, self.until
        else:
            # In the zone's wall clock; slots.py turns wall times into instants.
            start = self.dtstart.astimezone(self.zone).replace(tzinfo=None)
            until = self.until.astimezone(self.zone).replace(tzinfo=None) if self.until else None
        self.rrule = dateutil.rrule.rrule(
            freq, dtstart=start, until=until, **{name: getattr(self, name) for name in self.RULE_FIELDS},
        )
        self._rule_start = start.replace(microsecond=0)  # as dateutil keeps it

    @property
    def every_hour(self) -> bool:
        """Whether the rule runs every hour, so follows elapsed time across DST changes."""
        return self.freq >= dateutil.rrule.HOURLY and self.byhour is None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment``, or None when the rule is over."""
        moment = _aware(moment)
        if self.zone is None:
            return self.rule_near(moment).after(moment)
        # A DST shift moves wall times by at most a few hours: start early enough,
        # and let slots.py pick the earliest instant among the walls around it.
        wall = moment.astimezone(self.zone).replace(tzinfo=None) - timedelta(hours=3)
        walls = islice(self.rule_near(wall).xafter(wall), MAX_WALLS)
        return first_instant_after(walls, moment, self.zone, self.every_hour)

    def rule_near(self, reference: datetime) -> dateutil.rrule.rrule:
        """The dateutil rule, restarted shortly before ``reference`` (in the rule's
        own clock) where that leaves its occurrences from there on unchanged.

        dateutil walks every occurrence from the rule's start: an hourly rule
        that started years ago would take a good fraction of a second per
        lookup, for every entry, at every run. Restarting it a whole number of
        periods later keeps the same lattice of occurrences (and the fields
        dateutil derives from the start: its minute, hour, weekday). A rule
        with a ``count`` counts from its real start, so it is left alone, as
        are monthly and yearly rules, whose periods vary in length.
        """
        step = LATTICE_STEPS.get(self.freq)
        if step is None or self.count is not None:
            return self.rrule
        step *= self.interval or 1
        start = self._rule_start
        if start.tzinfo is not None:
            # dateutil steps in the start's own wall clock (a zone with DST
            # included): count the periods in that clock too.
            reference, start = reference.astimezone(start.tzinfo).replace(tzinfo=None), start.replace(tzinfo=None)
        behind = (reference - start) // step - 2
        if behind < REANCHOR_AFTER:
            return self.rrule
        return self.rrule.replace(dtstart=self._rule_start + behind * step)

    next_slot_after = next_after

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        next_run = self.next_after(last_run_at)
        if next_run is None:
            return None
        return next_run - _aware(self.now())

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
    """Celery's crontab, evaluated in ``timezone`` rather than Celery's ``timezone`` setting."""

    def __init__(self, *args: Any, timezone: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timezone = timezone
        self.zone = ZoneInfo(timezone) if timezone else None

    @property
    def tz(self) -> Any:  # what Celery's own crontab code evaluates in
        return self.zone or super().tz

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


class clocked(BaseSchedule):  # noqa: N801 - named like Celery's schedules
    """One run at the instant ``at`` (a naive datetime is taken as UTC)."""

    def __init__(self, at: datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.at = _aware(at)

    def next_slot_after(self, moment: datetime) -> datetime | None:
        return self.at if _aware(moment) < self.at else None

    def remaining_estimate(self, last_run_at: datetime | None) -> timedelta | None:
        if last_run_at is not None and _aware(last_run_at) >= self.at:
            return None
        return self.at - _aware(self.now())

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


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
