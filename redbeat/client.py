"""Building the Redis clients RedBeat talks through, from its settings."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from .config import OWN_REDIS_OPTIONS, RedBeatConfig, ensure_conf
from .store import ScheduleStore

__all__ = ["get_redis", "get_store", "build_client", "display_url"]

# Without timeouts a Redis that stops answering (a partition, a paused VM)
# would hang beat inside a socket read forever; with them beat logs and retries.
DEFAULT_SOCKET_OPTIONS = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
    "health_check_interval": 30,
}


def build_client(conf: RedBeatConfig, decode_responses: bool) -> redis.Redis:
    """A redis-py client for ``redbeat_redis_url`` and ``redbeat_redis_options``."""
    url = conf.require_redis_url()
    options: dict[str, Any] = dict(DEFAULT_SOCKET_OPTIONS)
    options.update((k, v) for k, v in conf.redis_options.items() if k not in OWN_REDIS_OPTIONS)
    use_ssl = conf.redis_use_ssl
    if use_ssl:
        if url.startswith("redis://"):
            options["ssl"] = True
        if isinstance(use_ssl, dict):
            options.update(use_ssl)
    return redis.Redis.from_url(url, decode_responses=decode_responses, **options)


def get_redis(app: Celery) -> redis.Redis:
    """The app's Redis client for the schedule, answering in ``str`` (as in 2.x).

    Created on first use and kept on the app.
    """
    client = getattr(app, "redbeat_redis", None)
    if client is None:
        client = build_client(ensure_conf(app), decode_responses=True)
        app.redbeat_redis = client
    return client


def get_store(app: Celery) -> ScheduleStore:
    """The app's schedule store. It reads bytes, so one entry that is not
    valid UTF-8 cannot break the decoding of a whole batch."""
    store = getattr(app, "redbeat_store", None)
    if store is None:
        conf = ensure_conf(app)
        store = ScheduleStore(build_client(conf, decode_responses=False), conf)
        app.redbeat_store = store
    return store


def display_url(url: str | None) -> str:
    """The URL with any password masked, for logs and the banner."""
    return maybe_sanitize_url(url) if url else "(not set)"
