"""Unit tests of the publish stage, driven by a fake ``send`` and fakes of the store, the
broker and the lock (no Redis, no broker): batches, stops, retries, missed and given-up runs.
The same paths against a real redis-server and broker are in test_scheduler.py."""

from __future__ import annotations

import contextlib
import logging
import time

from redbeat.outcomes import Outcomes, Unpublished
from redbeat.publisher import DEADLINE_PASSED, Publisher
from redbeat.records import MAX_PUBLISH_ATTEMPTS, InFlight, OutcomeKind

NOW = 2_000_000_000.0


def run_of(number: int, **fields) -> InFlight:
    return InFlight(task_id=f"t{number}", key="redbeat:e", scheduled=NOW - 10 + number, claimed_at=NOW - 10,
                    token="other-beat", retry_at=NOW + 10, **fields)


class FakeStore:
    def __init__(self) -> None:
        self.records: list[list[str]] = []  # task ids, one list per call of record
        self.retried: list[InFlight] = []

    def record(self, outcomes) -> None:
        self.records.append([outcome[0].task_id for outcome in outcomes])

    def retry_later(self, runs, lock=None) -> None:
        self.retried += runs


class FakeBroker:
    """Sends at once, or (``buffered``) at the end of a batch unless it exits with an error."""

    def __init__(self, buffered: bool = False) -> None:
        self.buffered = buffered
        self.pending: list[str] = []
        self.delivered: list[str] = []

    def buffers(self) -> bool:
        return self.buffered

    @contextlib.contextmanager
    def batch(self):
        try:
            yield
        except BaseException:
            self.pending.clear()
            raise
        self.delivered += self.pending
        self.pending.clear()

    def send(self, entry, run):
        (self.pending if self.buffered else self.delivered).append(run.task_id)


class FakeLock:
    key = "redbeat::lock"

    def __init__(self, held: bool = True) -> None:
        self.held = held
        self.renewals = 0

    def renew(self) -> bool:
        self.renewals += 1
        return self.held


def publisher_for(send=None, broker=None, lock=None, batch_size=100):
    broker = broker or FakeBroker()

    def send_to_broker(entry, run):
        broker.send(entry, run)
        return None
    return Publisher(send=send or send_to_broker, broker=broker, store=FakeStore(), lock=lock, token="me",
                     clock=lambda: NOW, outcomes=Outcomes(), batch_size=batch_size, lock_timeout=10.0)


def test_runs_go_in_batches_and_a_run_that_failed_before_goes_alone():
    broker = FakeBroker(buffered=True)
    lock = FakeLock()
    publisher = publisher_for(broker=broker, lock=lock, batch_size=2)
    runs = [run_of(0), run_of(1), run_of(2, attempts=1), run_of(3), run_of(4)]
    published = publisher.publish([(None, run) for run in runs], renewed_at=time.monotonic())
    assert published == {"t0", "t1", "t2", "t3", "t4"}
    # Each batch is recorded as soon as the broker took it, the lock confirmed before each.
    assert publisher.store.records == [["t0", "t1"], ["t2"], ["t3", "t4"]]
    assert lock.renewals == 3
    assert broker.delivered == ["t0", "t1", "t2", "t3", "t4"]


def test_a_broker_that_is_down_stops_publishing_and_the_runs_left_wait_for_their_retry():
    sent = []

    def send(entry, run):
        if run.task_id == "t1":
            return ConnectionError("broker unreachable")
        sent.append(run.task_id)
        return None
    publisher = publisher_for(send=send)
    published = publisher.publish([(None, run_of(number)) for number in range(4)], renewed_at=0.0)
    assert published == {"t0"} and sent == ["t0"]
    retried = publisher.store.retried
    assert [run.task_id for run in retried] == ["t1", "t2", "t3"]
    assert all(run.attempts == 1 and run.token == "me" for run in retried)  # its backoff is this beat's


def test_a_lock_lost_before_a_buffered_batch_is_sent_drops_the_batch_unsent(caplog):
    broker = FakeBroker(buffered=True)
    publisher = publisher_for(broker=broker, lock=FakeLock(held=False))
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        published = publisher.publish([(None, run_of(number)) for number in range(3)], renewed_at=0.0)
    assert published == set() and broker.delivered == []
    assert publisher.store.retried == []  # left in flight, for the lock holder
    assert "lost lock redbeat::lock while publishing; leaving 3 runs to the lock holder" in caplog.text


def test_a_run_past_its_deadline_is_never_sent_and_is_missed():
    broker = FakeBroker()
    publisher = publisher_for(broker=broker)
    late = run_of(0, publish_by=NOW - 1)
    assert publisher.publish([(None, late), (None, run_of(1))], renewed_at=0.0) == {"t1"}
    assert broker.delivered == ["t1"]
    [missed] = publisher.outcomes.unrecorded  # recorded with the tick's next read
    assert missed.outcome == OutcomeKind.MISSED and missed.reason == DEADLINE_PASSED
    assert publisher.outcomes.uncounted == {"redbeat:e": Unpublished(missed=1, last_missed_at=late.scheduled)}


def test_a_run_refused_on_its_last_attempt_is_given_up():
    publisher = publisher_for(send=lambda entry, run: ValueError("refused"))
    run = run_of(0, attempts=MAX_PUBLISH_ATTEMPTS - 1)
    assert publisher.publish([(None, run)], renewed_at=0.0) == set()
    assert publisher.store.retried == []
    [given_up] = publisher.outcomes.unrecorded
    assert given_up.outcome == OutcomeKind.GIVEN_UP
    assert given_up.reason == (f"transient: the broker did not take it in {MAX_PUBLISH_ATTEMPTS} attempts; "
                               "last error: ValueError: refused")
