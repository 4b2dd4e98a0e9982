"""The decide stage of a tick within the lock's time budget.

``decide.Decider`` decides one entry with no I/O; a batch of them must be
decided before the lock expires, since the claim that follows is fenced by
it. An entry whose schedule is slow to compute must not hold up every entry
behind it, and every beat in turn.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from celery.utils.log import get_logger

from .decide import Decider
from .logfields import log_fields
from .printable import printable
from .stages import Action, Decision, DueRecord

__all__ = ["DecideBudget", "DECIDE_FRACTION", "ENTRY_CPU_FRACTION", "MIN_ENTRY_CPU"]

logger = get_logger("celery.beat")

# Deciding a batch stops after this fraction of the lock timeout, so the claim
# that follows still holds the lock.
DECIDE_FRACTION = 0.25
# One entry that takes this fraction of the lock timeout to decide (but not
# less than MIN_ENTRY_CPU seconds of CPU) is parked as too costly.
ENTRY_CPU_FRACTION = 0.1
MIN_ENTRY_CPU = 0.5


class DecideBudget:
    """Decides batches of due records for one beat, within its lock timeout."""

    def __init__(self, decider: Decider, lock_timeout: float) -> None:
        self.decider = decider
        self.lock_timeout = lock_timeout
        self._slow_once: set[bytes] = set()  # keys whose last decision took too much CPU

    def decide_batch(self, records: list[DueRecord], now: float, renewed_at: float,
                     newest_events: dict[bytes, bytes] | None = None) -> list[Decision]:
        """Decisions for a batch, in order, until ``DECIDE_FRACTION`` of the lock timeout
        passed since it was renewed (``renewed_at``, monotonic): the rest wait for the next batch.

        An entry that alone takes more than ``ENTRY_CPU_FRACTION`` of the lock
        timeout (in CPU time, so that a paused process does not count) is
        parked the second time in a row. ``newest_events``: the newest worker event of the
        entries that may set an overlap policy, by key.
        """
        events = newest_events or {}
        now_dt = datetime.fromtimestamp(now, timezone.utc)
        cpu_limit = max(self.lock_timeout * ENTRY_CPU_FRACTION, MIN_ENTRY_CPU)
        decisions: list[Decision] = []
        for record in records:
            if decisions and time.monotonic() - renewed_at > self.lock_timeout * DECIDE_FRACTION:
                break
            started = time.thread_time()
            decision = self.decider.decide(record, now_dt, events.get(record.key))
            decisions.append(self._within_cpu(record, decision, time.thread_time() - started, cpu_limit))
        return decisions

    def _within_cpu(self, record: DueRecord, decision: Decision, spent: float, cpu_limit: float) -> Decision:
        """``decision``, or a park if deciding its entry took more than ``cpu_limit`` seconds of CPU twice."""
        if spent <= cpu_limit or decision.action in (Action.PARK, Action.DROP):
            self._slow_once.discard(record.key)
        elif record.key in self._slow_once:
            # Twice in a row: not a garbage collection or a cold start that happened to fall on it.
            self._slow_once.discard(record.key)
            return self.decider.park(record, f"deciding when it runs took {spent:.2f}s of CPU (limit "
                                             f"{cpu_limit:.2f}s), twice: its schedule is too costly to evaluate")
        else:
            self._slow_once.add(record.key)
            logger.warning("beat: deciding %s took %.2fs of CPU (limit %.2fs); it is parked if that happens "
                           "again", printable(record.key_text), spent, cpu_limit,
                           extra=log_fields(key=record.key_text))
        return decision
