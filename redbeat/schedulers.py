"""The Celery-facing beat scheduler: Celery's ``Scheduler`` API over RedBeat's tick.

The tick itself is in ``ticker`` and the stages it runs (``budget``,
``publisher``, ``recovery``, ``statics``, ``finishing``); this module builds
them for one beat and keeps the names celery-redbeat 2.x users import.
See docs/design.rst.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from celery.beat import Scheduler
from celery.utils.log import get_logger
from celery.utils.time import humanize_seconds
from redis.exceptions import RedisError

from .broker import Broker, MessageSender, claimed_run
from .budget import DecideBudget
from .client import display_url, get_redis, get_store
from .config import (
    DEFAULT_LOCK_TIMEOUT,
    OWN_REDIS_OPTIONS,
    ConfigurationError,
    RedBeatConfig,
    ensure_conf,
    without_urls,
)
from .decide import Decider, Definitions
from .decoder import RedBeatJSONDecoder, RedBeatJSONEncoder, to_timestamp
from .entry import RedBeatSchedulerEntry
from .finishing import OnFinish
from .health import STALLED_AFTER, RedisClock, TickHealth
from .legacy import ADD_ENTRY_ERROR, SCHEDULERS_NAMES, legacy_lookup
from .lock import BeatLock, make_token
from .logfields import log_fields
from .metrics import BeatMetrics
from .metricsserver import start_beat_metrics
from .outcomes import Outcomes
from .planning import plan_runs
from .printable import printable
from .publisher import Publisher
from .recovery import Recovery
from .statics import StaticSync, prepare_writes, static_schedule
from .store import ScheduleStore
from .ticker import Ticker

__all__ = [
    "RedBeatScheduler",
    "RedBeatSchedulerEntry",
    "RedBeatConfig",
    "ConfigurationError",
    "ensure_conf",
    "get_redis",
    "acquire_distributed_beat_lock",
    "REDBEAT_REDIS_KEY",
    "REDBEAT_INTERNAL_OPTIONS",
    "RedBeatJSONDecoder",
    "RedBeatJSONEncoder",
    "to_timestamp",
    "ADD_ENTRY_ERROR",
]

# The app attribute holding the client of get_redis(), as named in 2.x.
REDBEAT_REDIS_KEY = "redbeat_redis"
# 2.x's name for the redbeat_redis_options keys that are RedBeat's, not redis-py's.
REDBEAT_INTERNAL_OPTIONS = tuple(sorted(OWN_REDIS_OPTIONS))

# The rest of 2.x's module-level names (docs/compat-names.rst), served when first asked for.
__getattr__ = legacy_lookup(__name__, SCHEDULERS_NAMES)

logger = get_logger("celery.beat")


class RedBeatScheduler(Scheduler):
    """A Celery beat scheduler that keeps its schedule in Redis."""

    Entry = RedBeatSchedulerEntry
    lock: BeatLock | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT  # the instance's comes from the settings

    def __init__(self, app: Celery, lock_key: str | None = None, lock_timeout: float | None = None,
                 **kwargs: Any) -> None:
        self.conf = ensure_conf(app)
        # Fail before anything else, with the setting's name, not a socket error.
        self.conf.require_redis_url()
        self.lock_key = lock_key or self.conf.lock_key
        self.lock_timeout = float(lock_timeout or self.conf.lock_timeout)
        self._token = make_token()  # names this beat in the lock and in its runs in flight
        self._clock = RedisClock()
        self.health = TickHealth(self.clock, display_url(self.conf.redis_url),
                                 stalled_after=max(STALLED_AFTER, 10 * self.lock_timeout))
        # Counts nothing until setup_schedule serves it (see there).
        self.metrics = BeatMetrics()
        # What became of runs in flight, not yet in Redis: recorded with the next read, or by close.
        self.outcomes = Outcomes(self.metrics)
        # Decoded crontab definitions, kept for the next ticks (and across a rebuilt ticker).
        self._definitions = Definitions()
        self._ticker: Ticker | None = None
        self._ticker_built_for: tuple = ()
        super().__init__(app, **kwargs)

    @property
    def store(self) -> ScheduleStore:
        return get_store(self.app)

    @property
    def host_clock(self) -> Callable[[], float]:
        """This host's clock (a test may set it off)."""
        return self._clock.host_clock

    @host_clock.setter
    def host_clock(self, clock: Callable[[], float]) -> None:
        self._clock.host_clock = clock

    def clock(self) -> float:
        """Now, in UNIX seconds by Redis's clock (this host's clock, corrected by
        the offset seen at the last read)."""
        return self._clock.now()

    def setup_schedule(self) -> None:
        # Nothing is read or written here: the static entries are written by
        # the first tick of the beat that holds the lock, so a standby started
        # with another configuration never fights the active beat over them,
        # and a Redis that is down at start delays them instead of failing beat.
        if self.lock_key:
            self.lock = BeatLock(self.store.client, self.lock_key, self.lock_timeout, self._token)
        # Served on redbeat_metrics_port with this process's liveness. Here, not in __init__:
        # celery beat builds a second, lazy scheduler for its banner, which never ticks or closes.
        self.metrics = self.outcomes.metrics = start_beat_metrics(self.conf, self.health.liveness)

    def static_schedule(self) -> dict:
        """``beat_schedule`` plus the entries Celery itself adds (backend_cleanup)."""
        return static_schedule(self.app, self.conf)

    def update_from_dict(self, dict_: dict) -> None:
        """Save each entry of ``dict_`` to Redis, keeping the history of those that exist."""
        self.store.write_entries(*prepare_writes(self.store, dict_, self._maybe_entry))

    # -- the tick ---------------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Dispatch what is due; return the seconds to sleep before the next tick.

        Never raises: Celery's beat loop would exit, and restart into the
        same data. Anything unexpected is logged and retried with a backoff.
        """
        self.health.tick_started()
        try:
            ticker = self.ticker
            interval = ticker.tick()
        except Exception as exc:
            interval = self.health.failed(exc)
        else:
            ticker.succeeded()
        self.health.tick_ended(interval)
        return interval

    @property
    def ticker(self) -> Ticker:
        """The tick's stages, built when first asked (by the first tick, or a test that
        replaces one of them), and built again when ``Entry``, the lock, the lock timeout
        or ``max_interval`` change (a subclass or a test may set them at any time), or the
        store does (a client replaced on ``app.redbeat_redis``: the lock moves with it)."""
        store = self.store
        if self._ticker is not None and self._ticker.store is not store and self.lock is not None:
            self.lock = BeatLock(store.client, self.lock.key, self.lock_timeout, self._token)
        built_for = (self.Entry, self.lock, self.lock_timeout, self.max_interval, store)
        if self._ticker is None or self._ticker_built_for != built_for:
            self._ticker, self._ticker_built_for = self._build_ticker(), built_for
        return self._ticker

    def _build_ticker(self) -> Ticker:
        store, lock, token, conf = self.store, self.lock, self._token, self.conf
        broker = Broker(self.app, lambda: self.producer, self._message_sender, conf.publish_batch_size,
                        self.clock)
        on_finish = OnFinish(store, self.outcomes)
        publisher = Publisher(send=broker.send, broker=broker, store=store, lock=lock, token=token,
                              clock=self.clock, outcomes=self.outcomes, batch_size=conf.publish_batch_size,
                              lock_timeout=self.lock_timeout, metrics=self.metrics)
        recovery = Recovery(app=self.app, entry_class=self.Entry, store=store, lock=lock, token=token,
                            lock_timeout=self.lock_timeout, batch_size=conf.claim_batch_size, publisher=publisher,
                            on_finish=on_finish, outcomes=self.outcomes)
        decider = Decider(self.app, self.Entry, store.keys, token, self.lock_timeout, self._definitions)
        return Ticker(store=store, lock=lock, conf=conf, token=token, lock_timeout=self.lock_timeout,
                      max_interval=self.max_interval, clock=self._clock, now=self.clock, health=self.health,
                      outcomes=self.outcomes, broker=broker,
                      statics=StaticSync(store, self.static_schedule, self._maybe_entry),
                      budget=DecideBudget(decider, self.lock_timeout), on_finish=on_finish,
                      publisher=publisher, recovery=recovery, metrics=self.metrics)

    def _message_sender(self) -> MessageSender:
        """How the runs of the next batch are published, asked once per batch.

        celery-redbeat 2.x's tick called ``maybe_due`` for each entry due, and
        subclasses and integrations (sentry-sdk 2.0 to 2.28) replace it or
        ``apply_entry``: then each run goes through them, once. Otherwise
        straight to ``apply_async``, which is looked up at each call and so
        honoured either way (sentry-sdk 2.29 and later replace it).
        """
        if self._publish_hooks_replaced():
            return self._send_through_maybe_due
        return self._send_message

    def _publish_hooks_replaced(self) -> bool:
        """Whether ``maybe_due`` or ``apply_entry`` is another than RedBeat's, on the class or the instance."""
        hooks = type(self).maybe_due, type(self).apply_entry
        return hooks != _OWN_PUBLISH_HOOKS or "maybe_due" in vars(self) or "apply_entry" in vars(self)

    def _send_message(self, message: RedBeatSchedulerEntry) -> None:
        self.apply_async(message, producer=self.producer, advance=False)

    def _send_through_maybe_due(self, message: RedBeatSchedulerEntry) -> None:
        # The producer by keyword, as 2.x passed it: sentry-sdk's wrapper takes
        # exactly (scheduler, entry) as positional arguments.
        self.maybe_due(message, producer=self.producer)

    # -- Celery's hooks, for each run published ----------------------------------

    def maybe_due(self, entry: RedBeatSchedulerEntry, producer: Any = None) -> float:
        """Publish ``entry`` if it is due; the seconds until it is next due.

        For a run beat claimed (its tick calls this hook only when a subclass
        or an integration replaced it or ``apply_entry``), the claim decided
        already that it is due: it is published without asking again. Any
        other entry is published if ``is_due`` says so, without recording the
        run (beat's tick records the runs it publishes).
        """
        run = claimed_run(entry)
        if run is None:
            is_due, next_time_to_run = self.is_due(entry)
            if is_due:
                self.apply_entry(entry, producer=producer)
            return next_time_to_run
        self.apply_entry(entry, producer=producer)
        return self._seconds_to_next_run(entry, run.scheduled, run.run_now)

    def apply_entry(self, entry: RedBeatSchedulerEntry, producer: Any = None) -> None:
        """Publish ``entry`` now, through ``apply_async``.

        A run beat claimed fails with the error: beat's publisher records the
        failure and retries the run with the same task id (Celery's own
        ``apply_entry`` logs an error and goes on, which would lose the run).
        Any other entry is logged and its error logged, as Celery does.
        """
        if claimed_run(entry) is not None:
            self.apply_async(entry, producer=producer, advance=False)
            return
        logger.info("Scheduler: Sending due task %s (%s)", printable(entry.name), printable(entry.task),
                    extra=log_fields(entry))
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            logger.error("Scheduler: could not publish %s: %s", printable(entry.name),
                         printable(without_urls(str(exc))), extra=log_fields(entry))

    def reserve(self, entry: RedBeatSchedulerEntry) -> RedBeatSchedulerEntry:
        """Record a run of ``entry`` (Celery's ``apply_async`` does, unless told
        ``advance=False``); a run beat claimed was recorded by the claim, so a
        2.x-style ``maybe_due`` that calls ``apply_async(entry)`` records it once."""
        if claimed_run(entry) is not None:
            return entry
        return super().reserve(entry)

    def _seconds_to_next_run(self, entry: RedBeatSchedulerEntry, scheduled: float, run_now: bool) -> float:
        """Seconds from now until ``entry`` is due again after its run of ``scheduled``
        (``max_interval`` if it never is)."""
        now = self.clock()
        # A run-now request leaves the entry's schedule as it was.
        after = entry.last_run_at if run_now else datetime.fromtimestamp(scheduled, timezone.utc)
        plan = plan_runs(entry.key, entry.schedule, entry.policy(), after, None, entry.total_run_count + 1,
                         datetime.fromtimestamp(now, timezone.utc))
        if plan.runs:
            return 0.0
        if plan.fire_at is None:
            return float(self.max_interval)
        return max(0.0, plan.fire_at.timestamp() - now)

    # -- Celery's Scheduler API -------------------------------------------------

    def get_schedule(self) -> dict:
        """The entries due now and the next one due: never the whole schedule."""
        batch = self.store.read_due(None, self.conf.claim_batch_size)
        keys = [record.key for record in batch.records if record.kind == "hash"]
        if batch.next_key is not None and self.store.is_entry_key(batch.next_key):
            keys.append(batch.next_key)
        entries = {}
        for key in keys:
            try:
                entry = self.Entry.from_key(key.decode("utf-8", "replace"), app=self.app)
            except (KeyError, ValueError):
                continue
            entries[entry.name] = entry
        return entries

    def set_schedule(self, schedule: dict) -> None:
        self.update_from_dict(schedule)

    schedule = property(get_schedule, set_schedule)

    def close(self) -> None:
        try:
            self.outcomes.record(self.store)
            self.outcomes.count_unpublished(self.store)
            # Health checks then see at once that no beat ticks, instead of
            # waiting for the heartbeat to age.
            self.store.stop_heartbeat(self._token, self.clock())
            if self.lock is not None:
                self.store.check_out(self._token)  # a standby stopping leaves status at once
        except RedisError as exc:
            logger.warning("beat: could not record the last runs or stop the heartbeat: %s", exc)
        if self.lock is not None and self.lock.held:
            try:
                self.lock.release()
                logger.info("beat: Released lock %s", self.lock.key)
            except RedisError as exc:
                logger.warning("beat: could not release lock %s: %s", self.lock.key, exc)
        self.metrics.close()
        super().close()

    @property
    def info(self) -> str:
        lines = [f"       . redis -> {display_url(self.conf.redis_url)}"]
        if self.lock_key:
            lines.append(
                f"       . lock -> `{self.lock_key}` {humanize_seconds(self.lock_timeout)} "
                f"({self.lock_timeout:g}s)"
            )
        else:
            lines.append("       . lock -> disabled")
        return "\n".join(lines)


# RedBeat's own publish hooks, taken before anything can replace them on the class.
_OWN_PUBLISH_HOOKS = (RedBeatScheduler.maybe_due, RedBeatScheduler.apply_entry)


def acquire_distributed_beat_lock(sender: Any = None, *args: Any, **kwargs: Any) -> None:
    """Kept so that code which connects or disconnects it (celery-redbeat 2.x took
    the lock in a ``beat_init`` handler of this name) still imports. It does
    nothing: the lock is taken and kept by the scheduler's tick."""
