"""What one stage of a tick hands the next (docs/design.rst walks them in order).

The read gives a ``DueBatch`` of ``DueRecord`` (raw bytes, as stored); the
decide stage turns each record into a ``Decision``; the claim applies the
decisions that still hold; the publisher reports each batch it sent as a
``SentBatch`` (with a ``PublishStop`` if it stopped early), and what became
of each run as a ``records.Outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from .records import NEVER, InFlight, Outcome

__all__ = ["Action", "DueRecord", "DueBatch", "Decision", "PublishStop", "SentBatch", "text"]


def text(value: bytes | str) -> str:
    """Text of a Redis reply; bytes that are not UTF-8 show as replacement characters."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Action(str, Enum):
    """What a decision does to its entry (the value is what the claim script reads)."""

    RUN = "run"  # write score, meta, status (and definition, if given); record its runs in flight
    MOVE = "move"  # the same without runs: not due yet, paused, or slots skipped
    PARK = "park"  # record why it cannot run, and take it out of the due range
    DROP = "drop"  # remove a member whose key is gone, no hash, or outside the prefix (the key stays)
    DELETE = "delete"  # remove the entry: its last run is done and it asked for that (on_finish: delete)

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class DueRecord:
    """An entry as read from Redis when it came due: raw bytes, not yet decoded."""

    key: bytes  # as stored: a member need not be valid UTF-8
    score: float
    definition: bytes | None
    meta: bytes | None
    status: bytes | None = None
    run_now: bytes | None = None
    kind: str = "hash"  # the Redis type of the key: 'none' when it is gone, 'outside' beyond the prefix

    @property
    def key_text(self) -> str:
        return text(self.key)


@dataclass(slots=True)
class DueBatch:
    """One read of what is due, with what the read learned on the way."""

    records: list[DueRecord]
    next_key: bytes | None = None  # the first entry not yet due, if any
    next_score: float | None = None
    in_flight: int = 0  # runs claimed but not yet known to be published
    lock_lost: bool = False
    # The in-flight key was of another type: (that type, where it was moved).
    moved_in_flight: tuple[str, str] | None = None
    now: float = 0.0  # the moment the batch was read at (UNIX seconds, Redis's clock unless given)
    due: int = 0  # how many entries were due at that moment (the batch holds at most a claim batch of them)


@dataclass(slots=True)
class Decision:
    """What to do with one due record; applied only if the record is unchanged.

    A ``run`` records ``runs`` in flight and clears a run-now request; the
    caller publishes the runs once the claim applied it. ``meta``, ``status``
    and ``definition`` are written when given; ``reason`` is the ``parked``
    record of a ``park``.
    """

    record: DueRecord
    action: Action | str
    score: float = NEVER
    meta: str | None = None
    status: str | None = None
    definition: str | None = None
    reason: str | None = None
    runs: tuple[InFlight, ...] = ()
    missed: int = 0  # slots its catch-up policy skipped (counted in its status; for metrics)
    skipped: tuple[Outcome, ...] = ()  # slots its overlap policy skipped (counted in its status; for its history)
    entry: Any = None  # the decoded entry, for publishing its runs; not stored


class PublishStop(str, Enum):
    """Why the publisher stopped before the end of its runs."""

    BROKER_DOWN = "broker down"  # the rest would fail too: they wait for their retry
    LOCK_LOST = "lock lost"  # another beat holds the lock: the runs left are its own
    REDIS_DOWN = "redis down"  # the lock could not be confirmed: the next read says what happened

    def __str__(self) -> str:
        return self.value


class SentBatch(NamedTuple):
    """What one batch sent to the broker did: the runs sent, how many it tried (those
    not sent failed), why it stopped before the end if it did, and when (monotonic)
    it last confirmed the lock."""

    sent: list[InFlight]
    attempted: int
    stop: PublishStop | None
    renewed_at: float
