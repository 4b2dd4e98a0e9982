"""Building the Redis clients RedBeat talks through, from its settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

import redis
from celery import Celery, current_app
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from .config import OWN_REDIS_OPTIONS, RedBeatConfig, display_url, ensure_conf
from .store import ScheduleStore

__all__ = ["get_redis", "get_store", "build_client", "display_url"]

# Without timeouts a Redis that stops answering (a partition, a paused VM)
# would hang beat inside a socket read forever; with them beat logs and retries.
DEFAULT_SOCKET_OPTIONS = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
    "health_check_interval": 30,
}


def build_client(conf: RedBeatConfig, decode_responses: bool) -> redis.Redis | RedisCluster:
    """A redis-py client for ``redbeat_redis_url`` and ``redbeat_redis_options``.

    ``redis-sentinel://`` URLs (with ``sentinels`` and ``service_name`` options)
    give a client that follows the master through fail-overs;
    ``redis-cluster://`` URLs, or the ``cluster`` option, a Redis Cluster client.
    """
    url = conf.require_redis_url()
    own = conf.redis_options
    options: dict[str, Any] = dict(DEFAULT_SOCKET_OPTIONS)
    options.update((k, v) for k, v in own.items() if k not in OWN_REDIS_OPTIONS)
    options["decode_responses"] = decode_responses
    use_ssl = conf.redis_use_ssl
    if use_ssl:
        if url.startswith("redis://"):
            # redis-py takes TLS from the scheme: redis:// with ssl=True is a TypeError.
            url = "rediss://" + url[len("redis://"):]
        elif url.startswith(("redis-sentinel://", "redis-cluster://")):
            options["ssl"] = True
        if isinstance(use_ssl, dict):
            options.update(use_ssl)
    if url.startswith(("redis-sentinel://", "rediss-sentinel://")):
        return _sentinel_client(url, own, options)
    if url.startswith(("redis-cluster://", "rediss-cluster://")) or own.get("cluster"):
        return _cluster_client(url, own, options)
    return redis.Redis.from_url(url, **options)


def _sentinel_client(url: str, own: dict, options: dict) -> redis.Redis:
    parsed = urlparse(url)
    if url.startswith("rediss-"):
        options["ssl"] = True
    sentinels = own.get("sentinels") or [(parsed.hostname or "localhost", parsed.port or 26379)]
    option_db = options.pop("db", None)
    db = parsed.path.strip("/") or option_db or 0
    if parsed.password and "password" not in options:
        options["password"] = unquote(parsed.password)
    if parsed.username and "username" not in options:
        options["username"] = unquote(parsed.username)
    sentinel_kwargs = dict(DEFAULT_SOCKET_OPTIONS)
    sentinel_kwargs.pop("health_check_interval")
    sentinel_kwargs.update(own.get("sentinel_kwargs") or {})
    sentinel = Sentinel([tuple(node) for node in sentinels], sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(own.get("service_name", "master"), db=int(db), **options)


def _cluster_client(url: str, own: dict, options: dict) -> RedisCluster:
    url = url.replace("redis-cluster://", "redis://", 1).replace("rediss-cluster://", "rediss://", 1)
    options.pop("db", None)
    nodes = own.get("startup_nodes")
    if nodes:
        options["startup_nodes"] = [
            ClusterNode(node["host"], int(node["port"])) if isinstance(node, dict) else ClusterNode(*node)
            for node in nodes
        ]
    return RedisCluster.from_url(url, **options)


def get_redis(app: Celery | None = None) -> redis.Redis | RedisCluster:
    """The app's (default: the current app's) Redis client for the schedule,
    answering in ``str`` as in celery-redbeat 2.x. Created on first use and kept on the app.
    """
    app = app or current_app._get_current_object()
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
