"""The Celery app of the fault test under load (tests/test_run_once_under_faults.py),
run as real beats and workers.

Its one task counts each start by its task id, which is RedBeat's per-slot id,
and notes the slot and the worker, so that the test can tell on the worker side
how often every slot started. It works a short random while, long enough for a
``kill -9`` to land mid-task.
"""

import os
import random
import time

import redis
from celery import Celery

app = Celery("fault_app")
app.conf.update(
    broker_url=os.environ["E2E_BROKER_URL"],
    redbeat_redis_url=os.environ["E2E_REDBEAT_URL"],
    redbeat_lock_timeout=float(os.environ.get("E2E_LOCK_TIMEOUT", 2)),
    redbeat_catch_up="all",  # every slot a fail-over left behind is published: the test expects them all
    redbeat_publish_batch_size=5,  # more batches, so that a kill lands mid-publish more often
    beat_max_loop_interval=1,
    timezone="UTC",
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Messages a killed worker had reserved come back after 6 s, not after kombu's hour, and
    # the workers look for them every second (kombu's default: every 10th of 10 s calls).
    broker_transport_options={"visibility_timeout": 6, "unacked_restore_interval": 1,
                              "unacked_restore_throttle": 1},
    task_acks_late=os.environ.get("E2E_ACKS_LATE") == "1",
    task_reject_on_worker_lost=os.environ.get("E2E_ACKS_LATE") == "1",
    imports=["redbeat.worker"],
)

_record = None


def record() -> redis.Redis:
    global _record
    if _record is None:
        _record = redis.Redis.from_url(os.environ["E2E_RECORD_URL"])
    return _record


@app.task(bind=True)
def count_start(self, longest: float) -> None:
    request = self.request
    pipe = record().pipeline(transaction=False)
    pipe.hincrby("fault:starts", request.id, 1)
    pipe.hset("fault:slots", request.id, f"{request.redbeat_key} {request.redbeat_scheduled}")
    pipe.hset("fault:running", os.getpid(), request.id)
    pipe.execute()
    time.sleep(random.uniform(0, longest))
    record().hdel("fault:running", os.getpid())
