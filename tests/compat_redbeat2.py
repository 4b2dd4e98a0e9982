"""Runs inside a separate virtualenv holding celery-redbeat 2.4.2 (the package we
replace), never beside ours: both are imported as ``redbeat``.

    python compat_redbeat2.py REDIS_URL read KEY...   load entries, print them as JSON
    python compat_redbeat2.py REDIS_URL write         save one entry of each kind
    python compat_redbeat2.py REDIS_URL tick          run one tick of 2.x's beat (no lock, in-memory
                                                      broker); print the entries it sent, or its error
"""

import json
import sys
import traceback
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import crontab, schedule
from dateutil.rrule import FR, MO

import redbeat
from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
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


def tick(app):
    """One tick of 2.x's own scheduler, as its beat's loop runs it: an exception
    here is one that ends 2.x's beat process (Celery's loop does not catch it)."""
    sent = []

    class Recording(RedBeatScheduler):
        def apply_async(self, entry, *args, **kwargs):
            sent.append(entry.name)
            return super().apply_async(entry, *args, **kwargs)

    # No lock (the tick would extend one beat_init never took) and no
    # backend_cleanup entry written into the schedule under test.
    app.conf.update(broker_url="memory://", redbeat_lock_key=None, result_expires=None)
    try:
        scheduler = Recording(app=app)
        scheduler.tick()
    except Exception as exc:
        return {"sent": sent, "error": f"{type(exc).__name__}: {exc}", "where": traceback.format_exc(limit=-3)}
    return {"sent": sent, "error": None}


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
    elif command == "tick":
        print(json.dumps(tick(app)))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
