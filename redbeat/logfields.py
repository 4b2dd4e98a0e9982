"""The structured fields of beat's log lines about entries and their runs.

Each line about one entry or one run passes them as ``extra=``, so a JSON log
formatter or a log search gets them without parsing the message (whose text
stays as people grep it). A LogRecord cannot take ``name``, ``msg`` or
``args``: the entry's fields are prefixed (``entry_name``, ``entry_key``).
A field unknown for a line is left out, never written as None. Names and keys
go through ``printable``, as in the message. See docs/logging.rst.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .printable import printable

if TYPE_CHECKING:
    from .entry import RedBeatSchedulerEntry
    from .records import InFlight

__all__ = ["log_fields", "runs_fields", "slot_fields", "FIELD_NAMES"]

# Every field a line may carry, in the order of docs/logging.rst.
FIELD_NAMES = ("entry_name", "entry_key", "task_name", "task_id", "slot", "slot_timestamp", "lateness",
               "failure_class", "count")


def log_fields(entry: RedBeatSchedulerEntry | None = None, *, name: str | None = None, key: str | None = None,
               run: InFlight | None = None, slot: float | None = None, now: float | None = None,
               failure_class: str | None = None, count: int | None = None) -> dict[str, Any]:
    """The ``extra=`` of a line about ``entry`` (or the entry ``name`` at ``key``), or one
    ``run`` of it: ``slot`` is the run's unless given (UNIX seconds), and ``lateness`` is
    ``now`` minus the slot (``now`` by Redis's clock, as beat decides), in seconds to the
    millisecond. ``count`` is for a line that groups several runs."""
    fields = _entry_fields(entry, name, key or (run.key if run is not None else None))
    if run is not None:
        fields["task_id"] = run.task_id
        slot = run.scheduled if slot is None else slot
    if slot is not None:
        fields.update(slot_fields(slot, now))
    if failure_class is not None:
        fields["failure_class"] = failure_class
    if count is not None:
        fields["count"] = count
    return fields


def _entry_fields(entry: RedBeatSchedulerEntry | None, name: str | None, key: str | None) -> dict[str, Any]:
    if entry is not None:
        name, key = entry.name, key or entry.key
    fields: dict[str, Any] = {}
    if name is not None:
        fields["entry_name"] = printable(name)
    if key:
        fields["entry_key"] = printable(key)
    if entry is not None:
        fields["task_name"] = printable(entry.task)
    return fields


def slot_fields(slot: float, now: float | None = None) -> dict[str, Any]:
    """``slot`` (UNIX seconds) in ISO 8601 UTC and as a number, and the lateness of a run of it at ``now``."""
    fields: dict[str, Any] = {"slot": datetime.fromtimestamp(slot, timezone.utc).isoformat(),
                              "slot_timestamp": float(slot)}
    if now is not None:
        fields["lateness"] = round(now - slot, 3)
    return fields


def runs_fields(runs: Sequence[InFlight], *, now: float | None = None,
                failure_class: str | None = None) -> dict[str, Any]:
    """The ``extra=`` of a line about several runs of one entry: its key and their
    ``count``; the newest run's slot (and its task id when it is the only one)."""
    newest = max(runs, key=lambda run: run.scheduled)
    if len(runs) == 1:
        return log_fields(run=newest, now=now, failure_class=failure_class, count=1)
    return log_fields(key=newest.key, slot=newest.scheduled, now=now, failure_class=failure_class, count=len(runs))
