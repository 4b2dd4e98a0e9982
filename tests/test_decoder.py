"""Unit tests of the JSON codec: the data contract both ways."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, schedule, solar
from dateutil.rrule import FR, MO, WEEKLY

from redbeat.decoder import (
    DecodeError,
    RedBeatJSONDecoder,
    RedBeatJSONEncoder,
    dumps,
    from_timestamp,
    get_utcoffset_minutes,
    loads,
    meta_json,
    to_timestamp,
)
from redbeat.schedules import rrule


def roundtrip(value):
    return loads(dumps(value))


# -- what celery-redbeat 2.x wrote must load ----------------------------------

def test_datetime_with_zone_name_loads_in_that_zone():
    value = loads('{"__type__": "datetime", "year": 2026, "month": 7, "day": 1, "hour": 9, "minute": 30,'
                  ' "second": 0, "microsecond": 5, "timezone": "Europe/Paris"}')
    assert value == datetime(2026, 7, 1, 9, 30, 0, 5, tzinfo=ZoneInfo("Europe/Paris"))
    assert value.utcoffset() == timedelta(hours=2)


def test_datetime_with_numeric_timezone_is_an_offset_in_seconds():
    value = loads('{"__type__": "datetime", "year": 2026, "month": 1, "day": 2, "hour": 3, "minute": 4,'
                  ' "second": 5, "microsecond": 0, "timezone": 14400.0}')
    assert value.utcoffset() == timedelta(hours=4)
    assert value.astimezone(timezone.utc).hour == 23


def test_datetime_without_timezone_or_second_is_utc():
    value = loads('{"__type__": "datetime", "year": 2015, "month": 12, "day": 29, "hour": 16,'
                  ' "minute": 45, "microsecond": 231}')
    assert value == datetime(2015, 12, 29, 16, 45, 0, 231, tzinfo=timezone.utc)


def test_interval_without_relative_flag_loads():
    value = loads('{"__type__": "interval", "every": 5}')
    assert isinstance(value, schedule)
    assert value.run_every == timedelta(seconds=5)
    assert value.relative is False


@pytest.mark.parametrize("relative", [True, False])
def test_interval_relative_as_celery_redbeat_2_writes_it_loads(relative):
    value = loads(json.dumps({"__type__": "interval", "every": 5.0, "relative": relative}))
    assert value.relative is relative


def test_crontab_with_some_fields_defaults_the_rest_to_star():
    value = loads('{"__type__": "crontab", "minute": "5", "day_of_week": "monday"}')
    assert isinstance(value, crontab)
    assert value._orig_minute == "5"
    assert value._orig_hour == "*"
    assert value.day_of_week == {1}


def test_rrule_with_weekdays_dtstart_and_until_at_offsets():
    text = json.dumps({
        "__type__": "rrule", "freq": 2, "interval": 1, "wkst": None, "count": None,
        "bysetpos": None, "bymonth": None, "bymonthday": None, "byyearday": None, "byeaster": None,
        "byweekno": None, "byweekday": [{"__type__": "weekday", "wkday": 0}, {"__type__": "weekday", "wkday": 4}],
        "byhour": [9], "byminute": [0], "bysecond": [0],
        "dtstart": 1767258000, "dtstart_tz": 60, "until": 1798794000, "until_tz": -300,
    })
    rule = loads(text)
    assert isinstance(rule, rrule)
    assert rule.freq == WEEKLY
    assert rule.byweekday == [MO, FR]
    assert rule.dtstart == datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
    assert rule.dtstart.utcoffset() == timedelta(minutes=60)
    assert rule.until.utcoffset() == timedelta(minutes=-300)
    first = rule.next_after(datetime(2026, 1, 1, 9, tzinfo=timezone.utc))
    assert first == datetime(2026, 1, 2, 9, tzinfo=timezone(timedelta(hours=1)))


def test_rrule_freq_may_be_a_name():
    assert loads('{"__type__": "rrule", "freq": "daily", "dtstart": 0}').freq == 3


def test_unknown_type_stays_a_dict():
    assert loads('{"__type__": "lunar", "phase": "full"}') == {"__type__": "lunar", "phase": "full"}


@pytest.mark.parametrize("text, words", [
    ('{"__type__": "interval", "every": "soon"}', "at least 0.001 seconds"),
    ('{"__type__": "interval", "every": 0}', "at least 0.001 seconds"),
    ('{"__type__": "interval", "every": 1e-7}', "at least 0.001 seconds"),
    ('{"__type__": "interval", "every": NaN}', "at least 0.001 seconds and less than 1e\\+12, not nan"),
    ('{"__type__": "interval", "every": Infinity}', "at least 0.001 seconds and less than 1e\\+12"),
    ('{"__type__": "interval", "every": 1e12}', "at least 0.001 seconds and less than 1e\\+12"),
    ('{"__type__": "interval", "every": 5, "relative": "false"}', "'relative' must be true or false, not 'false'"),
    ('{"__type__": "interval", "every": 5, "relative": 0}', "'relative' must be true or false"),
    ('{"__type__": "interval", "every": 5, "relative": null}', "'relative' must be true or false"),
    ('{"__type__": "rrule", "freq": "DAILY", "interval": 0}', "interval must be a whole number"),
    ('{"__type__": "crontab", "minute": "61"}', "bad crontab"),
    ('{"__type__": "datetime", "year": 2026, "month": 13, "day": 1}', "bad datetime"),
    ('{"__type__": "datetime", "year": 2026, "month": 1, "day": 1, "timezone": "Mars/Olympus"}',
     "unknown time zone"),
    ('{"__type__": "rrule", "freq": "FORTNIGHTLY"}', "bad rrule"),
    ('{"__type__": "solar", "event": "sunset"}', "solar needs"),
])
def test_malformed_typed_values_raise_decode_error(text, words):
    with pytest.raises(DecodeError, match=words):
        loads(text)


# -- what we write must load in celery-redbeat 2.x ------------------------------

def test_datetime_is_written_with_every_field_and_a_zone():
    encoded = json.loads(dumps(datetime(2026, 11, 23, 16, 45, 0, 231, tzinfo=timezone.utc)))
    assert encoded == {"__type__": "datetime", "year": 2026, "month": 11, "day": 23, "hour": 16,
                       "minute": 45, "second": 0, "microsecond": 231, "timezone": "UTC"}


@pytest.mark.parametrize("tz, written", [
    (ZoneInfo("America/New_York"), "America/New_York"),
    (timezone(timedelta(hours=5, minutes=30)), 19800.0),
    (None, "UTC"),
])
def test_datetime_zone_is_written_as_name_or_offset_seconds(tz, written):
    moment = datetime(2026, 3, 1, 12, tzinfo=tz)
    assert json.loads(dumps(moment))["timezone"] == written
    assert roundtrip(moment) == moment.replace(tzinfo=moment.tzinfo or timezone.utc)


def test_interval_always_carries_relative():
    assert json.loads(dumps(schedule(timedelta(seconds=30)))) == {
        "__type__": "interval", "every": 30.0, "relative": False}


def test_crontab_writes_only_the_five_fields_as_given():
    encoded = json.loads(dumps(crontab(minute="*/5", hour="2", day_of_week="mon-fri")))
    assert encoded == {"__type__": "crontab", "minute": "*/5", "hour": "2", "day_of_week": "mon-fri",
                       "day_of_month": "*", "month_of_year": "*"}
    assert roundtrip(crontab(minute="*/5", hour="2")) == crontab(minute="*/5", hour="2")


def test_weekday_keeps_its_ordinal():
    assert json.loads(dumps(FR(+2))) == {"__type__": "weekday", "wkday": 4, "n": 2}
    assert roundtrip(FR(+2)) == FR(+2)
    assert json.loads(dumps(MO)) == {"__type__": "weekday", "wkday": 0}


def test_rrule_roundtrips_with_dtstart_offset_in_minutes():
    start = datetime(2026, 5, 1, 8, tzinfo=timezone(timedelta(hours=2)))
    rule = rrule("WEEKLY", dtstart=start, byweekday=[MO, FR(+1)], count=4)
    encoded = json.loads(dumps(rule))
    assert encoded["dtstart"] == to_timestamp(start)
    assert encoded["dtstart_tz"] == 120
    assert "until" not in encoded
    assert roundtrip(rule) == rule


def test_solar_is_a_new_tag():
    encoded = json.loads(dumps(solar("sunset", 48.85, 2.35)))
    assert encoded == {"__type__": "solar", "event": "sunset", "lat": 48.85, "lon": 2.35}
    decoded = loads(json.dumps(encoded))
    assert isinstance(decoded, solar) and decoded.event == "sunset" and decoded.lat == 48.85


def test_encoder_and_decoder_classes_work_with_the_json_module():
    value = {"at": datetime(2026, 1, 1, tzinfo=timezone.utc), "every": schedule(60)}
    text = json.dumps(value, cls=RedBeatJSONEncoder)
    assert json.loads(text, cls=RedBeatJSONDecoder)["at"] == value["at"]


def test_timestamp_helpers():
    moment = datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert to_timestamp(moment) == 1767225600
    assert to_timestamp(datetime(2026, 1, 1)) == 1767225600
    assert from_timestamp(1767225600, 60) == moment
    assert get_utcoffset_minutes(moment) == 60
    assert get_utcoffset_minutes(datetime(2026, 1, 1)) == 0


def test_rrule_without_dtstart_starts_now():
    rule = loads('{"__type__": "rrule", "freq": "DAILY"}')
    assert abs((rule.dtstart - datetime.now(timezone.utc)).total_seconds()) < 5


@pytest.mark.parametrize("last_run_at", [None, datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=timezone.utc),
                                         datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris")),
                                         datetime(2026, 3, 29, 1, 30)])
def test_meta_json_writes_what_dumps_writes(last_run_at):
    assert meta_json(last_run_at, 7) == dumps({"last_run_at": last_run_at, "total_run_count": 7})
