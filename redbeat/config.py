"""RedBeat's settings, read from the Celery app's configuration.

Every setting can be written in lower case (``redbeat_redis_url``) or in the
old upper case (``REDBEAT_REDIS_URL``); lower case wins when both are set.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

logger = logging.getLogger("celery.beat")

__all__ = ["RedBeatConfig", "ensure_conf", "ConfigurationError"]

DEFAULT_KEY_PREFIX = "redbeat:"
# Short enough that a standby takes over within seconds of a crash, long enough
# that a holder renewing every third of it survives a few missed renewals.
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_LOCK_POLL_INTERVAL = 1.0
DEFAULT_CLAIM_BATCH_SIZE = 500
# Messages sent to the broker in one go (kombu's Producer.batch, a pipeline
# on Redis brokers): a publish costs less than half as much, and a broker
# failure in the middle leaves at most this many runs uncertain (retried,
# with the same task ids).
DEFAULT_PUBLISH_BATCH_SIZE = 100
# redbeat_redis_options keys that are ours, not redis-py's.
OWN_REDIS_OPTIONS = frozenset(
    {"retry_period", "cluster", "sentinels", "service_name", "sentinel_kwargs", "startup_nodes"}
)
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://", "redis-sentinel://",
                     "rediss-sentinel://", "redis-cluster://", "rediss-cluster://")

_UNSET = object()
HASH_TAG = re.compile(r"\{[^{}]+\}")


class ConfigurationError(RuntimeError):
    """RedBeat cannot start with the configuration it was given."""


class RedBeatConfig:
    """The RedBeat settings of one Celery app, with their defaults applied."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.key_prefix: str = self.either_or("redbeat_key_prefix", DEFAULT_KEY_PREFIX)
        self.schedule_key = self.key_prefix + ":schedule"
        self.statics_key = self.key_prefix + ":statics"
        self.default_lock_key = self.key_prefix + ":lock"
        lock_key = self.either_or("redbeat_lock_key", self.default_lock_key)
        if lock_key and not lock_key.startswith(self.key_prefix):
            lock_key = self.key_prefix + lock_key
        self.lock_key: str | None = lock_key or None
        self.lock_timeout: float = float(
            self.either_or("redbeat_lock_timeout", None) or DEFAULT_LOCK_TIMEOUT
        )
        self.lock_poll_interval: float = float(
            self.either_or("redbeat_lock_poll_interval", None) or DEFAULT_LOCK_POLL_INTERVAL
        )
        self.claim_batch_size: int = int(
            self.either_or("redbeat_claim_batch_size", None) or DEFAULT_CLAIM_BATCH_SIZE
        )
        publish_batch = self.either_or("redbeat_publish_batch_size", None)
        self.publish_batch_size: int = max(int(DEFAULT_PUBLISH_BATCH_SIZE if publish_batch is None else publish_batch),
                                           1)
        self.catch_up: str = self.either_or("redbeat_catch_up", None) or "once"
        if self.catch_up not in ("skip", "once", "all"):
            raise ConfigurationError(f"redbeat_catch_up must be 'skip', 'once' or 'all', not {self.catch_up!r}")
        self.catch_up_max: int = int(self.either_or("redbeat_catch_up_max", None) or 100)
        deadline = self.either_or("redbeat_starting_deadline", None)
        self.starting_deadline: float | None = None if deadline is None else float(deadline)
        history = self.either_or("redbeat_history_size", None)
        self.history_size: int = 20 if history is None else int(history)
        self.redis_url, self.redis_use_ssl = self._connection_settings()
        self.redis_options: dict[str, Any] = self._redis_options()
        if self.uses_cluster and not HASH_TAG.search(self.key_prefix):
            raise ConfigurationError(
                f"Redis Cluster needs every RedBeat key in one hash slot: set redbeat_key_prefix to a "
                f"hash-tag prefix such as '{{redbeat}}:' (it is {self.key_prefix!r})"
            )

    @property
    def uses_cluster(self) -> bool:
        return bool(self.redis_options.get("cluster")) or str(self.redis_url or "").startswith(
            ("redis-cluster://", "rediss-cluster://"))

    def either_or(self, name: str, default: Any = None) -> Any:
        """The value of setting ``name`` in lower or upper case, else ``default``.

        A setting present with the value None counts as set: that is how
        ``redbeat_lock_key = None`` disables the lock.
        """
        conf = self.app.conf
        for candidate in (name, name.upper()):
            value = conf.get(candidate, _UNSET)
            if value is not _UNSET:
                return value
        return default

    def _connection_settings(self) -> tuple[str | None, Any]:
        url = self.either_or("redbeat_redis_url", None)
        use_ssl = self.either_or("redbeat_redis_use_ssl", None)
        if url:
            return url, use_ssl
        broker_url = self.app.conf.broker_url
        if isinstance(broker_url, str) and broker_url.startswith(REDIS_URL_SCHEMES):
            logger.warning(
                "beat: redbeat_redis_url is not set; storing the schedule on the Redis broker %s. "
                "Set redbeat_redis_url to make this explicit.",
                maybe_sanitize_url(broker_url),
            )
            return broker_url, use_ssl if use_ssl is not None else self.app.conf.broker_use_ssl
        return None, use_ssl

    def _redis_options(self) -> dict[str, Any]:
        options = self.either_or("redbeat_redis_options", None)
        if options is not None:
            return dict(options)
        # celery-redbeat 2.x read Sentinel and Cluster settings from the broker's
        # transport options when it shared the broker's URL: keep such set-ups working.
        if self.redis_url and self.redis_url == self.app.conf.broker_url:
            transport = self.app.conf.broker_transport_options or {}
            own = {key: value for key, value in transport.items() if key in OWN_REDIS_OPTIONS}
            if own:
                logger.warning("beat: using %s from broker_transport_options; "
                               "set redbeat_redis_options instead", ", ".join(sorted(own)))
            return own
        return {}

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigurationError(
                "RedBeat needs a Redis server: set redbeat_redis_url "
                "(for example redbeat_redis_url = 'redis://localhost:6379/1') "
                "or use a Redis broker_url."
            )
        return self.redis_url

    @property
    def schedule(self) -> dict:
        """The app's ``beat_schedule``: the static entries."""
        return self.app.conf.beat_schedule or {}

    @schedule.setter
    def schedule(self, value: dict) -> None:
        self.app.conf.beat_schedule = value


def ensure_conf(app: Celery) -> RedBeatConfig:
    """The app's RedBeat configuration, read once and cached on the app."""
    conf = getattr(app, "redbeat_conf", None)
    if conf is None:
        conf = RedBeatConfig(app)
        app.redbeat_conf = conf
    return conf
