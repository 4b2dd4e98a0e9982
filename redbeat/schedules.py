"""Schedule types that Celery itself does not ship.

``rrule`` is an RFC 5545 recurrence rule (python-dateutil) usable wherever a
Celery schedule is: in ``beat_schedule`` and in RedBeat entries.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from typing import Any

import dateutil.rrule
from celery.schedules import BaseSchedule, schedstate

__all__ = ["rrule"]


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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(freq, str):
            try:
                freq = self.FREQ_MAP[freq.upper()]
            except KeyError:
                raise ValueError(f"unknown rrule freq {freq!r}") from None
        if freq not in self.FREQ_MAP.values():
            raise ValueError(f"unknown rrule freq {freq!r}")
        self.freq = freq
        self.dtstart = _aware(dtstart) if dtstart is not None else datetime.now(timezone.utc)
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
        self.rrule = dateutil.rrule.rrule(
            freq,
            dtstart=self.dtstart,
            until=self.until,
            **{name: getattr(self, name) for name in self.RULE_FIELDS},
        )

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment``, or None when the rule is over."""
        return self.rrule.after(_aware(moment))

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
        return {"freq": self.freq, "dtstart": self.dtstart, "until": self.until,
                **{name: getattr(self, name) for name in self.RULE_FIELDS}}

    def __repr__(self) -> str:
        return f"<rrule: {self.rrule!s}>".replace("\n", " ")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
