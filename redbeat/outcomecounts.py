"""How RedBeat's runs ended, counted by the workers for the whole schedule
(docs/outcomes.rst, docs/metrics.rst): the one layout that ``worker.py`` writes
and the metrics and ``status`` read.

``<prefix>:run-outcomes`` is a hash of counters that only ever grow (as
Prometheus counters do; deleting the hash is a counter reset, which
Prometheus handles):

- ``outcome:<kind>``: runs that ended so, one of ``ENDINGS`` (the
  ``RunEventKind`` values that end a run) or ``duplicate`` (a delivery of a
  run that had already started, not executed again);
- ``duration:count`` and ``duration:sum`` (seconds, a float written with
  HINCRBYFLOAT) of the runs that ended with a known duration;
- ``duration:le:<bound>``: how many of those took at most ``<bound>``
  seconds and more than the bound before it (one bucket each, not
  cumulative: the reader adds them up, so a writer increments one field).
  ``<bound>`` is written as in ``DURATION_BOUNDS`` (``%g``); a duration
  above the last bound counts in ``duration:count`` only (Prometheus's
  ``+Inf``).

``<prefix>:failing`` is a sorted set of the entry keys whose last reported
run failed, scored by when it ended (UNIX seconds); a run of the entry that
succeeds removes it. Its members may name entries removed since: readers
check that they still exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .records import RunEventKind

__all__ = ["ENDINGS", "DUPLICATE", "DURATION_BOUNDS", "OutcomeCounts", "outcome_field", "bucket_field",
           "duration_bucket", "read_counts", "DURATION_COUNT", "DURATION_SUM"]

# The ways a run ends, as the worker reports them.
ENDINGS = (RunEventKind.SUCCEEDED.value, RunEventKind.FAILED.value, RunEventKind.RETRIED.value,
           RunEventKind.REVOKED.value, RunEventKind.IGNORED.value, RunEventKind.REJECTED.value)
DUPLICATE = "duplicate"

# Upper bounds (seconds) of the duration buckets: scheduled tasks run from
# milliseconds to hours.
DURATION_BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0)
DURATION_COUNT = "duration:count"
DURATION_SUM = "duration:sum"


def outcome_field(kind: str) -> str:
    return f"outcome:{kind}"


def bucket_field(bound: float) -> str:
    return f"duration:le:{bound:g}"


def duration_bucket(seconds: float) -> str | None:
    """The field that counts a run of ``seconds`` (None: above the last bound)."""
    for bound in DURATION_BOUNDS:
        if seconds <= bound:
            return bucket_field(bound)
    return None


@dataclass(frozen=True)
class OutcomeCounts:
    """The counters of ``<prefix>:run-outcomes``, read."""

    outcomes: dict[str, int] = field(default_factory=dict)  # every kind of ENDINGS and DUPLICATE, 0 if unset
    buckets: tuple[tuple[float, int], ...] = ()  # (bound, runs up to it), cumulative as Prometheus wants
    duration_count: int = 0
    duration_sum: float = 0.0


def _number(raw: bytes | str | None, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else kind(0)
    except ValueError:  # someone else's write: it counts as nothing rather than break a scrape
        return kind(0)
    return value if value >= 0 else kind(0)


def read_counts(fields: Mapping[bytes | str, bytes | str]) -> OutcomeCounts:
    """The counts in a HGETALL of ``<prefix>:run-outcomes`` (bytes or str keys)."""
    text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    outcomes = {kind: int(_number(text.get(outcome_field(kind)), int)) for kind in (*ENDINGS, DUPLICATE)}
    running, buckets = 0, []
    for bound in DURATION_BOUNDS:
        running += int(_number(text.get(bucket_field(bound)), int))
        buckets.append((bound, running))
    count = max(int(_number(text.get(DURATION_COUNT), int)), running)
    return OutcomeCounts(outcomes, tuple(buckets), count, float(_number(text.get(DURATION_SUM), float)))
