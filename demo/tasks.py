"""The demo's tasks: they log and record each run, so the demo can count them."""

import os
import time

import redis
from celery import shared_task
from celery.utils.log import get_task_logger

logger = get_task_logger(__name__)


@shared_task
def greet(who: str) -> str:
    line = f"hello from {who}"
    logger.info("TASK RAN: %s", line)
    record_url = os.environ.get("DEMO_RECORD_URL")
    if record_url:
        redis.Redis.from_url(record_url).rpush("demo:ran", f"{time.time():.3f} {who}")
    return line
