"""Reading what the workers counted for the whole schedule (``outcomecounts.py``
holds the layout): the outcome counts the metrics serve, and the entries
whose last runs failed, which ``redbeat status`` names.

Both answer None when the key holds another type of value (someone else's
write): a reading of the rest of the schedule must not fail for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from .keys import KeyNames
from .outcomecounts import OutcomeCounts, read_counts

__all__ = ["FailingEntries", "failing_entries", "outcome_counts", "FAILING_CHECKED", "FAILING_SHOWN"]

# The newest members of the failing set that status checks still exist:
# one pipeline of EXISTS, bounded however many entries fail.
FAILING_CHECKED = 1000
# How many names status shows.
FAILING_SHOWN = 5


@dataclass(frozen=True)
class FailingEntries:
    """Entries whose last reported run failed, as ``status`` tells it."""

    count: int  # of the members checked, those whose entry still exists
    names: tuple[str, ...]  # the first few of them, newest failure first
    unchecked: int = 0  # older members beyond FAILING_CHECKED, not checked (some may name removed entries)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "names": list(self.names), "unchecked": self.unchecked}


def _wrong_type(exc: ResponseError) -> bool:
    return str(exc).startswith("WRONGTYPE")


def outcome_counts(client: Redis | RedisCluster, keys: KeyNames) -> OutcomeCounts | None:
    """The workers' counts (all 0 when no worker records runs); one round trip."""
    try:
        fields: dict[Any, Any] = client.hgetall(keys.run_outcomes)
    except ResponseError as exc:
        if _wrong_type(exc):
            return None
        raise
    return read_counts(fields)


def failing_entries(client: Redis | RedisCluster, keys: KeyNames, shown: int = FAILING_SHOWN,
                    checked: int = FAILING_CHECKED) -> FailingEntries | None:
    """The entries whose last reported run failed, skipping members whose entry
    was removed since; two round trips (one when none fails)."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.failing)
    pipe.zrevrange(keys.failing, 0, checked - 1)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, ResponseError):
            if _wrong_type(reply):
                return None
            raise reply
    total, newest = replies
    if not newest:
        return FailingEntries(0, ())
    pipe = client.pipeline(transaction=False)
    for member in newest:
        pipe.exists(member)
    existing = [member for member, found in zip(newest, pipe.execute()) if found]
    # Members are entry keys: the name is what follows the prefix (a member outside it is shown whole).
    names = [_name(member, keys) for member in existing[:shown]]
    return FailingEntries(len(existing), tuple(names), max(int(total) - len(newest), 0))


def _name(member: bytes | str, keys: KeyNames) -> str:
    key = member.decode("utf-8", "surrogateescape") if isinstance(member, bytes) else member
    return key[len(keys.prefix):] if keys.is_entry_key(key) else key
