"""The Celery app that the end-to-end tests run as real beat and worker processes.

Its URLs come from the environment the test sets; each task run is recorded
in a Redis list so the test sees what the worker really executed.
"""

import json
import os
import time

import redis
from celery import Celery

app = Celery("e2e_app")
app.conf.update(
    broker_url=os.environ["E2E_BROKER_URL"],
    redbeat_redis_url=os.environ["E2E_REDBEAT_URL"],
    redbeat_lock_timeout=float(os.environ.get("E2E_LOCK_TIMEOUT", 3)),
    redbeat_history_size=int(os.environ.get("E2E_HISTORY_SIZE", 20)),
    redbeat_catch_up=os.environ.get("E2E_CATCH_UP", "once"),
    redbeat_publish_batch_size=int(os.environ.get("E2E_PUBLISH_BATCH_SIZE", 100)),
    beat_max_loop_interval=1,
    timezone="UTC",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # Served only when a test sets it (tests/test_metrics.py).
    redbeat_metrics_port=int(os.environ.get("E2E_METRICS_PORT", 0)),
    # Modules the worker imports at start: tests/test_worker_outcomes.py sets redbeat.worker.
    imports=[name for name in os.environ.get("E2E_IMPORTS", "").split(",") if name],
    # tests/test_run_once.py: acknowledging after the task, a broker that redelivers soon, and
    # the side of an interrupted run.
    task_acks_late=os.environ.get("E2E_ACKS_LATE") == "1",
    broker_transport_options=json.loads(os.environ.get("E2E_BROKER_OPTIONS", "{}")),
    redbeat_rerun_interrupted_after=json.loads(os.environ.get("E2E_RERUN_AFTER", "null")),
    worker_pool_start_method=os.environ.get("E2E_START_METHOD", "fork"),
    beat_schedule={
        "static-every-second": {"task": "e2e_app.record", "schedule": 1.0, "args": ["static"]},
    },
)


@app.task
def record(label: str) -> None:
    redis.Redis.from_url(os.environ["E2E_RECORD_URL"]).rpush("e2e:ran", label)


@app.task
def fail() -> None:
    raise ValueError("failing on purpose")


@app.task(bind=True)
def retry_once(self) -> None:
    if not self.request.retries:
        raise self.retry(exc=KeyError("once"), countdown=0)


@app.task
def record_slowly(label: str, seconds: float) -> None:
    """Records that it started, then takes ``seconds``: a run still running when it is delivered again."""
    redis.Redis.from_url(os.environ["E2E_RECORD_URL"]).rpush("e2e:ran", label)
    time.sleep(seconds)


@app.task(bind=True)
def slow(self, label: str, seconds: float) -> None:
    """Runs ``seconds``: each execution's start and end go onto ``e2e:slow`` (tests/test_overlap_e2e.py)."""
    ran = redis.Redis.from_url(os.environ["E2E_RECORD_URL"])
    ran.rpush("e2e:slow", json.dumps({"label": label, "id": self.request.id, "start": time.time()}))
    time.sleep(seconds)  # the task's own work: being slower than its entry's interval
    ran.rpush("e2e:slow", json.dumps({"label": label, "id": self.request.id, "end": time.time()}))
