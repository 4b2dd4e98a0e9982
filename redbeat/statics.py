"""The static entries: those of Celery's ``beat_schedule`` setting, written to Redis by
the beat that holds the lock (at its first tick, and again after an outage)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.utils.log import get_logger

from .config import RedBeatConfig
from .entry import RedBeatSchedulerEntry, write_over
from .entrywrites import EntryWrite, UnchangedEntry
from .logfields import log_fields
from .printable import printable
from .records import same_json
from .store import ScheduleStore, WrongTypeError

__all__ = ["StaticSync", "prepare_writes", "static_schedule"]

logger = get_logger("celery.beat")

# Builds an entry from its name and its spec in beat_schedule (Celery's Scheduler._maybe_entry).
EntryFor = Callable[[str, Any], RedBeatSchedulerEntry]


def static_schedule(app: Celery, conf: RedBeatConfig) -> dict:
    """``beat_schedule`` plus the entries Celery itself adds (backend_cleanup)."""
    entries = dict(conf.schedule)
    if (app.conf.result_expires and not app.backend.supports_autoexpire
            and "celery.backend_cleanup" not in entries):
        entries["celery.backend_cleanup"] = {
            "task": "celery.backend_cleanup",
            "schedule": crontab("0", "4", "*"),
            "options": {"expires": 12 * 3600},
        }
    return entries


class StaticSync:
    """Keeps Redis holding exactly the static entries of the configuration.

    ``synced`` goes false when they may be stale in Redis (the lock just taken,
    Redis back after an outage); the ticker then syncs them once the lock was
    checked and renewed.
    """

    def __init__(self, store: ScheduleStore, wanted: Callable[[], dict], entry_for: EntryFor) -> None:
        self.store = store
        self.wanted = wanted
        self.entry_for = entry_for
        self.synced = False

    def sync(self) -> None:
        """Write the static entries: new and edited ones, keeping their run history;
        entries dropped from the configuration are deleted; entries created at run
        time (not in the statics set) are never touched."""
        wanted = self.wanted()
        changed, unchanged = prepare_writes(self.store, wanted, self.entry_for)
        try:
            removed = self.store.static_names() - set(wanted)
        except WrongTypeError as exc:
            # Only a list of names: rebuilt from the configuration. Entries
            # since dropped from it stay, as entries created at run time do.
            aside = self.store.move_aside(exc.key, time.time())
            logger.error("beat: %s was a %s, not the set of static entry names; moved it aside to %s and "
                         "wrote the names again", exc.key, exc.found, aside)
            removed = set()
        # Names that failed to build stay in the set: their stored version
        # keeps running, and is deleted if the name leaves the configuration.
        # Only entry hashes are deleted: a key that holds something else now is someone else's.
        removed = {name for name, kind in zip(removed, self.store.key_types([self.store.key_for(n) for n in removed]))
                   if kind in ("hash", "none")}
        self.store.write_entries(changed, unchanged, removed, statics=list(wanted))
        self.synced = True
        self._warn_if_redis_evicts()
        for name in removed:
            logger.info("beat: removed static entry %s (no longer in beat_schedule)", printable(name),
                        extra=log_fields(name=name, key=self.store.key_for(name)))
        logger.debug("beat: static entries: %d written, %d unchanged", len(changed), len(unchanged))

    def _warn_if_redis_evicts(self) -> None:
        policy = self.store.eviction_policy()
        if policy and policy.startswith("allkeys"):
            logger.warning(
                "beat: Redis is configured to evict any key under memory pressure (maxmemory-policy %s): "
                "it may silently delete schedule entries. Use noeviction or a volatile-* policy.", policy,
            )


def prepare_writes(store: ScheduleStore, specs: dict,
                   entry_for: EntryFor) -> tuple[list[EntryWrite], list[UnchangedEntry]]:
    """The writes of entries new or changed, and (name, score) of the others, each
    scored by the rule of every save (``entry.write_over``): an
    existing entry keeps its run history and its place."""
    names = list(specs)
    stored = store.load_many([store.key_for(name) for name in names])
    changed: list[EntryWrite] = []
    unchanged: list[UnchangedEntry] = []
    for name, fields in zip(names, stored):
        if fields is None:
            logger.error("beat: static entry %s not written: its key %s holds another type than an entry hash "
                         "(someone else's data?)", printable(name), printable(store.key_for(name)),
                         extra=log_fields(name=name, key=store.key_for(name)))
            continue
        try:
            entry = entry_for(name, specs[name])
            if _paused(fields.definition) and "enabled" not in _spec_fields(specs[name]):
                entry.enabled = False  # paused at run time (redbeat pause): a re-sync keeps it paused
            write = write_over(entry, fields)
        except Exception as exc:
            logger.error("beat: cannot use schedule entry %s: %s", printable(name), printable(exc),
                         extra=log_fields(name=name, key=store.key_for(name)))
            continue
        if same_json(fields.definition, write.definition):
            unchanged.append(UnchangedEntry(name, write.score))
        else:
            changed.append(write)
    return changed, unchanged


def _paused(definition: bytes | None) -> bool:
    try:
        return definition is not None and json.loads(definition).get("enabled") is False
    except (ValueError, AttributeError):
        return False


def _spec_fields(spec: Any) -> Any:
    return spec if isinstance(spec, dict) else vars(spec)
