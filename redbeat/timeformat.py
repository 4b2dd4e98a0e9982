"""How the commands show a moment: ISO 8601 in UTC with its offset for programs
(``2026-12-03T04:00:00+00:00``), with a relative form for people (``in 5m``).

Beat stores moments as UNIX seconds in its records (meta, status, parked, the
history, the heartbeat: docs/format.rst); ``with_iso_times`` turns those of a
decoded record into ISO text, by the names of the fields that hold a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .records import unix_seconds

UTC = timezone.utc

# The fields of RedBeat's records that hold a moment in UNIX seconds.
TIME_FIELDS = frozenset({
    "next_slot", "last_dispatched_at", "last_missed_at", "at", "parked_at",  # status, parked
    "scheduled", "dispatched", "claimed_at", "retry_at",  # history, runs in flight
    "started", "finished",  # what the workers reported of a run (show)
    "last_tick", "active_since", "failing_since", "claiming_paused_since", "stopped_at",  # heartbeat
    "since", "last_check",  # standbys
})


def iso(seconds: float | None) -> str | None:
    """UNIX seconds as ISO 8601 in UTC; None stays None."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def relative(moment: datetime | None, now: float) -> str:
    """``in 5m``, ``2h ago``, from ``now`` (UNIX seconds); ``never`` for None."""
    if moment is None:
        return "never"
    seconds = moment.timestamp() - now
    amount = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if amount >= size or unit == "s":
            words = f"{int(amount // size)}{unit}"
            break
    return f"in {words}" if seconds >= 0 else f"{words} ago"


def iso_and_relative(seconds: float, now: float) -> str:
    """``2026-12-03T04:00:00+00:00 (in 5m)``: for people."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment.isoformat()} ({relative(moment, now)})"


def with_iso_times(value: Any, shown: Callable[[float], str] | None = None) -> Any:
    """``value`` (decoded JSON) with every number under a time field name, at any depth,
    as ``shown`` gives it (ISO 8601 by default); anything else, and a number that is no
    moment a datetime can hold, as it was."""
    show = shown or (lambda seconds: datetime.fromtimestamp(seconds, UTC).isoformat())
    if isinstance(value, dict):
        return {key: _converted(key, item, show) for key, item in value.items()}
    if isinstance(value, list):
        return [with_iso_times(item, show) for item in value]
    return value


def _converted(key: Any, item: Any, show: Callable[[float], str]) -> Any:
    seconds = unix_seconds(item) if key in TIME_FIELDS else None
    return with_iso_times(item, show) if seconds is None else show(seconds)
