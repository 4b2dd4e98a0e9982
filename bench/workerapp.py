"""The Celery app of the benchmark's real worker (``harness.py workerloop``): an empty
task, the broker and the schedule from the environment, and ``redbeat.worker`` imported
only when ``BENCH_IMPORTS`` names it."""

import os

from celery import Celery

app = Celery("workerapp")
app.conf.update(
    broker_url=os.environ["BENCH_BROKER_URL"],
    redbeat_redis_url=os.environ["BENCH_SCHEDULE_URL"],
    # Acknowledged after the task: the harness knows every task ran when none is left unacknowledged.
    task_acks_late=True,
    worker_hijack_root_logger=False,
    imports=[name for name in os.environ.get("BENCH_IMPORTS", "").split(",") if name],
)


@app.task(name="bench.noop")
def noop() -> None:
    return None
