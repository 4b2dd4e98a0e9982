"""The publish stage of a tick: claimed runs to the broker, in batches, under the lock.

Before each batch the lock is confirmed and renewed; a beat that lost it,
or cannot reach Redis to confirm it, sends nothing more. A broker that is
down stops the publishing: the runs left wait for their retry. A run that
can never be published (``failures.classify`` says why) is given up at once
instead. What became of each run goes into the tick's ``Outcomes``; the runs
published are recorded right after each batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from celery.utils.log import get_logger
from redis.exceptions import RedisError

from .broker import Broker, broker_unreachable, reraise_shutdown
from .config import without_urls
from .entry import RedBeatSchedulerEntry
from .failures import Failure, FailureKind, classify
from .lock import BeatLock
from .logfields import log_fields
from .metrics import BeatMetrics
from .outcomes import Outcomes
from .printable import printable
from .records import InFlight, Outcome, OutcomeKind
from .stages import PublishStop, SentBatch
from .store import ScheduleStore

__all__ = ["Publisher", "Run", "DEADLINE_PASSED", "RENEW_FRACTION"]

logger = get_logger("celery.beat")

# While publishing, the lock is confirmed and renewed before each batch goes
# to the broker, and also before a message once this fraction of the lock
# timeout passed since it was last renewed: a slow broker then does not let it
# expire (as between ticks, a third survives two slow steps).
RENEW_FRACTION = 1 / 3
# Why a run waiting in flight is recorded as missed rather than published.
DEADLINE_PASSED = "its starting deadline passed while it waited in flight"

# One run of an entry to publish, with the entry it is published from.
Run = tuple[RedBeatSchedulerEntry, InFlight]


class _LockNotConfirmedError(Exception):
    """The lock was lost while publishing, or Redis could not confirm it (``reason``): raised
    inside kombu's batch context so that it discards the messages buffered there."""

    def __init__(self, reason: PublishStop) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Progress:
    """How far a batch got: the runs sent, how many were tried, why it stopped, and when
    (monotonic) the lock was last confirmed; how each run that failed failed, by task id
    (shared by the batches of one publish)."""

    renewed_at: float
    failures: dict[str, Failure]
    sent: list[InFlight] = field(default_factory=list)
    attempted: int = 0
    handed: int = 0  # runs handed to the broker (a run past its deadline is attempted, not handed)
    counted: int = 0  # of those, failures already counted in the metrics one by one
    stop: PublishStop | None = None


class Publisher:
    """Publishes runs in flight for one beat.

    ``send`` hands one run to the broker and returns the error if that
    failed (``Broker.send``; a test passes a fake). ``clock`` is now in UNIX
    seconds by Redis's clock.
    """

    def __init__(self, *, send: Callable[[RedBeatSchedulerEntry, InFlight], Exception | None], broker: Broker,
                 store: ScheduleStore, lock: BeatLock | None, token: str, clock: Callable[[], float],
                 outcomes: Outcomes, batch_size: int, lock_timeout: float,
                 metrics: BeatMetrics | None = None) -> None:
        self.send = send
        self.broker = broker
        self.store = store
        self.lock = lock
        self.token = token
        self.clock = clock
        self.outcomes = outcomes
        self.batch_size = batch_size
        self.lock_timeout = lock_timeout
        self.metrics = BeatMetrics() if metrics is None else metrics

    def publish(self, runs: Sequence[Run], renewed_at: float) -> set[str]:
        """Publish runs in flight; keep those that failed for a retry.

        The runs of each batch are recorded as published (forgotten in flight,
        written to their history) as soon as the broker took the batch: until
        then, a beat that stalls past its lock timeout leaves them to the next
        lock holder, which publishes them again. ``renewed_at`` (monotonic)
        is when the lock was last confirmed. Returns the task ids published.
        """
        published: set[str] = set()
        failed: list[InFlight] = []
        failures: dict[str, Failure] = {}
        position = 0
        while position < len(runs):
            batch = self._send_batch(runs[position:self._batch_end(runs, position)], renewed_at, failures)
            renewed_at = batch.renewed_at
            sent_ids = {run.task_id for run in batch.sent}
            failed += [run for _, run in runs[position:position + batch.attempted] if run.task_id not in sent_ids]
            position += batch.attempted
            sent_at = self.clock()
            published |= sent_ids
            self.outcomes.add(Outcome(run, OutcomeKind.PUBLISHED, sent_at) for run in batch.sent)
            self.outcomes.record(self.store)
            if batch.stop == PublishStop.BROKER_DOWN:
                # After a connection error the rest of the batch waits for its
                # retry rather than each run waiting out the broker's own retries.
                failed += [run for _, run in runs[position:]]
                break
            if batch.stop == PublishStop.LOCK_LOST:
                assert self.lock is not None  # only a lock held can be lost
                logger.warning("beat: lost lock %s while publishing; leaving %d runs to the lock holder",
                               self.lock.key, len(runs) - position, extra=log_fields(count=len(runs) - position))
            if batch.stop in (PublishStop.LOCK_LOST, PublishStop.REDIS_DOWN):
                break  # the runs left stay in flight; the next read of the tick says what happened
        if failed:
            self._failed(failed, failures)
        return published

    def _batch_end(self, runs: Sequence[Run], start: int) -> int:
        """Where the batch that starts at ``start`` ends.

        A run that failed before goes alone: its last batch may have reached
        the broker in part, and alone it can neither be refused with others
        nor bring a refused message back with it again.
        """
        if runs[start][1].attempts:
            return start + 1
        end = min(start + self.batch_size, len(runs))
        for position in range(start + 1, end):
            if runs[position][1].attempts:
                return position
        return end

    def _send_batch(self, runs: Sequence[Run], renewed_at: float, failures: dict[str, Failure]) -> SentBatch:
        """Publish runs in one go.

        The lock is confirmed (and renewed) before the batch goes to the
        broker: just before the batch context sends what it buffered, or
        before the first message where messages go out one by one; and before
        a message whenever ``RENEW_FRACTION`` of the lock timeout passed since.
        A beat that finds the lock gone sends nothing more: the buffered batch
        is dropped unsent, and its runs stay in flight for the lock holder.
        When the batch as a whole fails to reach the broker, its delivery is
        uncertain: none of its runs counts as sent, and all are retried with
        the same task ids, each alone: a batch of one run failed for that run
        (a broker that refuses what a buffered batch sends says so at its end).
        """
        progress = _Progress(renewed_at, failures)
        buffered = self.broker.buffers()
        try:
            with self.broker.batch():
                if not buffered:
                    progress.renewed_at = self._renew_lock()
                self._send_each(runs, progress)
                if buffered:
                    progress.renewed_at = self._renew_lock()
        except _LockNotConfirmedError as exc:
            # Raised inside the batch context, which discards what it buffered.
            if buffered:
                return SentBatch([], 0, exc.reason, progress.renewed_at)
            return SentBatch(progress.sent, progress.attempted, exc.reason, progress.renewed_at)
        except Exception as exc:
            reraise_shutdown(exc)
            logger.error("beat: could not publish a batch of %d runs, some may have reached the broker; they are "
                         "retried one at a time with the same task ids: %s", progress.attempted,
                         printable(without_urls(str(exc))),
                         extra=log_fields(count=progress.attempted))
            stop = PublishStop.BROKER_DOWN if broker_unreachable(exc) else None
            failure = classify(exc)
            self.metrics.publish_failed(failure.kind.value, max(progress.handed - progress.counted, 0))
            if len(runs) == 1 and progress.attempted == 1:
                failures[runs[0][1].task_id] = failure
            return SentBatch([], progress.attempted, stop, progress.renewed_at)
        return SentBatch(progress.sent, progress.attempted, progress.stop, progress.renewed_at)

    def _send_each(self, runs: Sequence[Run], progress: _Progress) -> None:
        """Hand the runs to the broker one by one, until one finds it unreachable."""
        for entry, run in runs:
            if time.monotonic() - progress.renewed_at > self.lock_timeout * RENEW_FRACTION:
                progress.renewed_at = self._renew_lock()
            progress.attempted += 1
            if run.late_at(self.clock()):
                continue  # not sent: _failed records it as missed
            progress.handed += 1
            error = self.send(entry, run)
            if error is None:
                progress.sent.append(run)
                continue
            failure = progress.failures[run.task_id] = classify(error)
            self.metrics.publish_failed(failure.kind.value)
            progress.counted += 1
            if not failure.permanent:
                # Given up at once otherwise, and logged once per entry (Outcomes.add_given_up).
                logger.error("beat: could not publish %s (task id %s): %s", printable(run.key), run.task_id,
                             failure.error, extra=log_fields(entry, run=run, now=self.clock(),
                                                             failure_class=failure.kind.value))
            if broker_unreachable(error):
                progress.stop = PublishStop.BROKER_DOWN
                return

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

    def _failed(self, runs: list[InFlight], failures: dict[str, Failure]) -> None:
        """Keep runs that failed to publish for a retry; record those past their
        starting deadline as missed, and as given up those that can never be
        published (``failures``, by task id) and those out of attempts."""
        now = self.clock()
        retry: list[InFlight] = []
        given_up: list[tuple[Outcome, str]] = []
        missed: list[Outcome] = []
        for run in runs:
            if run.late_at(now):
                missed.append(Outcome(run, OutcomeKind.MISSED, now, DEADLINE_PASSED))
                continue
            run.token = self.token  # ours now: its backoff is ours to keep
            failure = failures.get(run.task_id)
            if failure is not None and failure.permanent:
                run.attempts += 1
                given_up.append((Outcome(run, OutcomeKind.GIVEN_UP, now, failure.reason), failure.kind.value))
            elif run.failed_at(now):
                given_up.append((Outcome(run, OutcomeKind.GIVEN_UP, now, _out_of_attempts(run, failure)),
                                 FailureKind.TRANSIENT.value))
            else:
                retry.append(run)
        self.store.retry_later(retry, self.lock)
        self.outcomes.add_given_up(given_up)
        self.outcomes.add_missed(missed)


def _out_of_attempts(run: InFlight, last: Failure | None) -> str:
    """Why a run that failed to publish all its attempts was given up: the last error, if known
    (a batch that failed as a whole leaves its runs without one)."""
    reason = f"{FailureKind.TRANSIENT}: the broker did not take it in {run.attempts} attempts"
    return reason if last is None else f"{reason}; last error: {last.error}"
