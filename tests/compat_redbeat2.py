"""Runs inside a separate virtualenv holding celery-redbeat 2.4.2 (the package we
replace), never beside ours: both are imported as ``redbeat``.

    python compat_redbeat2.py REDIS_URL read KEY...   load entries, print them as JSON
    python compat_redbeat2.py REDIS_URL write         save one entry of each kind
"""

import json
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import crontab, schedule
from dateutil.rrule import FR, MO

import redbeat
from redbeat import RedBeatSchedulerEntry
from redbeat.schedules import rrule


def describe(entry):
    return {
        "name": entry.name,
        "task": entry.task,
        "args": list(entry.args),
        "kwargs": entry.kwargs,
        "options": entry.options,
        "enabled": entry.enabled,
        "schedule": type(entry.schedule).__name__,
        "last_run_at": entry.last_run_at.isoformat() if entry.last_run_at else None,
        "total_run_count": entry.total_run_count,
        "score": entry.score,
    }


def main():
    url, command, *keys = sys.argv[1:]
    assert "site-packages" in redbeat.__file__, "must run against the installed celery-redbeat 2.x"
    app = Celery("compat", set_as_current=True)
    app.conf.update(redbeat_redis_url=url, timezone="UTC")
    if command == "read":
        print(json.dumps([describe(RedBeatSchedulerEntry.from_key(key, app=app)) for key in keys]))
    elif command == "write":
        start = datetime(2026, 1, 5, 9, tzinfo=timezone(timedelta(hours=1)))
        entries = [
            RedBeatSchedulerEntry("v2-interval", "tasks.a", schedule(timedelta(seconds=30), relative=True),
                                  args=[1], kwargs={"k": "v"}, options={"queue": "q"}, app=app),
            RedBeatSchedulerEntry("v2-crontab", "tasks.b", crontab(minute="*/5", hour="9-17", day_of_week="1-5"),
                                  app=app),
            RedBeatSchedulerEntry("v2-rrule", "tasks.c", rrule("WEEKLY", dtstart=start, byweekday=[MO, FR(+1)],
                                                               until=start + timedelta(days=365)), app=app),
            RedBeatSchedulerEntry("v2-disabled", "tasks.d", schedule(60), enabled=False, app=app),
        ]
        for entry in entries:
            entry.save()
        entries[0].reschedule(datetime(2026, 2, 1, 12, tzinfo=ZoneInfo("Europe/Paris")))
        entries[1].next()
        print(json.dumps([entry.key for entry in entries]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
