"""The names of RedBeat's keys in Redis (docs/format.rst), built here and nowhere else.

An entry's key is the prefix and its name (``redbeat:nightly``); RedBeat's
own keys are the prefix, a colon and what they hold (``redbeat::schedule``),
so no entry name can start with a colon without colliding with them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyNames", "key_bytes"]


def key_bytes(key: bytes | str) -> bytes:
    """A key's exact bytes. A key read back as text (``admin.key_text``) holds the bytes that
    are not UTF-8 as surrogates, which redis-py's strict encoding refuses: encoded back here,
    it names its own key, and every writer and reader of one entry's key goes through it."""
    return key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class KeyNames:
    """Every key name of one schedule, from its prefix."""

    prefix: str

    @property
    def own(self) -> str:
        """What RedBeat's own keys start with."""
        return self.prefix + ":"

    @property
    def schedule(self) -> str:
        return self.own + "schedule"

    @property
    def statics(self) -> str:
        return self.own + "statics"

    @property
    def default_lock(self) -> str:
        return self.own + "lock"

    @property
    def inflight(self) -> str:
        return self.own + "inflight"

    @property
    def heartbeat(self) -> str:
        return self.own + "heartbeat"

    @property
    def standbys(self) -> str:
        """The standby beats' check-ins: a hash of records by beat token."""
        return self.own + "standbys"

    @property
    def histories(self) -> str:
        """What every entry's history key starts with."""
        return self.own + "history:"

    @property
    def worker_event_lists(self) -> str:
        """What every entry's worker-events key starts with."""
        return self.own + "worker-events:"

    @property
    def run_outcomes(self) -> str:
        """The workers' counts of how RedBeat's runs ended, and their durations: a hash
        (``outcomecounts.py``), schedule-wide, never per entry."""
        return self.own + "run-outcomes"

    @property
    def failing(self) -> str:
        """Entries whose last run reported by a worker failed: a sorted set of entry
        keys scored by when that run ended (``outcomecounts.py``)."""
        return self.own + "failing"

    @property
    def held_for_3(self) -> str:
        """Entries that ``redbeat rollback-to-2`` holds out of the schedule while
        celery-redbeat 2.x runs it (rollback.py)."""
        return self.own + "held-for-3"

    def lock(self, configured: str | None) -> str | None:
        """The lock's key for a ``redbeat_lock_key`` setting (None: no lock). A
        key given without the prefix gets it, as in celery-redbeat 2.x."""
        if not configured:
            return None
        return configured if configured.startswith(self.prefix) else self.prefix + configured

    def entry(self, name: str) -> str:
        return self.prefix + name

    def name_of(self, key: str) -> str:
        """The entry name ``key`` holds after the prefix; a key not under it, whole."""
        return key[len(self.prefix):] if key.startswith(self.prefix) else key

    def history(self, entry_key: str) -> str:
        """The run history of the entry under ``entry_key``."""
        return self.histories + entry_key[len(self.prefix):]

    def worker_events(self, entry_key: str) -> str:
        """What the workers reported of the runs of the entry under ``entry_key``
        (``worker.py``, opt-in), newest first."""
        return self.worker_event_lists + entry_key[len(self.prefix):]

    def set_aside(self, own_key: str, now: float) -> str:
        """Where one of RedBeat's own keys found holding the wrong type of value
        is moved at ``now`` (UNIX seconds), kept for whoever wrote it."""
        return f"{own_key}:wrongtype:{round(now * 1000)}"

    def no_entry_name(self, key: str) -> str:
        """Why ``key``, which is no entry key, cannot be written as an entry's."""
        if key.startswith(self.own):
            return (f"{key[len(self.prefix):]!r} is no entry name: names starting with ':' are RedBeat's own "
                    "keys")
        return f"{key!r} is no entry key: entry keys start with the prefix {self.prefix!r}"

    def is_entry_key(self, key: str) -> bool:
        """Whether ``key`` can be an entry's: under the prefix, and not one of
        RedBeat's own keys. Beat never reads or writes any other."""
        return key.startswith(self.prefix) and not key.startswith(self.own)
