"""What the overlap policies read and write in Redis (docs/scheduling.rst): the newest worker
event of the due entries that may set a policy, and the history of the slots they skipped.

Both pipelined, one round trip per batch, and none in a batch where no due entry sets a
policy or none skipped a slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from .overlap import mentions_overlap
from .records import Outcome
from .stages import DueRecord
from .workerevents import WorkerEvents

__all__ = ["OverlapStore"]


class OverlapStore(WorkerEvents):
    """The overlap policies' reads and writes."""

    def newest_events(self, records: Sequence[DueRecord]) -> dict[bytes, bytes]:
        """The current raw worker event (``overlap.current_event``: the newest, but for a late
        ``retried``) of each due record whose definition may set an overlap policy, by entry
        key (those without any event are left out): one round trip."""
        keys = [record.key for record in records if record.kind == "hash" and mentions_overlap(record.definition)]
        if not keys:
            return {}
        # A list of another type (someone else's data) reads as no event, as without workers.
        events = self.last_worker_events([key.decode("utf-8", "surrogateescape") for key in keys])
        return {key: event for key, event in zip(keys, events) if event is not None}

    def record_skipped(self, skipped: Sequence[Outcome]) -> None:
        """Push the slots skipped for overlap onto their entries' histories, capped: one round
        trip. (They were never in flight, so the record of published runs, which writes only
        runs still in flight, would not write them.)"""
        size = self.conf.history_size
        if not skipped or size <= 0:
            return
        pipe = self.client.pipeline(transaction=False)
        for outcome in skipped:
            history_key = self.history_key(outcome.run.key).encode("utf-8", "surrogateescape")
            pipe.lpush(history_key, outcome.history_record().to_json())
            pipe.ltrim(history_key, 0, size - 1)
        pipe.execute(raise_on_error=False)  # a history key of another type loses only its record
