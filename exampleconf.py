"""Example Celery configuration for RedBeat, used by the demo (./run.sh demo).

Run beat with it:  celery --config exampleconf beat -S redbeat
"""

import os

from celery.schedules import crontab

# Where RedBeat keeps the schedule, and the broker the tasks go through.
redbeat_redis_url = os.environ.get("DEMO_REDIS_URL", "redis://localhost:6379/1")
broker_url = os.environ.get("DEMO_BROKER_URL", "redis://localhost:6379/0")

beat_scheduler = "redbeat.RedBeatScheduler"
# Fail-over in seconds: a standby beat takes over within this after a crash.
redbeat_lock_timeout = 10
beat_max_loop_interval = 5

imports = ("demo.tasks",)
timezone = "UTC"
worker_hijack_root_logger = False

# Static entries: written to Redis when beat starts, removed when deleted here.
beat_schedule = {
    "greet-every-4s": {
        "task": "demo.tasks.greet",
        "schedule": 4.0,
        "args": ["a static entry from beat_schedule"],
    },
    "every-minute": {
        "task": "demo.tasks.greet",
        "schedule": crontab(),
        "args": ["a crontab entry, at the top of each minute"],
    },
}
