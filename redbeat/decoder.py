"""The JSON codec of the data contract (docs/format.rst).

Every typed value is a JSON object tagged with ``__type__``. What this module
writes must stay readable by celery-redbeat 2.x, whose decoder passes the
fields of ``datetime``, ``crontab`` and ``weekday`` objects straight to their
constructors: an extra field there would break it, so new information goes
into new tags (``solar``) or into objects it reads leniently (``rrule``).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab, schedule, solar
from dateutil.rrule import weekday

from . import schedules
from .legacy import Kept, legacy_lookup
from .schedules import clocked, rrule
from .suggestions import nearest_zones

__all__ = [
    "RedBeatJSONDecoder",
    "RedBeatJSONEncoder",
    "DecodeError",
    "MIN_INTERVAL",
    "MAX_INTERVAL",
    "from_timestamp",
    "get_utcoffset_minutes",
    "to_timestamp",
    "dumps",
    "loads",
    "meta_json",
]


class DecodeError(ValueError):
    """A tagged JSON object that cannot become the value it names."""


def to_timestamp(dt: datetime) -> float:
    """UNIX seconds of an aware datetime; a naive one is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def from_timestamp(seconds: float, tz_minutes: float = 0) -> datetime:
    """An aware datetime for UNIX seconds, in UTC or at a fixed offset."""
    tz = timezone(timedelta(minutes=tz_minutes)) if tz_minutes else timezone.utc
    return datetime.fromtimestamp(seconds, tz=tz)


def get_utcoffset_minutes(dt: datetime) -> float:
    """The UTC offset of ``dt`` in minutes (0 for naive and UTC datetimes)."""
    offset = dt.utcoffset()
    return offset.total_seconds() / 60 if offset else 0


def zone_name(tz: tzinfo | None, dt: datetime) -> str | float:
    """How a datetime's zone is written: a name when it has one, else offset seconds."""
    if tz is None or tz is timezone.utc:
        return "UTC"
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if key:
        return key
    offset = tz.utcoffset(dt)
    if not offset:
        return "UTC"
    return offset.total_seconds()


def zone_from_name(value: Any) -> tzinfo:
    if value is None or value == "UTC":
        return timezone.utc
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timezone(timedelta(seconds=value)) if value else timezone.utc
    if isinstance(value, str):
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            close = nearest_zones(value)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (an IANA name such as Europe/Paris)"
            raise DecodeError(f"unknown time zone {value!r}{hint}") from exc
    raise DecodeError(f"time zone must be a name or offset seconds, not {value!r}")


def _decode_datetime(d: dict) -> datetime:
    fields = dict(d)
    tz = zone_from_name(fields.pop("timezone", "UTC"))
    try:
        return datetime(tzinfo=tz, **fields)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"bad datetime {d!r}: {exc}") from exc


# Bounds of an interval's seconds: below a millisecond is a mistake (and below a
# microsecond Python's timedelta is 0); past about 30,000 years, also a mistake.
MIN_INTERVAL = 0.001
MAX_INTERVAL = 1e12


def _decode_interval(d: dict) -> schedules.interval:
    every = d.get("every")
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not MIN_INTERVAL <= every < MAX_INTERVAL:
        raise DecodeError(f"interval 'every' must be at least {MIN_INTERVAL} seconds "
                          f"and less than {MAX_INTERVAL:g}, not {reprlib.repr(every)}")
    relative = d.get("relative", False)
    if not isinstance(relative, bool):
        # A string such as "false" would be taken as true.
        raise DecodeError(f"interval 'relative' must be true or false, not {reprlib.repr(relative)}")
    return schedules.interval(run_every=timedelta(seconds=every), relative=relative)


_CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def _decode_crontab(d: dict) -> crontab:
    fields = {name: d[name] for name in _CRONTAB_FIELDS if d.get(name) is not None}
    zone = d.get("timezone")
    try:
        # Always RedBeat's crontab, zone or not: it answers with beat's next slot.
        return schedules.crontab(timezone=_checked_zone(zone) if zone else None, **fields)
    except Exception as exc:  # celery raises ValueError, but also others on odd input
        # Said field by field only now: parsing the fields twice would double what
        # decoding a crontab costs beat on every definition it has not cached.
        problem = schedules.crontab_field_problem(fields)
        raise DecodeError(f"bad crontab: {problem}" if problem else f"bad crontab {fields!r}: {exc}") from exc


def _checked_zone(name: Any) -> str:
    if not isinstance(name, str):
        raise DecodeError(f"schedule 'timezone' must be an IANA zone name, not {name!r}")
    zone_from_name(name)
    return name


def _decode_clocked(d: dict) -> clocked:
    at = d.get("at")
    if not isinstance(at, datetime):
        raise DecodeError(f"clocked 'at' must be a datetime object, not {at!r}")
    return clocked(at)


def _decode_weekday(d: dict) -> weekday:
    day = d.get("wkday")
    if not isinstance(day, int) or isinstance(day, bool) or not 0 <= day <= 6:
        raise DecodeError(f"weekday 'wkday' must be 0 (MO) to 6 (SU), not {day!r}")
    try:
        return weekday(day, d.get("n"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"bad weekday {d!r}") from exc


def _decode_rrule(d: dict) -> rrule:
    fields = dict(d)
    for name in ("dtstart", "until"):
        seconds = fields.get(name)
        offset = fields.pop(f"{name}_tz", 0) or 0
        if seconds is not None and not isinstance(seconds, datetime):
            fields[name] = from_timestamp(seconds, offset)
    if fields.get("timezone") == "":
        del fields["timezone"]  # no zone of its own, as for a crontab
    if fields.get("timezone") is not None:
        _checked_zone(fields["timezone"])
    try:
        return rrule(**fields)
    except Exception as exc:
        raise DecodeError(f"bad rrule {d!r}: {exc}") from exc


def _decode_solar(d: dict) -> solar:
    try:
        return solar(d["event"], d["lat"], d["lon"])
    except KeyError as exc:
        raise DecodeError(f"solar needs 'event', 'lat' and 'lon': {d!r}") from exc
    except Exception as exc:  # ImproperlyConfigured when ephem is missing, ValueError
        raise DecodeError(f"bad solar schedule {d!r}: {exc}") from exc


_DECODERS = {
    "datetime": _decode_datetime,
    "interval": _decode_interval,
    "crontab": _decode_crontab,
    "weekday": _decode_weekday,
    "rrule": _decode_rrule,
    "solar": _decode_solar,
    "clocked": _decode_clocked,
}


class RedBeatJSONDecoder(json.JSONDecoder):
    """Turns tagged objects back into datetimes, schedules and weekdays.

    An object with an unknown ``__type__`` is returned as a plain dict, tag
    included, so readers ignore what they do not know; whoever needs a
    schedule checks the type of what came back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("object_hook", self.dict_to_object)
        super().__init__(*args, **kwargs)

    @staticmethod
    def dict_to_object(d: dict) -> Any:
        decode = _DECODERS.get(d.get("__type__", ""))
        if decode is None:
            return d
        fields = {k: v for k, v in d.items() if k != "__type__"}
        try:
            return decode(fields)
        except DecodeError:
            raise
        except Exception as exc:  # out-of-range numbers and the like: still bad input
            raise DecodeError(f"bad {d['__type__']} {d!r}: {type(exc).__name__}: {exc}") from exc


def _encode_datetime(dt: datetime) -> dict:
    return {
        "__type__": "datetime",
        "year": dt.year,
        "month": dt.month,
        "day": dt.day,
        "hour": dt.hour,
        "minute": dt.minute,
        "second": dt.second,
        "microsecond": dt.microsecond,
        "timezone": zone_name(dt.tzinfo, dt),
    }


def _encode_rrule(rule: rrule) -> dict:
    encoded: dict[str, Any] = {"__type__": "rrule", "freq": rule.freq}
    for name in rrule.RULE_FIELDS:
        encoded[name] = getattr(rule, name)
    for name in ("dtstart", "until"):
        value = getattr(rule, name)
        if value is not None:
            encoded[name] = to_timestamp(value)
            encoded[f"{name}_tz"] = get_utcoffset_minutes(value)
    if rule.timezone:  # only when set: celery-redbeat 2.x cannot read it
        encoded["timezone"] = rule.timezone
    return encoded


def _encode_crontab(cron: crontab) -> dict:
    encoded = {
        "__type__": "crontab",
        "minute": cron._orig_minute,
        "hour": cron._orig_hour,
        "day_of_week": cron._orig_day_of_week,
        "day_of_month": cron._orig_day_of_month,
        "month_of_year": cron._orig_month_of_year,
    }
    # Only when set: celery-redbeat 2.x cannot read a crontab with it.
    if getattr(cron, "timezone", None):
        encoded["timezone"] = cron.timezone
    return encoded


def _encode_weekday(day: weekday) -> dict:
    # celery-redbeat 2.x writes only 'wkday' but reads 'n' too: keep FR(+2).
    encoded = {"__type__": "weekday", "wkday": day.weekday}
    if day.n is not None:
        encoded["n"] = day.n
    return encoded


def _encode_interval(interval: schedule) -> dict:
    return {"__type__": "interval", "every": interval.run_every.total_seconds(), "relative": bool(interval.relative)}


# Each type the codec writes, with its encoder, checked in this order (the first that
# the value is an instance of wins).
_ENCODERS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (datetime, _encode_datetime),
    (crontab, _encode_crontab),
    (clocked, lambda obj: {"__type__": "clocked", "at": _encode_datetime(obj.at)}),
    (rrule, _encode_rrule),
    (solar, lambda obj: {"__type__": "solar", "event": obj.event, "lat": obj.lat, "lon": obj.lon}),
    (weekday, _encode_weekday),
    (schedule, _encode_interval),
    (timedelta, lambda obj: obj.total_seconds()),
)


class RedBeatJSONEncoder(json.JSONEncoder):
    """Writes datetimes, Celery schedules and rrule weekdays as tagged objects."""

    def default(self, obj: Any) -> Any:
        for kind, encode in _ENCODERS:
            if isinstance(obj, kind):
                return encode(obj)
        return super().default(obj)


# One instance each: both hold only their settings, and json.dumps/loads with
# ``cls`` would build a new one per call, on beat's hot path.
_ENCODER = RedBeatJSONEncoder()
_DECODER = RedBeatJSONDecoder()


def meta_json(last_run_at: datetime | None, total_run_count: int) -> str:
    """An entry's ``meta``: the same text as ``dumps`` of it, faster, for beat's hot path."""
    encoded = None if last_run_at is None else _encode_datetime(last_run_at)
    return json.dumps({"last_run_at": encoded, "total_run_count": total_run_count})


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    return _DECODER.decode(text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text)


# Modules 2.x's decoder imported, kept importable from it (docs/compat-names.rst).
__getattr__ = legacy_lookup(__name__, {"calendar": Kept("calendar"), "zoneinfo": Kept("zoneinfo")})
