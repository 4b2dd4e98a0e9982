"""What workers report of the runs they execute, at ``<prefix>:worker-events:<name>``
(docs/format.rst): written by ``worker.py`` when a worker enables it, read by
``show`` and ``list``.

Each entry's list holds ``RunEvent`` records, newest first, capped at
``WORKER_EVENTS_PER_RUN`` times ``redbeat_history_size``: a run has a
``started`` event and one that ends it (and two more per retry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from .records import RunEvent
from .storepart import StorePart

__all__ = ["WorkerEvents", "WORKER_EVENTS_PER_RUN"]

WORKER_EVENTS_PER_RUN = 4


class WorkerEvents(StorePart):
    """The worker-events lists of a schedule's entries."""

    @property
    def worker_events_size(self) -> int:
        """How many events an entry's list keeps (0: none are recorded, as no history is)."""
        return WORKER_EVENTS_PER_RUN * self.conf.history_size

    def worker_events_key(self, key: str) -> bytes:
        """The list of the entry under ``key`` (given as ``admin.key_text``: any bytes name their key)."""
        return self.keys.worker_events(key).encode("utf-8", "surrogateescape")

    def record_worker_event(self, key: str, event: RunEvent) -> None:
        """Push ``event`` onto the list of the entry under ``key`` and cap it: one round
        trip (a transaction, so that the list is never left uncapped)."""
        size = self.worker_events_size
        if size <= 0:
            return
        events_key = self.worker_events_key(key)
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(events_key, event.to_json())
        pipe.ltrim(events_key, 0, size - 1)
        pipe.execute()

    def worker_events(self, key: str) -> list[bytes]:
        """The raw events of the entry under ``key``, newest first (ResponseError if its
        list is of another type)."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        return cast("list[bytes]", self.client.lrange(self.worker_events_key(key), 0, -1))

    def last_worker_events(self, keys: Sequence[str]) -> list[bytes | None]:
        """The newest raw event of each entry (None: none, or a list of another type); one
        round trip however many keys."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(self.worker_events_key(key), 0, 0)
        return [reply[0] if isinstance(reply, list) and reply else None
                for reply in pipe.execute(raise_on_error=False)]
