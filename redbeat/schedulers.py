"""The Celery-facing beat scheduler.

A tick flows one way: read the clock, renew the lock and read what is due
(one script), decide for each due entry, claim the decisions (one script,
fenced by the lock), publish what was claimed, forget what was published.
See docs/design.rst.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from celery.beat import Scheduler
from celery.schedules import crontab
from celery.utils.log import get_logger
from celery.utils.time import humanize_seconds
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import __version__
from .client import display_url, get_redis, get_store
from .config import DEFAULT_LOCK_TIMEOUT, ConfigurationError, RedBeatConfig, ensure_conf
from .decide import Decider, bounded
from .entry import RedBeatSchedulerEntry, reserved_options, without_reserved
from .lock import BeatLock, make_token
from .planning import latest_start, plan_waiting
from .printable import printable
from .records import NEVER, Heartbeat, InFlight, Outcome, OutcomeKind, Status
from .stages import Action, Decision, DueRecord, PublishStop, SentBatch, text
from .store import ScheduleStore, WrongTypeError

__all__ = [
    "RedBeatScheduler",
    "RedBeatSchedulerEntry",
    "RedBeatConfig",
    "ConfigurationError",
    "ensure_conf",
    "get_redis",
    "acquire_distributed_beat_lock",
    "REDBEAT_REDIS_KEY",
]

# The app attribute holding the client of get_redis(), as named in 2.x.
REDBEAT_REDIS_KEY = "redbeat_redis"

logger = get_logger("celery.beat")

# A tick that keeps finding full batches hands back to the beat loop after
# this many, so that shutdown and the remote-control health check stay responsive.
MAX_BATCHES_PER_TICK = 20
RETRY_FIRST = 0.1
RETRY_MAX = 1.0
# A host clock this many seconds off Redis's is warned about.
CLOCK_SKEW_WARNING = 1.0
# While publishing, the lock is confirmed and renewed before each batch goes
# to the broker, and also before a message once this fraction of the lock
# timeout passed since it was last renewed: a slow broker then does not let it
# expire (as between ticks, a third survives two slow steps).
RENEW_FRACTION = 1 / 3
# Deciding a batch stops after this fraction of the lock timeout, so the claim
# that follows still holds the lock.
DECIDE_FRACTION = 0.25
# One entry that takes this fraction of the lock timeout to decide (but not
# less than MIN_ENTRY_CPU seconds of CPU) is parked as too costly.
ENTRY_CPU_FRACTION = 0.1
MIN_ENTRY_CPU = 0.5
# Claiming, paused because redbeat_max_in_flight runs wait in flight, resumes
# once no more than this fraction of it wait: it does not flap at the limit.
RESUME_CLAIMING_FRACTION = 0.9
# Why a run waiting in flight is recorded as missed rather than published.
DEADLINE_PASSED = "its starting deadline passed while it waited in flight"


class DeadlinePassedError(Exception):
    """A run's starting deadline passed before it could be handed to the broker."""


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
        self._statics_synced = False
        self._standing_by = False
        self._broker_prepared = False
        self._failing_since: float | None = None  # UNIX seconds of the first of a run of failed ticks
        self._failure = ""  # why the last tick failed, for the heartbeat
        self._last_good_tick: float | None = None  # the heartbeat's last_tick
        self._retry_delay = RETRY_FIRST
        self.host_clock = time.time  # this host's clock (a test may set it off)
        self._clock_offset = 0.0  # Redis's clock minus this host's, as last seen
        self._clock_skewed = False
        self._slow_once: set[bytes] = set()  # keys whose last decision took too much CPU
        self._active_since: float | None = None
        self._token = make_token()  # names this beat in the lock and in its runs in flight
        # Runs published or given up, not yet forgotten in Redis (see _record_outcomes).
        self._unrecorded: list[Outcome] = []
        # Runs missed in flight, by entry key: (how many, newest slot), for its status (see _count_missed).
        self._uncounted: dict[str, tuple[int, float]] = {}
        # While too many runs wait in flight, claiming stops: since when, and how many wait.
        self._claiming_paused_since: float | None = None
        self._waiting = 0
        super().__init__(app, **kwargs)

    @property
    def store(self) -> ScheduleStore:
        return get_store(self.app)

    # -- start-up: static entries ---------------------------------------------

    def setup_schedule(self) -> None:
        # Nothing is read or written here: the static entries are written by
        # the first tick of the beat that holds the lock, so a standby started
        # with another configuration never fights the active beat over them,
        # and a Redis that is down at start delays them instead of failing beat.
        if self.lock_key:
            self.lock = BeatLock(self.store.client, self.lock_key, self.lock_timeout, self._token)

    def static_schedule(self) -> dict:
        """``beat_schedule`` plus the entries Celery itself adds (backend_cleanup)."""
        entries = dict(self.conf.schedule)
        if (self.app.conf.result_expires and not self.app.backend.supports_autoexpire
                and "celery.backend_cleanup" not in entries):
            entries["celery.backend_cleanup"] = {
                "task": "celery.backend_cleanup",
                "schedule": crontab("0", "4", "*"),
                "options": {"expires": 12 * 3600},
            }
        return entries

    def _sync_statics(self) -> None:
        """Make Redis hold exactly the static entries of the configuration.

        New and edited entries are written, keeping their run history;
        entries dropped from the configuration are deleted; entries created
        at run time (not in the statics set) are never touched.
        """
        wanted = self.static_schedule()
        changed, unchanged = self._prepare_writes(wanted)
        try:
            removed = self.store.static_names() - set(wanted)
        except WrongTypeError as exc:
            # Only a list of names: rebuilt from the configuration. Entries
            # since dropped from it stay, as entries created at run time do.
            aside = self.store.move_aside(exc.key, time.time())
            logger.error("beat: %s was a %s, not the set of static entry names; moved it aside to %s and "
                         "wrote the names again", exc.key, exc.found, aside)
            removed = set()
        # Names that failed to build stay in the set: their stored version
        # keeps running, and is deleted if the name leaves the configuration.
        # Only entry hashes are deleted: a key that holds something else now is someone else's.
        removed = {name for name, kind in zip(removed, self.store.key_types([self.store.key_for(n) for n in removed]))
                   if kind in ("hash", "none")}
        self.store.write_entries(changed, unchanged, removed, statics=list(wanted))
        self._statics_synced = True
        self._warn_if_redis_evicts()
        for name in removed:
            logger.info("beat: removed static entry %s (no longer in beat_schedule)", printable(name))
        logger.debug("beat: static entries: %d written, %d unchanged", len(changed), len(unchanged))

    def _prepare_writes(self, specs: dict) -> tuple[list, list]:
        """The (name, definition, meta, score) of entries new or changed, and (name, score)
        of the others: stored run history is kept, so a rewritten entry does not lose its place."""
        store = self.store
        names = list(specs)
        stored = store.load_many([store.key_for(name) for name in names])
        changed, unchanged = [], []
        for name, fields in zip(names, stored):
            if fields is None:
                logger.error("beat: static entry %s not written: its key %s holds another type than an entry hash "
                             "(someone else's data?)", printable(name), printable(store.key_for(name)))
                continue
            definition, meta = fields
            try:
                entry = self._maybe_entry(name, specs[name])
                new_definition = entry.definition_json()
            except Exception as exc:
                logger.error("beat: cannot use schedule entry %s: %s", printable(name), printable(exc))
                continue
            if definition is not None and _paused(definition) and "enabled" not in _spec_fields(specs[name]):
                entry.enabled = False  # paused at run time (redbeat pause): a re-sync keeps it paused
                new_definition = entry.definition_json()
            if meta:
                try:
                    state = entry.decode_meta(meta)
                    entry.last_run_at = state["last_run_at"]
                    entry.total_run_count = state["total_run_count"]
                except Exception as exc:
                    logger.warning("beat: entry %s has unreadable meta (%s); keeping it", printable(name),
                                   printable(exc))
            try:
                score = entry.score
            except Exception as exc:
                logger.error("beat: cannot schedule entry %s: %s", printable(name), printable(exc))
                continue
            if definition is not None and _same_json(definition, new_definition):
                unchanged.append((name, score))
            else:
                changed.append((name, new_definition, entry.meta_json(), score))
        return changed, unchanged

    def _warn_if_redis_evicts(self) -> None:
        policy = self.store.eviction_policy()
        if policy and policy.startswith("allkeys"):
            logger.warning(
                "beat: Redis is configured to evict any key under memory pressure (maxmemory-policy %s): "
                "it may silently delete schedule entries. Use noeviction or a volatile-* policy.", policy,
            )

    def update_from_dict(self, dict_: dict) -> None:
        """Save each entry of ``dict_`` to Redis, keeping the history of those that exist."""
        self.store.write_entries(*self._prepare_writes(dict_))

    # -- the tick ---------------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Dispatch what is due; return the seconds to sleep before the next tick.

        Never raises: Celery's beat loop would exit, and restart into the
        same data. Anything unexpected is logged and retried with a backoff.
        """
        try:
            interval = self._tick()
            self._record_outcomes()
            self._count_missed()
        except Exception as exc:
            return self._tick_failed(exc)
        self._tick_succeeded()
        return interval

    def _tick(self) -> float:
        lock = self.lock
        if lock is not None and not lock.held:
            self._prepare_broker()
            if not lock.acquire():
                if not self._standing_by:
                    self._standing_by = True
                    if lock.replaced == "entry":
                        logger.error("beat: lock key %s holds a schedule entry's hash; it is left alone, and no "
                                     "beat can take the lock: set redbeat_lock_key to a key no entry uses",
                                     printable(lock.key))
                    else:
                        logger.info("beat: lock %s is held by another beat; standing by, checking every %ss",
                                    lock.key, self._standby_interval())
                return self._standby_interval()
            self._standing_by = False
            self._active_since = None
            if lock.replaced:
                logger.error("beat: lock key %s held a %s, not a lock; replaced it with this beat's lock",
                             printable(lock.key), lock.replaced)
            logger.info("beat: Acquired lock %s; this beat is now active", lock.key)
            # Redis may have restarted without its data, or a beat with another
            # configuration may have been active: write the statics again.
            self._statics_synced = False
        store, limit = self.store, self.conf.claim_batch_size
        for batch_number in range(MAX_BATCHES_PER_TICK):
            renewed_at = time.monotonic()
            asked_at = self.host_clock()
            batch = store.read_due(None, limit, lock, self._heartbeat(self.clock()) if batch_number == 0 else "",
                                   published=self._unrecorded, repair=True)
            self._unrecorded = []
            if batch.lock_lost:
                return self._lock_lost()
            now = batch.now  # Redis's clock: every beat decides by the same one
            self._observe_clock(now, (asked_at + self.host_clock()) / 2)
            if batch.moved_in_flight:
                logger.error("beat: %s was a %s, not the hash of runs in flight; moved it aside to %s and "
                             "started a new one", store.inflight_key, *batch.moved_in_flight)
            if not self._statics_synced:
                # Only now, with the lock just checked and renewed: a beat
                # that lost it must not write an old configuration back.
                self._sync_statics()
            if batch_number == 0 and batch.in_flight:
                self._resume_in_flight(now, renewed_at)
            # The next wake-up is the first entry not yet due, or one this
            # batch reschedules sooner than that.
            next_scores = [batch.next_score] if batch.next_score is not None else []
            if batch.in_flight:
                next_scores.append(now + 1.0)  # runs waiting for a retry: look again soon
            if self._claiming_paused(batch.in_flight, now):
                return self._sleep_until(min(next_scores))
            decisions = self._decide_batch(batch.records, now, renewed_at)
            if decisions:
                claimed = store.claim(decisions, lock)
                if claimed is None:
                    return self._lock_lost()
                self._publish_claimed(claimed, renewed_at)
                next_scores += [d.score for d in decisions if d.score >= 0]
            if len(batch.records) < limit and len(decisions) == len(batch.records):
                return self._sleep_until(min(next_scores, default=None))
        return 0.0

    def _claiming_paused(self, in_flight: int, now: float) -> bool:
        """Whether to claim nothing now: ``redbeat_max_in_flight`` runs wait in flight
        (the broker is down, or slower than the schedule).

        Due entries then stay due; when claiming resumes, the slots they
        passed meanwhile follow their catch-up policy. Logged once as it
        starts and once as it ends, and shown in the heartbeat meanwhile.
        """
        limit = self.conf.max_in_flight
        self._waiting = in_flight
        if self._claiming_paused_since is None:
            if in_flight < limit:
                return False
            self._claiming_paused_since = now
            logger.warning(
                "beat: %d runs wait in flight (redbeat_max_in_flight is %d): claiming no new runs until no more "
                "than %d wait; due entries wait, and follow their catch-up policy when it resumes",
                in_flight, limit, int(limit * RESUME_CLAIMING_FRACTION))
            return True
        if in_flight > limit * RESUME_CLAIMING_FRACTION:
            return True
        logger.info("beat: claiming runs again after %.1fs: %d runs wait in flight",
                    now - self._claiming_paused_since, in_flight)
        self._claiming_paused_since = None
        return False

    def _decide_batch(self, records: list[DueRecord], now: float, renewed_at: float) -> list[Decision]:
        """Decisions for a batch, within a time budget: an entry whose schedule is slow to
        compute must not hold the claim past the lock's expiry. The rest wait for the next batch.

        An entry that alone takes more than ``ENTRY_CPU_FRACTION`` of the lock
        timeout (in CPU time, so that a paused process does not count) is
        parked: it would hold up every entry behind it, and every beat in turn.
        """
        now_dt = datetime.fromtimestamp(now, timezone.utc)
        cpu_limit = max(self.lock_timeout * ENTRY_CPU_FRACTION, MIN_ENTRY_CPU)
        decider = self._decider()
        decisions: list[Decision] = []
        for record in records:
            if decisions and time.monotonic() - renewed_at > self.lock_timeout * DECIDE_FRACTION:
                break
            started = time.thread_time()
            decision = decider.decide(record, now_dt)
            spent = time.thread_time() - started
            if spent <= cpu_limit or decision.action in (Action.PARK, Action.DROP):
                self._slow_once.discard(record.key)
            elif record.key in self._slow_once:
                # Twice in a row: not a garbage collection or a cold start that happened to fall on it.
                self._slow_once.discard(record.key)
                decision = decider.park(record, f"deciding when it runs took {spent:.2f}s of CPU (limit "
                                              f"{cpu_limit:.2f}s), twice: its schedule is too costly to evaluate")
            else:
                self._slow_once.add(record.key)
                logger.warning("beat: deciding %s took %.2fs of CPU (limit %.2fs); it is parked if that happens "
                               "again", printable(record.key_text), spent, cpu_limit)
            decisions.append(decision)
        deleting = [position for position, d in enumerate(decisions) if d.action == Action.DELETE]
        if deleting:
            waiting = self._keys_in_flight()
            for position in deleting:
                record = decisions[position].record
                if record.key_text in waiting:
                    # Its last run waits for a retry, which needs the entry: deleted once that is out.
                    decisions[position] = Decision(record, Action.MOVE, score=NEVER)
        return decisions

    def _keys_in_flight(self, published: Iterable[str] = ()) -> set[str]:
        """Keys of the entries with runs in flight, leaving out the runs ``published``
        (their records are forgotten later). Read only when an entry is to be deleted."""
        # Runs given up or missed are forgotten later too.
        published = set(published) | {outcome[0].task_id for outcome in self._unrecorded}
        return {run.key for run in self.store.in_flight()[1] if run.task_id not in published}

    def clock(self) -> float:
        """Now, in UNIX seconds by Redis's clock (this host's clock, corrected by
        the offset seen at the last read)."""
        return self.host_clock() + self._clock_offset

    def _observe_clock(self, redis_now: float, local_now: float) -> None:
        """Note how far this host's clock is from Redis's, and warn when it is far off:
        RedBeat decides by Redis's clock, but the task messages, the worker and the
        logs of this host go by its own."""
        offset = redis_now - local_now
        skewed = abs(offset) > CLOCK_SKEW_WARNING
        if skewed and not self._clock_skewed:
            logger.warning("beat: this host's clock is %.1fs %s Redis's; beat decides by Redis's clock, but "
                           "fix this host's time (NTP): task ETAs and logs here go by it",
                           abs(offset), "behind" if offset > 0 else "ahead of")
        elif self._clock_skewed and not skewed:
            logger.info("beat: this host's clock is within %.1fs of Redis's again", CLOCK_SKEW_WARNING)
        self._clock_skewed = skewed
        self._clock_offset = offset

    def _heartbeat(self, now: float) -> str:
        """Who ticks, and how well: read by ``redbeat status``.

        Health means ticks complete, not that they start: ``last_tick``
        advances only while the ticks before this one completed, so it ages
        while ticks fail, and ``error`` says why. It is written as a tick
        starts, at no round trip of its own.
        """
        if self._active_since is None:
            self._active_since = now
        if self._failing_since is None or self._last_good_tick is None:
            self._last_good_tick = now
        paused = self._claiming_paused_since is not None
        return Heartbeat(
            token=self._token, last_tick=self._last_good_tick, host=socket.gethostname(), pid=os.getpid(),
            version=__version__, active_since=self._active_since, lock_timeout=self.lock_timeout,
            max_interval=self.max_interval, clock_offset=round(self._clock_offset, 3),
            failing_since=self._failing_since, error=self._failure if self._failing_since is not None else None,
            claiming_paused=(f"{self._waiting} runs waiting in flight (redbeat_max_in_flight is "
                             f"{self.conf.max_in_flight})") if paused else None,
            claiming_paused_since=self._claiming_paused_since,
        ).to_json()

    # -- publishing -------------------------------------------------------------

    def _publish_claimed(self, claimed: list[Decision], renewed_at: float) -> None:
        published = self._publish([(d.entry, run) for d in claimed for run in d.runs], renewed_at)
        self._delete_finished([(d.record.key_text, d.entry) for d in claimed if d.runs and d.score == NEVER],
                              published)

    def _delete_finished(self, finished: list[tuple[str, RedBeatSchedulerEntry]], published: set[str]) -> None:
        """Delete the entries, given as (key, entry), that ran for the last time and asked for
        that (on_finish: delete), once none of their runs is left in flight: a retry needs the entry."""
        finished = [(key, entry) for key, entry in finished
                    if bounded(entry) and entry.policy().on_finish == "delete"]
        if not finished:
            return
        waiting = self._keys_in_flight(published)
        for key, entry in finished:
            if key not in waiting:
                self.store.delete(key)
                logger.info("beat: deleted %s after its last run (on_finish: delete)", printable(entry.name))

    def _publish(self, runs: list[tuple[RedBeatSchedulerEntry, InFlight]], renewed_at: float) -> set[str]:
        """Publish runs in flight; keep those that failed for a retry.

        The runs of each batch are recorded as published (forgotten in flight,
        written to their history) as soon as the broker took the batch: until
        then, a beat that stalls past its lock timeout leaves them to the next
        lock holder, which publishes them again. ``renewed_at`` (monotonic)
        is when the lock was last confirmed. Returns the task ids published.
        """
        published: set[str] = set()
        failed: list[InFlight] = []
        position = 0
        while position < len(runs):
            batch = self._send_batch(runs[position:self._batch_end(runs, position)], renewed_at)
            renewed_at = batch.renewed_at
            sent_ids = {run.task_id for run in batch.sent}
            failed += [run for _, run in runs[position:position + batch.attempted] if run.task_id not in sent_ids]
            position += batch.attempted
            sent_at = self.clock()
            published |= sent_ids
            self._unrecorded += [Outcome(run, OutcomeKind.PUBLISHED, sent_at) for run in batch.sent]
            self._record_outcomes()
            if batch.stop == PublishStop.BROKER_DOWN:
                # After a connection error the rest of the batch waits for its
                # retry rather than each run waiting out the broker's own retries.
                failed += [run for _, run in runs[position:]]
                break
            if batch.stop == PublishStop.LOCK_LOST:
                assert self.lock is not None  # only a lock held can be lost
                logger.warning("beat: lost lock %s while publishing; leaving %d runs to the lock holder",
                               self.lock.key, len(runs) - position)
            if batch.stop in (PublishStop.LOCK_LOST, PublishStop.REDIS_DOWN):
                break  # the runs left stay in flight; the next read of the tick says what happened
        if failed:
            self._publish_failed(failed)
        return published

    def _batch_end(self, runs: list[tuple[RedBeatSchedulerEntry, InFlight]], start: int) -> int:
        """Where the batch that starts at ``start`` ends.

        A run that failed before goes alone: its last batch may have reached
        the broker in part, and alone it can neither be refused with others
        nor bring a refused message back with it again.
        """
        if runs[start][1].attempts:
            return start + 1
        end = min(start + self.conf.publish_batch_size, len(runs))
        for position in range(start + 1, end):
            if runs[position][1].attempts:
                return position
        return end

    def _send_batch(self, runs: list[tuple[RedBeatSchedulerEntry, InFlight]], renewed_at: float) -> SentBatch:
        """Publish runs in one go.

        The lock is confirmed (and renewed) before the batch goes to the
        broker: just before the batch context sends what it buffered, or
        before the first message where messages go out one by one; and before
        a message whenever ``RENEW_FRACTION`` of the lock timeout passed since.
        A beat that finds the lock gone sends nothing more: the buffered batch
        is dropped unsent, and its runs stay in flight for the lock holder.
        When the batch as a whole fails to reach the broker, its delivery is
        uncertain: none of its runs counts as sent, and all are retried with
        the same task ids.
        """
        sent: list[InFlight] = []
        attempted = 0
        stop = None
        buffered = self._publish_buffered()
        try:
            with self._broker_batch():
                if not buffered:
                    renewed_at = self._renew_lock()
                for entry, run in runs:
                    if time.monotonic() - renewed_at > self.lock_timeout * RENEW_FRACTION:
                        renewed_at = self._renew_lock()
                    attempted += 1
                    error = self._send(entry, run)
                    if error is None:
                        sent.append(run)
                    elif _broker_unreachable(error):
                        stop = PublishStop.BROKER_DOWN
                        break
                if buffered:
                    renewed_at = self._renew_lock()
        except _LockNotConfirmedError as exc:
            # Raised inside the batch context, which discards what it buffered.
            if buffered:
                return SentBatch([], 0, exc.reason, renewed_at)
            return SentBatch(sent, attempted, exc.reason, renewed_at)
        except Exception as exc:
            _reraise_shutdown(exc)
            logger.error("beat: could not publish a batch of %d runs, some may have reached the broker; they are "
                         "retried one at a time with the same task ids: %s", attempted, exc)
            return SentBatch([], attempted, PublishStop.BROKER_DOWN if _broker_unreachable(exc) else None, renewed_at)
        return SentBatch(sent, attempted, stop, renewed_at)

    def _renew_lock(self) -> float:
        """Confirm that the lock is still ours and renew it: when (monotonic);
        raises ``_LockNotConfirmedError`` if it was lost or Redis did not answer."""
        asked_at = time.monotonic()
        if self.lock is None:
            return asked_at
        try:
            held = self.lock.renew()
        except RedisError as exc:
            raise _LockNotConfirmedError(PublishStop.REDIS_DOWN) from exc
        if not held:
            raise _LockNotConfirmedError(PublishStop.LOCK_LOST)
        return asked_at

    def _prepare_broker(self) -> None:
        """Connect to the broker and declare the default queue, before taking the lock.

        On a distant broker that takes several round trips (a connection, its
        channel's own, the queue's declaration): over two seconds at 300 ms
        each. Counted against the lock in the first publish, it let the lock
        expire, and beats took it from one another at start-up. Tried once
        (Celery's broker_connection_max_retries apply): later, kombu
        reconnects as it publishes.
        """
        if self._broker_prepared:
            return
        self._broker_prepared = True
        try:
            self.producer.maybe_declare(self.app.amqp.default_queue)
        except Exception as exc:
            logger.warning("beat: could not connect to the broker before taking the lock (%s); the first publish "
                           "will try again", printable(exc))

    def _publish_buffered(self) -> bool:
        """Whether messages published in ``_broker_batch`` wait for the end of it.

        kombu 5.7 and later buffer them on the transports that can (a pipeline
        on Redis); on the others, and with older kombu, each goes out as it is
        published.
        """
        producer = self.producer
        return (self.conf.publish_batch_size > 1 and hasattr(producer, "batch")
                and bool(getattr(producer, "supports_batch_publish", False)))

    def _broker_batch(self) -> contextlib.AbstractContextManager:
        """A context in which publishing buffers messages and sends them at its
        end, if the transport can (``_publish_buffered``); if it exits with an
        exception, kombu discards what it buffered."""
        if not self._publish_buffered():
            return contextlib.nullcontext()
        # No flush of its own inside a batch: only the end of the context
        # sends, so that a batch is published or failed as a whole.
        return self.producer.batch(max_size=1_000_000)

    def _record_outcomes(self) -> None:
        """Forget the runs published or given up, and write their history.

        Published runs are recorded after each batch; runs given up ride
        along with the tick's next read, or are recorded at its end. Until
        then, the next lock holder publishes them again, with the same task ids.
        """
        if self._unrecorded:
            self.store.record(self._unrecorded)
            self._unrecorded = []

    def _send(self, entry: RedBeatSchedulerEntry, run: InFlight) -> Exception | None:
        """Publish one run; the error if it failed."""
        if run.late_at(self.clock()):
            return DeadlinePassedError(run.task_id)  # recorded as missed by _publish_failed
        logger.info("Scheduler: Sending due task %s (%s)", printable(entry.name), printable(entry.task))
        try:
            options = dict(entry.options or {})
            refused = reserved_options(options)
            if refused:
                # Loading refuses such definitions; one built another way must not
                # change the task the worker runs or its id either.
                logger.error("beat: entry %s sets %s, which Celery's task protocol or RedBeat owns; sent without",
                             printable(entry.name), ", ".join(refused))
                options = without_reserved(options)
            options["task_id"] = run.task_id
            # Which run this is, for workers that want to recognise a duplicate.
            options["headers"] = {**(options.get("headers") or {}),
                                  "redbeat_key": run.key, "redbeat_scheduled": run.scheduled}
            # One entry may send several runs, each with its own id: publish a copy.
            # (copy.copy would go through ScheduleEntry.__reduce__, which drops the app.)
            message = object.__new__(type(entry))
            message.__dict__.update(entry.__dict__, options=options)
            self.apply_async(message, producer=self.producer, advance=False)
        except Exception as exc:
            _reraise_shutdown(exc)
            logger.error("beat: could not publish %s (task id %s): %s", printable(entry.name), run.task_id,
                         printable(exc))
            return exc
        return None

    def _publish_failed(self, runs: list[InFlight]) -> None:
        """Keep runs that failed to publish for a retry; record those past their
        starting deadline as missed, and those out of attempts as given up."""
        now = self.clock()
        retry: list[InFlight] = []
        given_up: list[InFlight] = []
        missed: list[Outcome] = []
        for run in runs:
            if run.late_at(now):
                missed.append(Outcome(run, OutcomeKind.MISSED, now, DEADLINE_PASSED))
                continue
            run.token = self._token  # ours now: its backoff is ours to keep
            (given_up if run.failed_at(now) else retry).append(run)
        self.store.retry_later(retry, self.lock)
        for run in given_up:
            logger.error(
                "beat: run of %s scheduled at %s failed to publish %d times; recorded as failed, not retried",
                printable(run.key), datetime.fromtimestamp(run.scheduled, timezone.utc).isoformat(), run.attempts,
            )
        self._unrecorded += [Outcome(run, OutcomeKind.GIVEN_UP, now,
                                     f"the broker did not take it in {run.attempts} attempts") for run in given_up]
        self._record_missed(missed)

    def _record_missed(self, missed: list[Outcome]) -> None:
        """Record runs in flight that will not be published: in their history (with the
        next read, as published runs are), in their entries' status (at the end of the
        tick), and in one log line per entry and reason."""
        self._unrecorded += missed
        for (key, reason), count in Counter((o.run.key, o.reason) for o in missed).items():
            logger.warning("beat: %s missed %d run(s) that waited in flight: %s", printable(key), count, reason)
        for outcome in missed:
            count, newest = self._uncounted.get(outcome.run.key, (0, 0.0))
            self._uncounted[outcome.run.key] = (count + 1, max(newest, outcome.run.scheduled))

    def _count_missed(self) -> None:
        """Add the runs missed in flight to their entries' ``status`` (``missed``, ``last_missed_at``).

        At the end of a tick, after its claims: a claim writes the status it
        read at the start of the tick, and would undo a count made in between.
        Two round trips however many runs: read the statuses, then write each
        only if it did not change meanwhile (another beat's claim); one that
        changed is read again, a few times at most.
        """
        keys = list(self._uncounted)
        for _ in range(3):
            if not keys:
                break
            writes = []
            for key, raw in zip(keys, self.store.statuses(keys)):
                old, (count, newest) = Status.from_json(raw), self._uncounted[key]
                writes.append((key, raw, old.to_json(missed=old.missed + count,
                                                     last_missed_at=max(old.last_missed_at or 0.0, newest))))
            changed = self.store.write_statuses(writes)
            for key in set(keys) - set(changed):
                del self._uncounted[key]  # counted: a failure after this must not count it again
            keys = changed
        self._uncounted = {}

    def _resume_in_flight(self, now: float, renewed_at: float) -> None:
        """Publish runs that were claimed but are not known to be published, as their
        entry's policy allows now: a run past its starting deadline, or superseded
        by a newer one under the catch-up policy, is recorded as missed instead.

        A run is taken over atomically before it is published or recorded, so
        no two beats act on it. With the lock held, runs claimed under another
        token are taken at once (their beat lost the lock); others wait for
        their retry time. At most one batch is resumed per tick, oldest first.
        """
        taken, waiting = self._take_ready(now)
        if not taken:
            return
        by_key: dict[str, list[InFlight]] = defaultdict(list)
        for run in taken:
            by_key[run.key].append(run)
        entries, resumed, missed, gone = {}, [], [], []
        for (key, runs), fields in zip(by_key.items(), self.store.load_many(list(by_key))):
            definition, meta = fields or (b"", None)
            try:
                if fields is None:
                    raise ValueError("its key holds another type than an entry hash")
                if not definition:
                    raise KeyError(key)
                entry = self.Entry.from_stored(definition, meta, app=self.app, key=key)
            except Exception as exc:
                if definition or fields is None:  # unreadable: its history says what became of its runs
                    missed += [Outcome(run, OutcomeKind.MISSED, now, printable(f"its entry cannot be read: {exc}"))
                               for run in runs]
                else:  # deleted, and its history with it
                    logger.warning("beat: dropping %d in-flight run(s) of %s: the entry is gone", len(runs),
                                   printable(key))
                    gone += [run.task_id for run in runs]
                continue
            entries[key] = entry
            publish, not_published = _settle_waiting(key, entry, runs, waiting[key], now)
            resumed += [(entry, run) for run in publish]
            missed += not_published
        self.store.finish(gone)
        self._record_missed(missed)
        resumed.sort(key=lambda pair: pair[1].scheduled)
        for _, run in resumed:
            logger.info("beat: resuming run of %s claimed at %s (task id %s)", printable(run.key),
                        datetime.fromtimestamp(run.claimed_at, timezone.utc).isoformat(), run.task_id)
        published = self._publish(resumed, renewed_at) if resumed else set()
        now_dt = datetime.fromtimestamp(now, timezone.utc)
        self._delete_finished([(key, entry) for key, entry in entries.items() if entry.plan(now_dt).finished],
                              published)  # those were its last runs

    def _take_ready(self, now: float) -> tuple[list[InFlight], dict[str, list[InFlight]]]:
        """Take over the runs in flight that are this beat's to act on now (at most a
        batch, oldest first); returns them, and every readable run in flight by entry key."""
        raw, runs, unreadable = self.store.in_flight()
        if unreadable:
            logger.error("beat: removing %d unreadable in-flight records from %s: %s",
                         len(unreadable), self.store.inflight_key,
                         ", ".join(printable(raw[task_id][:200]) for task_id in unreadable[:10]))
            self.store.finish([text(task_id) for task_id in unreadable])
        waiting: dict[str, list[InFlight]] = defaultdict(list)
        for run in runs:
            waiting[run.key].append(run)
        foreign_ok = self.lock is not None
        ready = sorted((run for run in runs if run.retry_at <= now or (foreign_ok and run.token != self._token)),
                       key=lambda run: run.scheduled)[:self.conf.claim_batch_size]
        if not ready:
            return [], waiting
        originals = [raw[run.task_id.encode()] for run in ready]
        for run in ready:
            run.token, run.retry_at = self._token, now + self.lock_timeout
        taken = self.store.take_over(list(zip(originals, ready)), self.lock) or set()
        return [run for run in ready if run.task_id in taken], waiting

    def _decider(self) -> Decider:
        # Built when asked: a subclass or a test may set Entry or the lock timeout after construction.
        return Decider(self.app, self.Entry, self.store.keys, self._token, self.lock_timeout)

    def _sleep_until(self, next_score: float | None) -> float:
        interval = self.max_interval
        if next_score is not None:
            interval = min(interval, max(next_score - self.clock(), 0.0))
        if self.lock is not None:
            # Renew well before expiry: a third of the timeout survives two missed renewals.
            interval = min(interval, self.lock_timeout / 3)
        return interval

    def _standby_interval(self) -> float:
        return min(self.conf.lock_poll_interval, self.max_interval)

    def _lock_lost(self) -> float:
        assert self.lock is not None  # only a lock held can be lost
        logger.warning(
            "beat: lost lock %s (it expired or another beat took it); back to standby, "
            "dispatching nothing until this beat holds it again", self.lock.key
        )
        self.lock.held = False
        return self._standby_interval()

    def _tick_failed(self, exc: Exception) -> float:
        """Log the first failure of a run of them (and any other kind of failure
        after it), and back off: 0.1 s doubling to 1 s."""
        failure = printable(f"{type(exc).__name__}: {exc}")[:500]
        if self._failing_since is None:
            self._failing_since = self.clock()
            self._retry_delay = RETRY_FIRST
        else:
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
        if failure != self._failure:
            if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                logger.error("beat: Redis at %s is unavailable (%s); retrying until it answers",
                             display_url(self.conf.redis_url), failure)
            elif isinstance(exc, WrongTypeError):
                logger.error("beat: cannot tick: %s; retrying, dispatching nothing meanwhile", failure)
            else:
                logger.exception("beat: tick failed (%s); retrying, dispatching nothing meanwhile", failure)
        self._failure = failure
        return self._retry_delay

    def _tick_succeeded(self) -> None:
        if self._failing_since is not None:
            logger.info("beat: ticking normally again after %.1fs of failed ticks", self.clock() - self._failing_since)
            self._failing_since = None
            self._failure = ""
            # A Redis that restarted without its data lost the static entries too.
            self._statics_synced = False

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
            self._record_outcomes()
            self._count_missed()
            # Health checks then see at once that no beat ticks, instead of
            # waiting for the heartbeat to age.
            self.store.stop_heartbeat(self._token, self.clock())
        except RedisError as exc:
            logger.warning("beat: could not record the last runs or stop the heartbeat: %s", exc)
        if self.lock is not None and self.lock.held:
            try:
                self.lock.release()
                logger.info("beat: Released lock %s", self.lock.key)
            except RedisError as exc:
                logger.warning("beat: could not release lock %s: %s", self.lock.key, exc)
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


class _LockNotConfirmedError(Exception):
    """The lock was lost while publishing, or Redis could not confirm it (``reason``): raised
    inside kombu's batch context so that it discards the messages buffered there."""

    def __init__(self, reason: PublishStop) -> None:
        super().__init__(reason)
        self.reason = reason


def acquire_distributed_beat_lock(sender: Any = None, *args: Any, **kwargs: Any) -> None:
    """Kept so that code which connects or disconnects it (celery-redbeat 2.x took
    the lock in a ``beat_init`` handler of this name) still imports. It does
    nothing: the lock is taken and kept by the scheduler's tick."""


def _broker_unreachable(exc: BaseException) -> bool:
    """Whether a publish failed for want of a broker (then the rest of the batch would too).

    kombu wraps what the broker's client raised, so the whole chain of causes
    counts: a broker that answered with an error (a Redis ResponseError, such
    as a queue key of the wrong type) refused one message and is not down.
    """
    chain = _causes(exc)
    if any(isinstance(cause, RedisResponseError) for cause in chain):
        return False
    return any(isinstance(cause, (OSError, ConnectionError, TimeoutError, KombuOperationalError,
                                  RedisConnectionError, RedisTimeoutError)) for cause in chain)


def _settle_waiting(key: str, entry: RedBeatSchedulerEntry, runs: list[InFlight], waiting: list[InFlight],
                    now: float) -> tuple[list[InFlight], list[Outcome]]:
    """Which of ``runs``, taken over, to publish, and which are missed, by the entry's
    policy over all its runs ``waiting`` in flight (see ``planning.plan_waiting``).

    A run-now request is no slot: no deadline nor catch-up applies to it, here as when it is claimed.
    """
    policy = entry.policy()
    slots = {run.task_id: datetime.fromtimestamp(run.scheduled, timezone.utc) for run in waiting + runs}
    plan = plan_waiting(key, policy, entry.last_run_at,
                        [slots[run.task_id] for run in waiting if not run.run_now],
                        datetime.fromtimestamp(now, timezone.utc))
    late, superseded = set(plan.late), set(plan.superseded)
    kept = f"the newest {max(policy.catch_up_max, 1)}" if policy.catch_up == "all" else "the newest"
    publish, missed = [], []
    for run in runs:
        slot = slots[run.task_id]
        if run.run_now:
            publish.append(run)
        elif slot in late:
            missed.append(Outcome(run, OutcomeKind.MISSED, now, DEADLINE_PASSED))
        elif slot in superseded:
            missed.append(Outcome(run, OutcomeKind.MISSED, now, f"catch_up {policy.catch_up} publishes {kept} of the "
                                                      f"runs of its entry waiting in flight"))
        else:
            run.publish_by = latest_start(key, slot, policy)
            publish.append(run)
    return publish, missed


def _reraise_shutdown(exc: BaseException) -> None:
    """Raise the SystemExit or KeyboardInterrupt behind ``exc``, if there is one.

    Celery's SIGTERM handler closes the scheduler and raises SystemExit
    wherever beat is; inside a publish, the broker's client then fails on the
    closed connection and raises an ordinary error instead. Caught as a
    failed publish, it would keep beat running after its shutdown.
    """
    for cause in _causes(exc):
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            raise cause


def _causes(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the chain of exceptions it was raised from or while handling."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _paused(definition: bytes) -> bool:
    try:
        return json.loads(definition).get("enabled") is False
    except (ValueError, AttributeError):
        return False


def _spec_fields(spec: Any) -> Any:
    return spec if isinstance(spec, dict) else vars(spec)


def _same_json(stored: bytes, written: str) -> bool:
    """Whether two JSON texts hold the same value (key order and 60 vs 60.0 aside)."""
    try:
        return json.loads(stored) == json.loads(written)
    except ValueError:
        return False
