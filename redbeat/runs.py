"""Task ids of runs: one dispatch of an entry for one scheduled time (its record
in flight is ``records.InFlight``).

A run gets a task id derived from its entry and its scheduled time, so that
if a crash makes beat publish the same run twice, both messages carry the same
id and workers (or a result backend) can recognise the duplicate.
"""

from __future__ import annotations

import hashlib
import uuid

__all__ = ["task_id_for", "RUN_NAMESPACE"]

# Fixed forever: changing it would change every task id RedBeat derives.
RUN_NAMESPACE = uuid.UUID("6f1d7a0e-4b1c-5c3e-9a57-2d0c8e3b9f41")
_NAMESPACE_BYTES = RUN_NAMESPACE.bytes


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
