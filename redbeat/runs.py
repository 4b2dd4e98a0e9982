"""Runs: one dispatch of an entry for one scheduled time.

A run gets a task id derived from its entry and its scheduled time, so that
if a crash makes beat publish the same run twice, both messages carry the same
id and workers (or a result backend) can recognise the duplicate.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field

__all__ = ["InFlight", "task_id_for", "RUN_NAMESPACE", "MAX_PUBLISH_ATTEMPTS"]

# Fixed forever: changing it would change every task id RedBeat derives.
RUN_NAMESPACE = uuid.UUID("6f1d7a0e-4b1c-5c3e-9a57-2d0c8e3b9f41")
_NAMESPACE_BYTES = RUN_NAMESPACE.bytes
# A run whose publishing keeps failing (the broker is down) is retried this
# many times, backing off from 1 s to 30 s, then given up with an error log.
MAX_PUBLISH_ATTEMPTS = 10
RETRY_BACKOFF_MAX = 30.0
MAX_TIMESTAMP = 253402300800.0  # 10000-01-01: past it, datetime cannot follow
# JSON string literal of a str, as json.dumps writes it (ASCII only).
_string = json.encoder.encode_basestring_ascii


def task_id_for(key: str, scheduled: float) -> str:
    """The task id of the run of entry ``key`` scheduled at ``scheduled`` (UNIX seconds).

    ``uuid5(RUN_NAMESPACE, "<key>@<scheduled time in whole milliseconds>")``.
    """
    # uuid.uuid5, spelled out: building UUID objects costs more than the hash,
    # and beat derives an id for every run it dispatches.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{key}@{round(scheduled * 1000)}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hex_ = digest.hex()
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


@dataclass
class InFlight:
    """A run claimed for publishing, kept in ``<prefix>:inflight`` until published.

    Whoever holds the lock publishes a run whose record is still there at
    ``retry_at``: the beat that claimed it died, paused, or met a broker error.
    """

    task_id: str
    key: str
    scheduled: float
    claimed_at: float
    token: str
    retry_at: float
    attempts: int = 0
    # Asked for with run_now, not a slot of the schedule: no deadline or catch-up applies.
    run_now: bool = False
    # UNIX seconds after which the run must not reach the broker (its entry's
    # starting deadline); set by beat before publishing, not stored.
    publish_by: float | None = field(default=None, compare=False)

    def to_json(self) -> str:
        # The text json.dumps writes for these fields, built directly: beat
        # writes one record per run it dispatches. ``run_now`` only when true,
        # so that the records of slots read as before.
        return (f'{{"task_id": {_string(self.task_id)}, "key": {_string(self.key)}, "scheduled": {self.scheduled!r}, '
                f'"claimed_at": {self.claimed_at!r}, "token": {_string(self.token)}, '
                f'"retry_at": {self.retry_at!r}, "attempts": {int(self.attempts)}'
                + (', "run_now": true}' if self.run_now else "}"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> InFlight:
        """Read a record; unknown fields are ignored, wrong types raise ValueError or TypeError."""
        fields = json.loads(raw)
        run = cls(
            task_id=str(fields["task_id"]), key=str(fields["key"]), scheduled=float(fields["scheduled"]),
            claimed_at=float(fields["claimed_at"]), token=str(fields.get("token", "")),
            retry_at=float(fields["retry_at"]), attempts=int(fields.get("attempts", 0)),
            run_now=fields.get("run_now") is True,
        )
        if not all(0 <= moment < MAX_TIMESTAMP for moment in (run.scheduled, run.claimed_at, run.retry_at)):
            raise ValueError("times in an in-flight record must be UNIX seconds")
        return run

    def failed_at(self, now: float) -> bool:
        """Count a failed publish; True if the run has had all its attempts."""
        self.attempts += 1
        self.retry_at = now + min(2.0 ** (self.attempts - 1), RETRY_BACKOFF_MAX)
        return self.attempts >= MAX_PUBLISH_ATTEMPTS

    def late_at(self, now: float) -> bool:
        """Whether ``now`` is past the moment the run had to reach the broker by."""
        return self.publish_by is not None and now > self.publish_by
