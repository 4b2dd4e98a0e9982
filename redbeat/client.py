"""Building the Redis clients RedBeat talks through, from its settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

import redis
from celery import Celery, current_app
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from .config import HASH_TAG, OWN_REDIS_OPTIONS, ConfigurationError, RedBeatConfig, display_url, ensure_conf
from .store import ScheduleStore

__all__ = ["get_redis", "get_store", "build_client", "bytes_twin", "injected_client", "display_url"]

# Without timeouts a Redis that stops answering (a partition, a paused VM)
# would hang beat inside a socket read forever; with them beat logs and retries.
DEFAULT_SOCKET_OPTIONS = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
    "health_check_interval": 30,
}


def command_socket_options(conf: RedBeatConfig) -> dict[str, Any]:
    """The socket options a command's client gets on top of everything else
    (none for beat's): ``conf.command_timeout`` to connect and to read, and
    no retries, so that a Redis that never answers ends the command after
    one timeout, as a probe's own timeout needs (redis-py retries a failed call
    with a backoff by default, and a Sentinel client does so for each sentinel)."""
    if conf.command_timeout is None:
        return {}
    return {"socket_timeout": conf.command_timeout, "socket_connect_timeout": conf.command_timeout,
            "retry": Retry(NoBackoff(), 0)}


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
    options.update(command_socket_options(conf))
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
        return _sentinel_client(url, own, options, command_socket_options(conf))
    if url.startswith(("redis-cluster://", "rediss-cluster://")) or own.get("cluster"):
        return _cluster_client(url, own, options)
    return redis.Redis.from_url(url, **options)


def _sentinel_client(url: str, own: dict, options: dict, command_options: dict) -> redis.Redis:
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
    sentinel_kwargs.update(command_options)
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
    answering in ``str`` as in celery-redbeat 2.x: the one set on
    ``app.redbeat_redis``, else one built from the settings and kept there.
    """
    app = app or current_app._get_current_object()
    client = getattr(app, "redbeat_redis", None)
    if client is None:
        client = build_client(ensure_conf(app), decode_responses=True)
        app.redbeat_redis = app.redbeat_built_redis = client
    return client


def injected_client(app: Celery) -> redis.Redis | RedisCluster | None:
    """The client the user set on ``app.redbeat_redis`` (None: none, or the one get_redis built)."""
    client = getattr(app, "redbeat_redis", None)
    if client is None or client is getattr(app, "redbeat_built_redis", None):
        return None
    return client


def get_store(app: Celery) -> ScheduleStore:
    """The app's schedule store. It reads bytes, so one entry that is not
    valid UTF-8 cannot break the decoding of a whole batch.

    celery-redbeat 2.x did every read and write through ``app.redbeat_redis``,
    and projects set their own client there (a cluster client, a fakeredis in
    their tests): the store then talks to that client's server, through a
    twin of it that answers in bytes, and follows it when it is replaced. A
    store set on ``app.redbeat_store`` directly is used as it is.
    """
    store = getattr(app, "redbeat_store", None)
    injected = injected_client(app)
    built = getattr(app, "redbeat_store_built", None)  # (the store we built, the client it follows)
    if store is not None and (built is None or built[0] is not store or built[1] is injected):
        return store
    conf = ensure_conf(app)
    client = build_client(conf, decode_responses=False) if injected is None else bytes_twin(injected, conf)
    store = ScheduleStore(client, conf)
    app.redbeat_store, app.redbeat_store_built = store, (store, injected)
    return store


# Connection-pool arguments that a pool sets for itself, tied to that pool.
_POOL_OWNED = frozenset({"connection_pool", "maint_notifications_pool_handler"})


def bytes_twin(client: Any, conf: RedBeatConfig) -> redis.Redis | RedisCluster:
    """A client for the same server, with the same connection settings, that answers in bytes:
    ``client`` itself if it does not decode (and no command timeout is set: a command's
    client gets its own). Raises ConfigurationError if none can be built."""
    client = getattr(client, "wrapped_connection", client)  # 2.x's RetryingConnection wraps the client
    if isinstance(client, RedisCluster) and not HASH_TAG.search(conf.key_prefix):
        raise ConfigurationError(
            f"app.redbeat_redis is a Redis Cluster client: every RedBeat key must be in one hash slot; "
            f"set redbeat_key_prefix to a hash-tag prefix such as '{{redbeat}}:' (it is {conf.key_prefix!r})")
    encoder = getattr(client, "get_encoder", None)
    if encoder is not None and not encoder().decode_responses and conf.command_timeout is None:
        return client
    if isinstance(client, RedisCluster):
        nodes = [ClusterNode(node.host, node.port) for node in client.get_nodes()]
        options = _without_pool_owned(client.nodes_manager.connection_kwargs, conf)
        return RedisCluster(startup_nodes=nodes, **options)
    pool = getattr(client, "connection_pool", None)
    if isinstance(client, redis.Redis) and isinstance(pool, redis.ConnectionPool):
        options = _without_pool_owned(pool.connection_kwargs, conf)
        options.update(connection_class=pool.connection_class, max_connections=pool.max_connections)
        if isinstance(pool, SentinelConnectionPool):
            twin_pool: redis.ConnectionPool = SentinelConnectionPool(
                pool.service_name, pool.sentinel_manager, is_master=pool.is_master,
                check_connection=pool.check_connection, **options)
        else:
            twin_pool = redis.ConnectionPool(**options)
        return redis.Redis(connection_pool=twin_pool)
    raise ConfigurationError(
        f"app.redbeat_redis holds a {type(client).__name__} that answers in text, and RedBeat cannot build "
        f"a twin of it that answers in bytes: set a redis.Redis or RedisCluster client there, or one made "
        f"with decode_responses=False")


def _without_pool_owned(kwargs: dict, conf: RedBeatConfig) -> dict:
    options = {name: value for name, value in kwargs.items() if name not in _POOL_OWNED}
    options["decode_responses"] = False
    options.update(command_socket_options(conf))
    return options
