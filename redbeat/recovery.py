"""Runs in flight: claimed, but not known to be published (their beat died, was
paused, or the broker refused them). The lock holder takes them over and
publishes them again, with the same task ids, as their entry's policy allows
now; the others are recorded as missed."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from celery.utils.log import get_logger

from .entry import RedBeatSchedulerEntry
from .finishing import OnFinish
from .lock import BeatLock
from .logfields import log_fields, runs_fields
from .outcomes import Outcomes
from .planning import latest_start, plan_waiting
from .printable import printable
from .publisher import DEADLINE_PASSED, Publisher, Run
from .records import InFlight, Outcome, OutcomeKind
from .stages import text
from .store import ScheduleStore

__all__ = ["Recovery", "settle_waiting"]

logger = get_logger("celery.beat")


class Recovery:
    """Resumes the runs in flight that are this beat's to act on."""

    def __init__(self, *, app: Celery, entry_class: Any, store: ScheduleStore, lock: BeatLock | None, token: str,
                 lock_timeout: float, batch_size: int, publisher: Publisher, on_finish: OnFinish,
                 outcomes: Outcomes) -> None:
        self.app = app
        self.entry_class = entry_class
        self.store = store
        self.lock = lock
        self.token = token
        self.lock_timeout = lock_timeout
        self.batch_size = batch_size
        self.publisher = publisher
        self.on_finish = on_finish
        self.outcomes = outcomes

    def resume(self, now: float, renewed_at: float) -> None:
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
        entries, resumed = self._settle(by_key, waiting, now)
        resumed.sort(key=lambda pair: pair[1].scheduled)
        for entry, run in resumed:
            logger.info("beat: resuming run of %s claimed at %s (task id %s)", printable(run.key),
                        datetime.fromtimestamp(run.claimed_at, timezone.utc).isoformat(), run.task_id,
                        extra=log_fields(entry, run=run, now=now))
        published = self.publisher.publish(resumed, renewed_at) if resumed else set()
        now_dt = datetime.fromtimestamp(now, timezone.utc)
        self.on_finish.delete_finished([(key, entry) for key, entry in entries.items()
                                        if entry.plan(now_dt).finished], published)  # those were its last runs

    def _settle(self, by_key: dict[str, list[InFlight]], waiting: dict[str, list[InFlight]],
                now: float) -> tuple[dict[str, RedBeatSchedulerEntry], list[Run]]:
        """Load the entries of the runs taken, by key: the entries, and the runs to publish;
        runs of an entry that cannot be read are missed, those of an entry gone are dropped."""
        entries, resumed, missed, gone = {}, [], [], []
        for (key, runs), fields in zip(by_key.items(), self.store.load_many(list(by_key))):
            definition, meta = (fields.definition, fields.meta) if fields is not None else (b"", None)
            try:
                if fields is None:
                    raise ValueError("its key holds another type than an entry hash")
                if not definition:
                    raise KeyError(key)
                entry = self.entry_class.from_stored(definition, meta, app=self.app, key=key)
            except Exception as exc:
                if definition or fields is None:  # unreadable: its history says what became of its runs
                    missed += [Outcome(run, OutcomeKind.MISSED, now, printable(f"its entry cannot be read: {exc}"))
                               for run in runs]
                else:  # deleted, and its history with it
                    logger.warning("beat: dropping %d in-flight run(s) of %s: the entry is gone", len(runs),
                                   printable(key), extra=runs_fields(runs, now=now))
                    gone += [run.task_id for run in runs]
                continue
            entries[key] = entry
            publish, not_published = settle_waiting(key, entry, runs, waiting[key], now)
            resumed += [(entry, run) for run in publish]
            missed += not_published
        self.store.finish(gone)
        self.outcomes.add_missed(missed)
        return entries, resumed

    def _take_ready(self, now: float) -> tuple[list[InFlight], dict[str, list[InFlight]]]:
        """Take over the runs in flight that are this beat's to act on now (at most a
        batch, oldest first); returns them, and every readable run in flight by entry key."""
        raw, runs, unreadable = self.store.in_flight()
        if unreadable:
            logger.error("beat: removing %d unreadable in-flight records from %s: %s",
                         len(unreadable), self.store.inflight_key,
                         ", ".join(printable(raw[task_id][:200]) for task_id in unreadable[:10]),
                         extra=log_fields(count=len(unreadable)))
            self.store.finish([text(task_id) for task_id in unreadable])
        waiting: dict[str, list[InFlight]] = defaultdict(list)
        for run in runs:
            waiting[run.key].append(run)
        foreign_ok = self.lock is not None
        ready = sorted((run for run in runs if run.retry_at <= now or (foreign_ok and run.token != self.token)),
                       key=lambda run: run.scheduled)[:self.batch_size]
        if not ready:
            return [], waiting
        originals = [raw[run.task_id.encode()] for run in ready]
        for run in ready:
            run.token, run.retry_at = self.token, now + self.lock_timeout
        taken = self.store.take_over(list(zip(originals, ready)), self.lock)
        if taken is None:
            return [], waiting  # the lock was lost: the next read says so
        self.outcomes.metrics.claims_refused(len(ready) - len(taken))
        return [run for run in ready if run.task_id in taken], waiting


def settle_waiting(key: str, entry: RedBeatSchedulerEntry, runs: list[InFlight], waiting: list[InFlight],
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
