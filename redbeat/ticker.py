"""One tick of the active beat, stage by stage (docs/design.rst walks them in order).

Take the lock (or stand by, checking in at each poll); then, batch after batch: read what is due,
renewing the lock and recording the outcomes of the last batch (one script);
resume runs left in flight; decide within the lock's budget; claim the
decisions (one script, fenced by the lock); publish the runs claimed and
forget them; and say how long to sleep until the next entry is due.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from celery.utils.log import get_logger

from . import __version__
from .broker import Broker
from .budget import DecideBudget
from .config import RedBeatConfig
from .finishing import OnFinish, last_runs
from .health import RedisClock, TickHealth
from .lock import BeatLock
from .metrics import BeatMetrics, MissedReason
from .outcomes import Outcomes
from .printable import printable
from .publisher import Publisher
from .records import Heartbeat, StandbyBeat
from .recovery import Recovery
from .stages import Decision, DueBatch
from .statics import StaticSync
from .store import ScheduleStore

__all__ = ["Ticker", "ClaimingPause", "MAX_BATCHES_PER_TICK", "RESUME_CLAIMING_FRACTION"]

logger = get_logger("celery.beat")

# A tick that keeps finding full batches hands back to the beat loop after
# this many, so that shutdown and the remote-control health check stay responsive.
MAX_BATCHES_PER_TICK = 20
# Claiming, paused because redbeat_max_in_flight runs wait in flight, resumes
# once no more than this fraction of it wait: it does not flap at the limit.
RESUME_CLAIMING_FRACTION = 0.9


class ClaimingPause:
    """Claiming stops while ``redbeat_max_in_flight`` runs wait in flight (the broker is
    down, or slower than the schedule): since when, and how many wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.since: float | None = None
        self.waiting = 0

    def paused(self, in_flight: int, now: float) -> bool:
        """Whether to claim nothing now, with ``in_flight`` runs waiting.

        Due entries then stay due; when claiming resumes, the slots they
        passed meanwhile follow their catch-up policy. Logged once as it
        starts and once as it ends, and shown in the heartbeat meanwhile.
        """
        limit = self.limit
        self.waiting = in_flight
        if self.since is None:
            if in_flight < limit:
                return False
            self.since = now
            logger.warning(
                "beat: %d runs wait in flight (redbeat_max_in_flight is %d): claiming no new runs until no more "
                "than %d wait; due entries wait, and follow their catch-up policy when it resumes",
                in_flight, limit, int(limit * RESUME_CLAIMING_FRACTION))
            return True
        if in_flight > limit * RESUME_CLAIMING_FRACTION:
            return True
        logger.info("beat: claiming runs again after %.1fs: %d runs wait in flight", now - self.since, in_flight)
        self.since = None
        return False

    def reason(self) -> str | None:
        """Why claiming is paused, for the heartbeat; None if it is not."""
        if self.since is None:
            return None
        return f"{self.waiting} runs waiting in flight (redbeat_max_in_flight is {self.limit})"


class Ticker:
    """Runs the ticks of one beat, through its stages.

    ``tick`` raises what Redis or a stage raised; the scheduler's tick logs it
    and backs off (``health.failed``).
    """

    def __init__(self, *, store: ScheduleStore, lock: BeatLock | None, conf: RedBeatConfig, token: str,
                 lock_timeout: float, max_interval: float, clock: RedisClock, now: Callable[[], float],
                 health: TickHealth,
                 outcomes: Outcomes, broker: Broker, statics: StaticSync, budget: DecideBudget,
                 on_finish: OnFinish, publisher: Publisher, recovery: Recovery,
                 metrics: BeatMetrics | None = None) -> None:
        self.store = store
        self.lock = lock
        self.conf = conf
        self.token = token
        self.lock_timeout = lock_timeout
        self.max_interval = max_interval
        self.clock = clock
        self.now = now  # the scheduler's clock(): Redis's time, as a subclass may tell it
        self.health = health
        self.outcomes = outcomes
        self.broker = broker
        self.statics = statics
        self.budget = budget
        self.on_finish = on_finish
        self.publisher = publisher
        self.recovery = recovery
        self.metrics = BeatMetrics() if metrics is None else metrics
        self.pause = ClaimingPause(conf.max_in_flight)
        self._standing_by = False

    def tick(self) -> float:
        """Dispatch what is due; the seconds to sleep before the next tick."""
        started = time.monotonic()
        interval = self._dispatch()
        self.outcomes.record(self.store)
        self.outcomes.count_unpublished(self.store)
        self.metrics.tick_finished(time.monotonic() - started, self.now())
        return interval

    def succeeded(self) -> None:
        """The tick completed."""
        if self.health.succeeded():
            # A Redis that restarted without its data lost the static entries too.
            self.statics.synced = False

    def _dispatch(self) -> float:
        if self.lock is None:
            self.metrics.lock_held(True)  # no lock: this beat is the active one
        elif not self.lock.held and not self._take_lock(self.lock):
            self._check_in()
            return self._standby_interval()
        for batch_number in range(MAX_BATCHES_PER_TICK):
            interval = self._batch(first=batch_number == 0)
            if interval is not None:
                return interval
        return 0.0

    def _take_lock(self, lock: BeatLock) -> bool:
        """Take the lock if it is free; whether this beat holds it now (else it stands by)."""
        self.broker.prepare()
        if not lock.acquire():
            self.metrics.lock_held(False)
            if not self._standing_by:
                self._standing_by = True
                if lock.replaced == "entry":
                    logger.error("beat: lock key %s holds a schedule entry's hash; it is left alone, and no "
                                 "beat can take the lock: set redbeat_lock_key to a key no entry uses",
                                 printable(lock.key))
                else:
                    logger.info("beat: lock %s is held by another beat; standing by, checking every %ss",
                                lock.key, self._standby_interval())
            return False
        was_standing_by, self._standing_by = self._standing_by, False
        self.metrics.lock_acquired()
        self.health.active_since = None
        self.outcomes.became_active()
        if lock.replaced:
            logger.error("beat: lock key %s held a %s, not a lock; replaced it with this beat's lock",
                         printable(lock.key), lock.replaced)
        logger.info("beat: Acquired lock %s; this beat is now active", lock.key)
        # Redis may have restarted without its data, or a beat with another
        # configuration may have been active: write the statics again.
        self.statics.synced = False
        if was_standing_by:
            # Last: should it fail, the lock is held and the next tick goes on. Until
            # then status leaves the lock holder out of the standbys.
            self.store.check_out(self.token)
        return True

    def _batch(self, first: bool) -> float | None:
        """Read, decide, claim and publish one batch; the seconds to sleep once the
        tick is done, or None to read the next batch at once."""
        renewed_at = time.monotonic()
        batch = self._read(first)
        if batch.lock_lost:
            return self._lock_lost()
        now = batch.now  # Redis's clock: every beat decides by the same one
        if not self.statics.synced:
            # Only now, with the lock just checked and renewed: a beat
            # that lost it must not write an old configuration back.
            self.statics.sync()
        if first and batch.in_flight:
            self.recovery.resume(now, renewed_at)
        # The next wake-up is the first entry not yet due, or one this
        # batch reschedules sooner than that.
        next_scores = [batch.next_score] if batch.next_score is not None else []
        if batch.in_flight:
            next_scores.append(now + 1.0)  # runs waiting for a retry: look again soon
        if self.pause.paused(batch.in_flight, now):
            return self._sleep_until(min(next_scores))
        # The newest worker event of the entries that may set an overlap policy: one round trip, if any.
        newest_events = self.store.newest_events(batch.records)
        decisions = self.on_finish.hold_deletes(self.budget.decide_batch(batch.records, now, renewed_at,
                                                                         newest_events))
        if decisions:
            claimed = self.store.claim(decisions, self.lock)
            if claimed is None:
                return self._lock_lost()
            self.metrics.claims_refused(len(decisions) - len(claimed))
            for decision in claimed:
                self.metrics.missed(MissedReason.CATCH_UP, decision.missed, decision.record.key_text)
            self.publish_claimed(claimed, renewed_at)
            # After publishing: a history line must never hold up the runs claimed.
            self.outcomes.add_skipped(self.store, [outcome for decision in claimed for outcome in decision.skipped])
            next_scores += [d.score for d in decisions if d.score >= 0]
        if len(batch.records) < self.conf.claim_batch_size and len(decisions) == len(batch.records):
            return self._sleep_until(min(next_scores, default=None))
        return None

    def _read(self, first: bool) -> DueBatch:
        """Read what is due, renewing the lock; the outcomes not yet recorded ride along,
        and the first read of a tick writes the heartbeat."""
        asked_at = self.clock.host_clock()
        batch = self.store.read_due(None, self.conf.claim_batch_size, self.lock,
                                    self._heartbeat(self.now()) if first else "",
                                    published=self.outcomes.unrecorded, repair=True)
        self.outcomes.forget_recorded()
        if batch.lock_lost:
            return batch
        self.metrics.read_due(max(batch.due - len(batch.records), 0), batch.in_flight)
        self.clock.observe(batch.now, (asked_at + self.clock.host_clock()) / 2)
        if batch.moved_in_flight:
            logger.error("beat: %s was a %s, not the hash of runs in flight; moved it aside to %s and "
                         "started a new one", self.store.inflight_key, *batch.moved_in_flight)
        return batch

    def publish_claimed(self, claimed: list[Decision], renewed_at: float) -> None:
        """Publish the runs of the decisions claimed; delete the entries that ran for the last time."""
        published = self.publisher.publish([(d.entry, run) for d in claimed for run in d.runs], renewed_at)
        self.on_finish.delete_finished(last_runs(claimed), published)

    def _heartbeat(self, now: float) -> str:
        """Who ticks, and how well: read by ``redbeat status``.

        Health means ticks complete, not that they start (see
        ``TickHealth.ticking``); ``error`` says why they fail. It is written
        as a tick starts, at no round trip of its own.
        """
        health = self.health
        return Heartbeat(
            token=self.token, last_tick=health.ticking(now), host=socket.gethostname(), pid=os.getpid(),
            version=__version__, active_since=health.active_since, lock_timeout=self.lock_timeout,
            max_interval=self.max_interval, clock_offset=round(self.clock.offset, 3),
            failing_since=health.failing_since, error=health.failure if health.failing_since is not None else None,
            claiming_paused=self.pause.reason(), claiming_paused_since=self.pause.since,
            given_up=self.outcomes.given_up or None, last_given_up=self.outcomes.last_given_up,
        ).to_json()

    def _check_in(self) -> None:
        """Record that this beat stands by, and when it checks the lock again: read by
        ``redbeat status`` and ``redbeat liveness``; one round trip per poll. The store
        sets the times by Redis's clock, which a standby has not read."""
        now = self.now()
        self.store.check_in(StandbyBeat(
            token=self.token, host=socket.gethostname(), pid=os.getpid(), version=__version__,
            last_check=now, next_check_within=self._standby_interval(), since=now))

    def _sleep_until(self, next_score: float | None) -> float:
        interval = self.max_interval
        if next_score is not None:
            interval = min(interval, max(next_score - self.now(), 0.0))
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
        self.metrics.lock_lost()
        return self._standby_interval()

