"""RedBeat's settings, read from the Celery app's configuration.

Every setting can be written in lower case (``redbeat_redis_url``) or in the
old upper case (``REDBEAT_REDIS_URL``); lower case wins when both are set.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from typing import Any

import celery.app.utils
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from .keys import KeyNames
from .overlap import DEFAULT_MAX_RUN_TIME, MAX_RUN_TIME

logger = logging.getLogger("celery.beat")

__all__ = ["RedBeatConfig", "ensure_conf", "ConfigurationError", "display_url", "without_urls", "number_problem",
           "MAX_CATCH_UP", "NO_LIMIT", "catch_up_limit", "no_deadline"]

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
DEFAULT_CATCH_UP_MAX = 100
# The command line's Redis timeout: well inside the 1 s default of a
# Kubernetes exec probe is too tight for a Redis across a network; two seconds
# with the probe's timeoutSeconds set to 3 leaves the command time to say why.
DEFAULT_COMMAND_TIMEOUT = 2.0
# Beat stops claiming new runs while this many wait in flight (a broker that
# is down or slower than the schedule's demand): the hash of runs in flight,
# and each tick's work on it, stay bounded.
DEFAULT_MAX_IN_FLIGHT = 10_000
# The most missed slots one entry replays at once under catch_up "all" (the
# setting and the entry field alike): a 1 ms interval would otherwise send
# that many messages per tick from one entry.
MAX_CATCH_UP = 1000
# What people write for "no limit" in a count or a limit (a setting or an entry's option).
NO_LIMIT = -1
# redbeat_redis_options keys that are ours, not redis-py's.
OWN_REDIS_OPTIONS = frozenset(
    {"retry_period", "cluster", "sentinels", "service_name", "sentinel_kwargs", "startup_nodes"}
)
# What celery-redbeat 2.x's Sentinel client read from broker_transport_options
# besides OWN_REDIS_OPTIONS, when RedBeat shares a Sentinel broker's settings.
SENTINEL_BROKER_OPTIONS = frozenset({"username", "password", "db", "socket_timeout", "credential_provider"})
TLS_URL_SCHEMES = ("rediss://", "rediss-sentinel://", "rediss-cluster://")
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
        self.keys = KeyNames(self.key_prefix)
        self.schedule_key = self.keys.schedule
        self.statics_key = self.keys.statics
        self.default_lock_key = self.keys.default_lock
        self.lock_key: str | None = self.keys.lock(self.either_or("redbeat_lock_key", self.default_lock_key))
        self.lock_timeout: float = float(
            self.either_or("redbeat_lock_timeout", None) or DEFAULT_LOCK_TIMEOUT
        )
        self.lock_poll_interval: float = float(
            self.either_or("redbeat_lock_poll_interval", None) or DEFAULT_LOCK_POLL_INTERVAL
        )
        self.claim_batch_size: int = int(_number_setting(
            "redbeat_claim_batch_size", self.either_or("redbeat_claim_batch_size", None) or DEFAULT_CLAIM_BATCH_SIZE,
            1, None, whole=True)
        )
        publish_batch = self.either_or("redbeat_publish_batch_size", None)
        self.publish_batch_size: int = max(int(DEFAULT_PUBLISH_BATCH_SIZE if publish_batch is None else publish_batch),
                                           1)
        self.catch_up: str = self.either_or("redbeat_catch_up", None) or "once"
        if self.catch_up not in ("skip", "once", "all"):
            raise ConfigurationError(f"redbeat_catch_up must be 'skip', 'once' or 'all', not {self.catch_up!r}")
        self.catch_up_max: int = self._catch_up_max()
        self.starting_deadline: float | None = self._starting_deadline()
        self.max_in_flight: int = self._max_in_flight()
        max_run_time = self.either_or("redbeat_max_run_time", None)
        self.max_run_time: float = DEFAULT_MAX_RUN_TIME if max_run_time is None else float(
            _number_setting("redbeat_max_run_time", max_run_time, 1, MAX_RUN_TIME))
        history = self.either_or("redbeat_history_size", None)
        self.history_size: int = 20 if history is None else int(
            _number_setting("redbeat_history_size", history, 0, None, whole=True))
        # Seconds after which a run whose worker died (started, never ended) may run
        # again when delivered again (worker.py); None: never, each run at most once.
        rerun = self.either_or("redbeat_rerun_interrupted_after", None)
        self.rerun_interrupted_after: float | None = None if rerun is None else float(
            _number_setting("redbeat_rerun_interrupted_after", rerun, 0, None))
        self.redis_url, self.redis_use_ssl, self.url_from_broker = self._connection_settings()
        self.redis_options: dict[str, Any] = self._redis_options()
        # Seconds the clients built for a command wait to connect and for each answer,
        # without retries: the command line sets it (``command_timeout_setting``); beat's
        # clients keep their own timeouts and retries (None).
        self.command_timeout: float | None = None
        if self.redis_use_ssl and str(self.redis_url or "").startswith(("unix://", "redis+socket://")):
            raise ConfigurationError("redbeat_redis_use_ssl (or broker_use_ssl) turns TLS on, "
                                     "which a unix socket URL cannot use")
        if self.uses_cluster and not HASH_TAG.search(self.key_prefix):
            raise ConfigurationError(
                f"Redis Cluster needs every RedBeat key in one hash slot: set redbeat_key_prefix to a "
                f"hash-tag prefix such as '{{redbeat}}:' (it is {self.key_prefix!r}). A schedule stored under "
                f"{self.key_prefix!r} moves there with: redbeat move-prefix --to '{{redbeat}}:' "
                f"(docs/configuration.rst, 'Moving a schedule to a hash-tagged prefix')"
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

    def _catch_up_max(self) -> int:
        value = self.either_or("redbeat_catch_up_max", None)
        if value is None:
            return DEFAULT_CATCH_UP_MAX
        if _is_no_limit(value):
            return catch_up_limit(NO_LIMIT)
        return int(_number_setting("redbeat_catch_up_max", value, 0, MAX_CATCH_UP, whole=True))

    def _max_in_flight(self) -> int:
        value = self.either_or("redbeat_max_in_flight", None)
        if value is None:
            return DEFAULT_MAX_IN_FLIGHT
        return int(_number_setting("redbeat_max_in_flight", value, 1, None, whole=True))

    def _starting_deadline(self) -> float | None:
        value = self.either_or("redbeat_starting_deadline", None)
        if value is None or _is_no_limit(value):
            return None
        return no_deadline(float(_number_setting("redbeat_starting_deadline", value, 0, None)))

    def _connection_settings(self) -> tuple[str | None, Any, bool]:
        """The schedule's URL, its TLS settings, and whether both come from the broker's."""
        url = self.either_or("redbeat_redis_url", None)
        use_ssl = self.either_or("redbeat_redis_use_ssl", None)
        if url:
            return url, self._broker_tls_files(url) if use_ssl is None else use_ssl, False
        broker_url = self.app.conf.broker_url
        if isinstance(broker_url, str) and broker_url.startswith(REDIS_URL_SCHEMES):
            # A failover list ("redis://h1/0;redis://h2/0"): the schedule lives on
            # the first; redis-py would read the rest as part of the first's path.
            url = broker_url.split(";")[0].strip()
            logger.warning(
                "beat: redbeat_redis_url is not set; storing the schedule on the Redis broker %s. "
                "Set redbeat_redis_url to make this explicit.",
                display_url(url),
            )
            return url, use_ssl if use_ssl is not None else self.app.conf.broker_use_ssl, True
        return None, use_ssl, False

    def _broker_tls_files(self, url: str) -> dict | None:
        """The redis-py TLS settings (``ssl_*``: CA, certificate, key, checks) of
        ``broker_use_ssl``, for a ``rediss`` URL without ``redbeat_redis_use_ssl``:
        celery-redbeat 2.x applied them, and without them the server's
        certificate is checked against the system's CAs only."""
        broker_ssl = self.app.conf.broker_use_ssl
        if not str(url).startswith(TLS_URL_SCHEMES) or not isinstance(broker_ssl, dict):
            return None
        return {name: value for name, value in broker_ssl.items() if name.startswith("ssl_")} or None

    def command_timeout_setting(self) -> float:
        """``redbeat_command_timeout``: the command line's Redis timeout, in seconds."""
        value = self.either_or("redbeat_command_timeout", None)
        if value is None:
            return DEFAULT_COMMAND_TIMEOUT
        return float(_number_setting("redbeat_command_timeout", value, 0.001, None))

    @property
    def redbeat_redis_options(self) -> dict[str, Any]:
        """2.x's name for ``redis_options``."""
        return self.redis_options

    def is_key_in_conf(self, name: str) -> bool:
        """Whether setting ``name`` is set, in lower or upper case (2.x's name for the test)."""
        return self.either_or(name.lower(), _UNSET) is not _UNSET

    def _redis_options(self) -> dict[str, Any]:
        options = self.either_or("redbeat_redis_options", None)
        if options is not None:
            if "retry_period" in options:
                # 2.x wrapped the client in a RetryingConnection; that meaning is gone.
                message = ("redbeat_redis_options 'retry_period' has no effect: beat retries Redis with a "
                           "backoff for as long as it is away; give redis-py a 'retry' to retry single calls")
                warnings.warn(message, DeprecationWarning, stacklevel=3)
                logger.warning("beat: %s", message)
            return dict(options)
        # celery-redbeat 2.x read Sentinel and Cluster settings from the broker's
        # transport options when it shared the broker's URL: keep such set-ups working.
        if self.url_from_broker:
            transport = self.app.conf.broker_transport_options or {}
            shared = OWN_REDIS_OPTIONS
            if str(self.redis_url).startswith(("redis-sentinel://", "rediss-sentinel://")):
                shared = shared | SENTINEL_BROKER_OPTIONS  # the master's credentials, as 2.x read them
            own = {key: value for key, value in transport.items() if key in shared}
            if own:
                logger.warning("beat: using %s from broker_transport_options; "
                               "set redbeat_redis_options instead", ", ".join(sorted(own)))
            return own
        return {}

    def require_redis_url(self) -> str:
        """The schedule's URL; raises ConfigurationError without one, unless the app has
        a client of the user's on ``app.redbeat_redis`` (then "": that client is used)."""
        if not self.redis_url:
            if getattr(self.app, "redbeat_redis", None) is not None:
                return ""
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


def number_problem(value: Any, low: float, high: float | None, whole: bool = False) -> str | None:
    """None if ``value`` is a finite number within [low, high] (an int if
    ``whole``; never a boolean), else what it must be, in words."""
    kinds = (int,) if whole else (int, float)
    if (isinstance(value, kinds) and not isinstance(value, bool)
            and not (isinstance(value, float) and not math.isfinite(value))
            and low <= value and (high is None or value <= high)):
        return None
    kind = "a whole number" if whole else "a number of seconds"
    return f"{kind} from {low:g} to {high:g}" if high is not None else f"{kind}, at least {low:g}"


def catch_up_limit(catch_up_max: int) -> int:
    """A catch-up maximum with -1 (no limit) as the most one entry may send at once."""
    return MAX_CATCH_UP if catch_up_max == NO_LIMIT else catch_up_max


def no_deadline(deadline: float | None) -> float | None:
    """A starting deadline with the values meaning none (-1, and 0: no dispatch is ever
    exactly on time, so a zero deadline taken literally would skip every slot) as None."""
    return None if deadline is None or deadline <= 0 else deadline


def _is_no_limit(value: Any) -> bool:
    """-1, or "-1" from the environment."""
    if isinstance(value, str):
        return value.strip() == str(NO_LIMIT)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == NO_LIMIT


def _number_setting(name: str, value: Any, low: float, high: float | None, whole: bool = False) -> float:
    """``value`` checked by ``number_problem``; numeric text counts (from the
    environment, say). Raises ConfigurationError naming the setting."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value) if whole else float(value)
        except ValueError:
            pass
    problem = number_problem(number, low, high, whole)
    if problem:
        raise ConfigurationError(f"{name} must be {problem}, not {value!r}")
    return number


def display_url(url: str | None) -> str:
    """The URL with any password masked, for logs and the banner; each URL of a
    failover list (``redis://:pw@h1/0;redis://:pw@h2/0``) is masked."""
    if not url:
        return "(not set)"
    return ";".join(maybe_sanitize_url(part) for part in str(url).split(";"))


# Anything written like a URL ("scheme://..." up to a space).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


def without_urls(text: str) -> str:
    """``text`` with each URL in it written ``<url>``: the text of an error (kombu's,
    a transport's) may hold a broker's URL, password included, and is logged."""
    return _URL.sub("<url>", text)


def _hide_url_from_celery_reports() -> None:
    """Make Celery mask ``redbeat_redis_url`` and ``redbeat_metrics_auth`` wherever it shows settings.

    ``celery report``, ``celery inspect conf`` and Flower show the settings
    through ``celery.app.utils.filter_hidden_settings``, which masks the
    settings whose name matches the module's ``HIDDEN_SETTINGS`` pattern
    (PASS, KEY, SECRET ...) and the broker's URLs, but not ours, which may hold
    a password. That pattern is looked up at each call, so adding our name to
    it covers all of them, keeps Celery's own names and costs nothing. Our
    other settings are covered already: ``redbeat_redis_options`` and
    ``redbeat_redis_use_ssl`` are dicts, whose ``password`` or ``ssl_password``
    fields (in ``sentinel_kwargs`` too) Celery masks key by key. It runs when
    ``redbeat`` is imported: the ``celery`` command imports it for our
    ``celery redbeat`` subcommand, so ``celery report`` is covered too.
    """
    hidden = celery.app.utils.HIDDEN_SETTINGS
    for name in ("REDBEAT_REDIS_URL", "REDBEAT_METRICS_AUTH"):  # the metrics' 'user:password' too
        if not hidden.search(name):
            hidden = re.compile(f"{hidden.pattern}|{name}", hidden.flags | re.IGNORECASE)
    celery.app.utils.HIDDEN_SETTINGS = hidden


_hide_url_from_celery_reports()


def ensure_conf(app: Celery) -> RedBeatConfig:
    """The app's RedBeat configuration, read once and cached on the app."""
    conf = getattr(app, "redbeat_conf", None)
    if conf is None:
        conf = RedBeatConfig(app)
        app.redbeat_conf = conf
    return conf
