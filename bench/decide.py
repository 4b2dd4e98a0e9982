"""Micro-benchmark of the decide stage alone: no Redis, no broker (it is pure).

    .venv/bin/python bench/decide.py [--n 10000] [--repeat 5] [--profile interval]

Decides ``n`` due records of each kind in a loop and prints the median and the
least microseconds per decide over ``repeat`` rounds, one line of JSON per kind
(on a busy machine the least says more):

- ``interval``: an hourly entry due now, with meta and status as beat writes them
  (the steady state: each due entry was decided before);
- ``crontab``: the same for an entry every five minutes;
- ``drain``: distinct entries never run (no meta, no status), as in the drain
  measurement of bench/run.py: nothing about one helps with the next.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time
from datetime import datetime, timedelta, timezone

from celery import Celery

from redbeat import RedBeatSchedulerEntry
from redbeat.decide import Decider
from redbeat.decoder import meta_json
from redbeat.keys import KeyNames
from redbeat.stages import DueRecord

NOW = datetime(2026, 5, 4, 12, 0, 0, 250000, tzinfo=timezone.utc)
SCHEDULES = {
    "interval": ('{"__type__": "interval", "every": 3600, "relative": false}', timedelta(hours=1)),
    "crontab": ('{"__type__": "crontab", "minute": "*/5", "hour": "*", "day_of_week": "*", '
                '"day_of_month": "*", "month_of_year": "*"}', timedelta(minutes=5)),
}


def definition(name: str, schedule: str) -> bytes:
    return (f'{{"name": "{name}", "task": "bench.noop", "args": [], "kwargs": {{}}, "options": {{}}, '
            f'"schedule": {schedule}, "enabled": true}}').encode()


def steady_records(decider: Decider, kind: str, n: int) -> list[DueRecord]:
    """``n`` records of one entry due now, carrying the status its last decide wrote."""
    schedule, period = SCHEDULES[kind]
    raw = definition("job", schedule)
    first = DueRecord(b"redbeat:job", 0.0, raw, meta_json(NOW - 2 * period, 7).encode())
    status = decider.decide(first, NOW - period).status
    meta = meta_json(NOW - period, 8).encode()
    return [DueRecord(b"redbeat:job", (NOW.timestamp()), raw, meta, status.encode() if status else None)
            for _ in range(n)]


def drain_records(n: int) -> list[DueRecord]:
    schedule = SCHEDULES["interval"][0]
    return [DueRecord(f"redbeat:e{i}".encode(), 0.0, definition(f"e{i}", schedule), None) for i in range(n)]


def per_decide(decider: Decider, records: list[DueRecord]) -> float:
    started = time.perf_counter()
    for record in records:
        decision = decider.decide(record, NOW)
        assert decision.action == "run", decision
    return (time.perf_counter() - started) / len(records) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=["interval", "crontab", "drain"], help="print a cProfile of one kind")
    options = parser.parse_args()
    app = Celery("bench", set_as_current=True)
    app.conf.update({"redbeat_redis_url": "redis://127.0.0.1:1/0", "timezone": "UTC"})

    def decider() -> Decider:
        # One per batch of records, as the scheduler builds one per tick.
        return Decider(app, RedBeatSchedulerEntry, KeyNames("redbeat:"), "host:1:token", 30.0)

    kinds = {"interval": lambda: steady_records(decider(), "interval", options.n),
             "crontab": lambda: steady_records(decider(), "crontab", options.n),
             "drain": lambda: drain_records(options.n)}
    if options.profile:
        records = kinds[options.profile]()
        profile = cProfile.Profile()
        profile.runcall(per_decide, decider(), records)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
        return 0
    for kind, make in kinds.items():
        records = make()
        rounds = [per_decide(decider(), records) for _ in range(options.repeat)]
        print(json.dumps({"kind": kind, "n": options.n, "us_per_decide": round(statistics.median(rounds), 2),
                          "least": round(min(rounds), 2),
                          "rounds": [round(r, 2) for r in rounds]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
