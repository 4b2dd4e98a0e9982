"""Names of celery-redbeat 2.x's modules that RedBeat keeps importable from their old paths.

Projects import more from 2.x's modules than the scheduler: its JSON codec,
the ``redis`` module, its lock script, its retrying wrapper. An ImportError
there keeps beat from starting, so every such name still imports
(docs/compat-names.rst lists them and what became of each):

- names whose meaning is unchanged are plain re-exports, looked up when
  first asked for, so importing a module costs nothing more;
- names whose 2.x meaning is gone give their closest honest equivalent and a
  DeprecationWarning saying what RedBeat does instead, when they are used
  (not when their module is imported).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Kept", "legacy_lookup", "SCHEDULERS_NAMES", "LUA_EXTEND_TO_SCRIPT", "RetryingConnection",
           "REDBEAT_SENTINEL_KEY", "ADD_ENTRY_ERROR"]


class Kept(NamedTuple):
    """Where a 2.x name lives now (``module``, ``attribute``; None: the module
    itself) and, if its 2.x meaning is gone, the warning that says so."""

    module: str
    attribute: str | None = None
    deprecation: str | None = None


def legacy_lookup(module_name: str, names: dict[str, Kept]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that serves ``names``, warning for the deprecated ones."""

    def lookup(name: str) -> Any:
        kept = names.get(name)
        if kept is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        if kept.deprecation:
            # stacklevel 2: the line of the caller's import or attribute access.
            warnings.warn(f"{module_name}.{name} is deprecated: {kept.deprecation}", DeprecationWarning,
                          stacklevel=2)
        try:
            value = importlib.import_module(kept.module)
        except ImportError as exc:
            # hasattr() and getattr(..., default) expect AttributeError.
            raise AttributeError(f"{module_name}.{name} was {kept.module}'s, which is not installed: "
                                 f"{kept.deprecation or exc}") from exc
        return value if kept.attribute is None else getattr(value, kept.attribute)

    return lookup


# 2.x's replacement for redis-py's lock-extend script, with its contract:
# KEYS[1] lock, ARGV[1] token, ARGV[2] milliseconds; sets the lock's expiry to
# ARGV[2] (never adds to it) and returns 1 if the token holds the lock, else 0.
# RedBeat's lock renews itself this way (lock.FENCE_LUA) at every tick and
# before every batch it publishes; the script is kept for subclasses that
# register it on a redis-py lock of their own.
LUA_EXTEND_TO_SCRIPT = """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] or redis.call('PTTL', KEYS[1]) < 0 then
    return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# The app attribute where 2.x kept its Sentinel object.
REDBEAT_SENTINEL_KEY = "redbeat_sentinel"

# 2.x's log line for a static entry it could not add; the arguments are the
# entry's name, the error and the entry's settings.
ADD_ENTRY_ERROR = """\

Could not add entry %r to the Redis schedule: %r. Entry: %r
"""


class RetryingConnection:
    """2.x's proxy that retried a client's calls on connection errors. RedBeat
    retries by itself (redis-py's ``retry`` on the client for a call, beat's
    tick backing off and retrying while Redis is away), so this delegates
    every call to ``wrapped_connection`` as it is; importing it from
    ``redbeat.schedulers`` warns so."""

    RETRY_MAX_WAIT = 30

    def __init__(self, retry_period: float | None, wrapped_connection: Any) -> None:
        self.retry_period = retry_period
        self.wrapped_connection = wrapped_connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped_connection, name)


_GONE_LOCK = ("RedBeat's lock renews itself at every tick to a fixed expiry, as this script did; "
              "a scheduler subclass needs no extend script")
_NO_TENACITY = "RedBeat does not use tenacity: import it from tenacity"
# What else redbeat.schedulers of 2.x held at module level, by name.
SCHEDULERS_NAMES = {
    "redis": Kept("redis"),
    "Redis": Kept("redis", "Redis"),
    "Sentinel": Kept("redis.sentinel", "Sentinel"),
    "MasterNotFoundError": Kept("redis.sentinel", "MasterNotFoundError"),
    "json": Kept("json"),
    "ssl": Kept("ssl"),
    "warnings": Kept("warnings"),
    "MINYEAR": Kept("datetime", "MINYEAR"),
    "datetime": Kept("datetime", "datetime"),
    "app_or_default": Kept("celery.app", "app_or_default"),
    "DEFAULT_MAX_INTERVAL": Kept("celery.beat", "DEFAULT_MAX_INTERVAL"),
    "ScheduleEntry": Kept("celery.beat", "ScheduleEntry"),
    "beat_init": Kept("celery.signals", "beat_init"),
    "cached_property": Kept("kombu.utils.objects", "cached_property"),
    "maybe_sanitize_url": Kept("kombu.utils.url", "maybe_sanitize_url"),
    "LUA_EXTEND_TO_SCRIPT": Kept("redbeat.legacy", "LUA_EXTEND_TO_SCRIPT", _GONE_LOCK),
    "REDBEAT_SENTINEL_KEY": Kept("redbeat.legacy", "REDBEAT_SENTINEL_KEY",
                                 "RedBeat keeps no Sentinel object on the app: the client on "
                                 "app.redbeat_redis follows the master through fail-overs"),
    "RetryingConnection": Kept("redbeat.legacy", "RetryingConnection",
                               "it delegates to the client without retrying: RedBeat's beat retries Redis "
                               "with a backoff by itself; give the client a redis.retry.Retry to retry "
                               "single calls"),
    "retry": Kept("tenacity", "retry", _NO_TENACITY),
    "retry_if_exception_type": Kept("tenacity", "retry_if_exception_type", _NO_TENACITY),
    "stop_after_delay": Kept("tenacity", "stop_after_delay", _NO_TENACITY),
    "wait_exponential": Kept("tenacity", "wait_exponential", _NO_TENACITY),
}
