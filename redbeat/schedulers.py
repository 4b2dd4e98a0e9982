"""The Celery-facing side of RedBeat: the schedule entry and the beat scheduler.

A tick flows one way: read the clock, renew the lock and read what is due
(one script), decide for each due entry, claim the decisions (one script,
fenced by the lock), publish what was claimed. See docs/design.rst.
"""

from __future__ import annotations

import json
import time
from datetime import MINYEAR, datetime, timezone
from typing import Any

from celery import Celery, current_app
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import BaseSchedule, crontab, schedstate
from celery.utils.log import get_logger
from celery.utils.time import humanize_seconds
from redis.exceptions import RedisError

from .client import display_url, get_redis, get_store
from .config import ConfigurationError, RedBeatConfig, ensure_conf
from .decoder import DecodeError, dumps, loads, to_timestamp
from .lock import BeatLock
from .store import NEVER, Decision, DueRecord, ScheduleStore, parked_reason

__all__ = [
    "RedBeatScheduler",
    "RedBeatSchedulerEntry",
    "RedBeatConfig",
    "ConfigurationError",
    "ensure_conf",
    "get_redis",
    "next_due_at",
]

logger = get_logger("celery.beat")

# Definition fields of the data format; other fields are ignored when reading.
DEFINITION_FIELDS = ("name", "task", "args", "kwargs", "options", "schedule", "enabled")
# A tick that keeps finding full batches hands back to the beat loop after
# this many, so that shutdown and the remote-control health check stay responsive.
MAX_BATCHES_PER_TICK = 20
REDIS_RETRY_FIRST = 0.1
REDIS_RETRY_MAX = 1.0


def next_due_at(sched: BaseSchedule, last_run_at: datetime, now: datetime) -> datetime | None:
    """When ``sched`` is next due after a run at ``last_run_at``, judged at ``now``.

    None when the schedule has no further runs. Celery's schedules read the
    clock themselves; pinning it to ``now`` makes one decision use one instant.
    """
    saved = sched.nowfun
    sched.nowfun = lambda: now
    try:
        remaining = sched.remaining_estimate(last_run_at)
    finally:
        sched.nowfun = saved
    if remaining is None:
        return None
    return now + remaining


def score_of(due_at: datetime | None) -> float:
    return NEVER if due_at is None else to_timestamp(due_at)


class RedBeatSchedulerEntry(ScheduleEntry):
    """One scheduled task, stored in Redis as a hash under ``<prefix><name>``."""

    _meta = None

    def __init__(
        self,
        name: str | None = None,
        task: str | None = None,
        schedule: Any = None,
        args: Any = None,
        kwargs: dict | None = None,
        enabled: bool = True,
        options: dict | None = None,
        **clsargs: Any,
    ) -> None:
        super().__init__(
            name=None if name is None else str(name),
            task=task,
            schedule=schedule,
            args=() if args is None else args,
            kwargs=kwargs,
            options=options,
            **clsargs,
        )
        self.enabled = enabled
        ensure_conf(self.app)

    # -- keys -----------------------------------------------------------------

    @staticmethod
    def generate_key(app: Celery, name: str) -> str:
        return ensure_conf(app).key_prefix + name

    @property
    def key(self) -> str:
        return self.generate_key(self.app, self.name)

    # -- loading --------------------------------------------------------------

    @classmethod
    def from_key(cls, key: str, app: Celery | None = None) -> RedBeatSchedulerEntry:
        """Load the entry stored under the full key ``key`` (``redbeat:<name>``).

        Raises KeyError if there is no such entry, ValueError if it is malformed.
        """
        app = app or current_app._get_current_object()
        definition, meta = get_store(app).load(key)
        if not definition:
            raise KeyError(key)
        return cls.from_stored(definition, meta, app=app, key=key)

    @classmethod
    def from_name(cls, name: str, app: Celery | None = None) -> RedBeatSchedulerEntry:
        """Load the entry called ``name``, without spelling out its key."""
        app = app or current_app._get_current_object()
        return cls.from_key(cls.generate_key(app, name), app=app)

    @classmethod
    def from_stored(
        cls,
        definition: bytes | str,
        meta: bytes | str | None,
        app: Celery,
        key: str | None = None,
    ) -> RedBeatSchedulerEntry:
        """Build an entry from the raw ``definition`` and ``meta`` of its hash.

        Raises ValueError (DecodeError) naming the field that is wrong.
        """
        fields = cls.decode_definition(definition)
        state = cls.decode_meta(meta)
        if not fields.get("name") and key is not None:
            fields["name"] = key[len(ensure_conf(app).key_prefix):]
        entry = cls(app=app, total_run_count=state["total_run_count"], **fields)
        # Celery fills a missing last_run_at with "now"; stored None means never run.
        entry.last_run_at = state["last_run_at"]
        return entry

    @staticmethod
    def load_definition(key: str, app: Celery | None = None, definition: Any = None) -> dict:
        app = app or current_app._get_current_object()
        if definition is None:
            definition, _ = get_store(app).load(key)
        if not definition:
            raise KeyError(key)
        return RedBeatSchedulerEntry.decode_definition(definition)

    @staticmethod
    def decode_definition(definition: bytes | str) -> dict:
        """The constructor arguments in a stored ``definition``, checked field by field."""
        decoded = _decode_json(definition, "definition")
        if not isinstance(decoded, dict):
            raise DecodeError("definition must be a JSON object")
        fields = {name: decoded[name] for name in DEFINITION_FIELDS if name in decoded}
        task = fields.get("task")
        if not isinstance(task, str) or not task:
            raise DecodeError("definition field 'task' is missing or not a string")
        sched = fields.get("schedule")
        if isinstance(sched, dict) and "__type__" in sched:
            raise DecodeError(f"definition field 'schedule' has unknown __type__ {sched['__type__']!r}")
        if not isinstance(sched, (BaseSchedule, int, float)) or isinstance(sched, bool):
            raise DecodeError("definition field 'schedule' is missing or not a schedule")
        _expect(fields, "args", (list, tuple), "a list")
        _expect(fields, "kwargs", dict, "an object")
        _expect(fields, "options", dict, "an object")
        _expect(fields, "enabled", bool, "true or false")
        if "name" in fields and not isinstance(fields["name"], str):
            raise DecodeError("definition field 'name' must be a string")
        return fields

    @staticmethod
    def load_meta(key: str, app: Celery | None = None) -> dict:
        app = app or current_app._get_current_object()
        _, meta = get_store(app).load(key)
        return RedBeatSchedulerEntry.decode_meta(meta)

    @staticmethod
    def decode_meta(meta: bytes | str | None, app: Celery | None = None) -> dict:
        """``last_run_at`` (None if never run) and ``total_run_count`` from stored ``meta``."""
        if not meta:
            return {"last_run_at": None, "total_run_count": 0}
        decoded = _decode_json(meta, "meta")
        if not isinstance(decoded, dict):
            raise DecodeError("meta must be a JSON object")
        last_run_at = decoded.get("last_run_at")
        if last_run_at is not None and not isinstance(last_run_at, datetime):
            raise DecodeError("meta field 'last_run_at' must be a datetime object or null")
        count = decoded.get("total_run_count") or 0
        if not isinstance(count, int) or isinstance(count, bool):
            raise DecodeError("meta field 'total_run_count' must be an integer")
        return {"last_run_at": last_run_at, "total_run_count": count}

    # -- timing ---------------------------------------------------------------

    @property
    def due_at(self) -> datetime | None:
        """When the entry is next due (None: never again); an entry never run is due now."""
        now = self._default_now()
        if self.last_run_at is None:
            return now
        return next_due_at(self.schedule, self.last_run_at, now)

    @property
    def score(self) -> float:
        """The entry's score in the schedule: UNIX seconds of ``due_at``, -1 for never."""
        return score_of(self.due_at)

    def is_due(self) -> schedstate:
        if not self.enabled:
            return schedstate(False, 5.0)
        last_run_at = self.last_run_at or datetime(MINYEAR, 1, 2, tzinfo=timezone.utc)
        return self.schedule.is_due(last_run_at)

    # -- writing --------------------------------------------------------------

    def to_definition(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "args": list(self.args) if self.args is not None else [],
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }

    def definition_json(self) -> str:
        return dumps(self.to_definition())

    def meta_json(self) -> str:
        return dumps({"last_run_at": self.last_run_at, "total_run_count": self.total_run_count})

    def save(self) -> RedBeatSchedulerEntry:
        """Store the definition and schedule it; an existing entry keeps its meta."""
        get_store(self.app).save(self.key, self.definition_json(), self.meta_json(), self.score)
        return self

    def delete(self) -> None:
        get_store(self.app).delete(self.key)

    def reschedule(self, last_run_at: datetime | None = None) -> RedBeatSchedulerEntry:
        """Record a run at ``last_run_at`` (default now) and schedule the next one."""
        self.last_run_at = last_run_at or self._default_now()
        get_store(self.app).save_meta(self.key, self.meta_json(), self.score)
        return self

    def _next_instance(
        self, last_run_at: datetime | None = None, only_update_last_run_at: bool = False
    ) -> RedBeatSchedulerEntry:
        entry = super()._next_instance(last_run_at=last_run_at)
        if only_update_last_run_at:
            entry.total_run_count = self.total_run_count
        get_store(self.app).save_meta(entry.key, entry.meta_json(), entry.score)
        return entry

    __next__ = next = _next_instance

    def __repr__(self) -> str:
        return f"<RedBeatSchedulerEntry: {self.name} {self.task}({self.args!r}, {self.kwargs!r}) {self.schedule!r}>"


def _decode_json(raw: bytes | str, field: str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return loads(text)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{field} is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{field} is not valid JSON: {exc}") from exc


def _expect(fields: dict, name: str, kind: type | tuple, words: str) -> None:
    if fields.get(name) is not None and not isinstance(fields[name], kind):
        raise DecodeError(f"definition field {name!r} must be {words}")


class RedBeatScheduler(Scheduler):
    """A Celery beat scheduler that keeps its schedule in Redis."""

    Entry = RedBeatSchedulerEntry
    lock: BeatLock | None = None

    def __init__(self, app: Celery, lock_key: str | None = None, lock_timeout: float | None = None,
                 **kwargs: Any) -> None:
        self.conf = ensure_conf(app)
        # Fail before anything else, with the setting's name, not a socket error.
        self.conf.require_redis_url()
        self.lock_key = lock_key or self.conf.lock_key
        self.lock_timeout = float(lock_timeout or self.conf.lock_timeout)
        self._statics_synced = False
        self._standing_by = False
        self._redis_down_since: float | None = None
        self._retry_delay = REDIS_RETRY_FIRST
        super().__init__(app, **kwargs)

    @property
    def store(self) -> ScheduleStore:
        return get_store(self.app)

    # -- start-up: static entries ---------------------------------------------

    def setup_schedule(self) -> None:
        if self.lock_key:
            self.lock = BeatLock(self.store.client, self.lock_key, self.lock_timeout)
        try:
            self._sync_statics()
        except RedisError as exc:
            # Beat starts anyway and writes them at the first tick Redis answers.
            self._redis_failed(exc)

    def static_schedule(self) -> dict:
        """``beat_schedule`` plus the entries Celery itself adds (backend_cleanup)."""
        entries = dict(self.conf.schedule)
        if (self.app.conf.result_expires and not self.app.backend.supports_autoexpire
                and "celery.backend_cleanup" not in entries):
            entries["celery.backend_cleanup"] = {
                "task": "celery.backend_cleanup",
                "schedule": crontab("0", "4", "*"),
                "options": {"expires": 12 * 3600},
            }
        return entries

    def _sync_statics(self) -> None:
        """Make Redis hold exactly the static entries of the configuration.

        New and edited entries are written, keeping their run history;
        entries dropped from the configuration are deleted; entries created
        at run time (not in the statics set) are never touched.
        """
        wanted = self.static_schedule()
        entries = {}
        for name, spec in wanted.items():
            try:
                entries[name] = self._maybe_entry(name, spec)
            except Exception as exc:
                logger.error("beat: cannot use beat_schedule entry %r: %s", name, exc)
        store = self.store
        names = list(entries)
        stored = store.load_many([store.key_for(name) for name in names])
        changed, unchanged = [], []
        for name, (definition, meta) in zip(names, stored):
            entry = entries[name]
            if meta:
                try:
                    state = entry.decode_meta(meta)
                    entry.last_run_at = state["last_run_at"]
                    entry.total_run_count = state["total_run_count"]
                except DecodeError as exc:
                    logger.warning("beat: static entry %r has unreadable meta (%s); keeping it", name, exc)
            new_definition = entry.definition_json()
            if definition is not None and _same_json(definition, new_definition):
                unchanged.append((name, entry.score))
            else:
                changed.append((name, new_definition, entry.meta_json(), entry.score))
        removed = store.static_names() - set(wanted)
        store.write_statics(changed, unchanged, removed, names)
        self._statics_synced = True
        for name in removed:
            logger.info("beat: removed static entry %r (no longer in beat_schedule)", name)
        logger.debug("beat: static entries: %d written, %d unchanged", len(changed), len(unchanged))

    def update_from_dict(self, dict_: dict) -> None:
        """Save each entry of ``dict_`` to Redis (as celery-redbeat 2.x did)."""
        for name, spec in dict_.items():
            try:
                self._maybe_entry(name, spec).save()
            except Exception as exc:
                logger.error("beat: cannot add entry %r: %s", name, exc)

    # -- the tick ---------------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Dispatch what is due; return the seconds to sleep before the next tick."""
        try:
            interval = self._tick()
        except RedisError as exc:
            return self._redis_failed(exc)
        self._redis_answered()
        return interval

    def _tick(self) -> float:
        if not self._statics_synced:
            self._sync_statics()
        lock = self.lock
        if lock is not None and not lock.held:
            if not lock.acquire():
                if not self._standing_by:
                    self._standing_by = True
                    logger.info("beat: lock %s is held by another beat; standing by, checking every %ss",
                                lock.key, self._standby_interval())
                return self._standby_interval()
            self._standing_by = False
            logger.info("beat: Acquired lock %s; this beat is now active", lock.key)
        store, limit = self.store, self.conf.claim_batch_size
        for _ in range(MAX_BATCHES_PER_TICK):
            now = time.time()
            batch = store.read_due(now, limit, lock)
            if batch.lock_lost:
                return self._lock_lost()
            if batch.records:
                now_dt = datetime.fromtimestamp(now, timezone.utc)
                decisions = [self._decide(record, now_dt) for record in batch.records]
                claimed = store.claim(decisions, now, lock)
                if claimed is None:
                    return self._lock_lost()
                for decision in claimed:
                    self.apply_entry(decision.subject, producer=self.producer)
            if len(batch.records) < limit:
                return self._sleep_until(batch.next_score)
        return 0.0

    def _decide(self, record: DueRecord, now: datetime) -> Decision:
        """What to do with one due entry, from its stored state alone."""
        if record.definition is None:
            if record.meta is None:
                logger.warning(
                    "beat: removing %r from the schedule: no entry hash under that key "
                    "(members must be full keys such as %r)",
                    record.key_text, self.store.key_for("<name>"),
                )
                return Decision(record, "drop")
            return self._park(record, "hash has no 'definition' field")
        try:
            entry = self.Entry.from_stored(record.definition, record.meta, app=self.app,
                                           key=record.key_text)
        except Exception as exc:  # any bad input must cost one entry, never the beat
            return self._park(record, str(exc) or type(exc).__name__)
        try:
            if not entry.enabled:
                # Keep its place in the cadence without running it, so that
                # re-enabling it resumes at its next regular slot.
                return Decision(record, "move", score=self._next_slot_after(entry, now))
            due_at = now if entry.last_run_at is None else next_due_at(
                entry.schedule, entry.last_run_at, now)
            if due_at is None:
                return Decision(record, "move", score=NEVER)
            if due_at > now:  # meta was edited to a later run: not due after all
                return Decision(record, "move", score=to_timestamp(due_at))
            meta = dumps({"last_run_at": now, "total_run_count": entry.total_run_count + 1})
            score = score_of(next_due_at(entry.schedule, now, now))
        except Exception as exc:
            return self._park(record, f"cannot compute its next run: {exc}")
        return Decision(record, "run", score=score, meta=meta, subject=entry)

    def _next_slot_after(self, entry: RedBeatSchedulerEntry, now: datetime) -> float:
        due_at = next_due_at(entry.schedule, entry.last_run_at or now, now)
        if due_at is not None and due_at <= now:
            due_at = next_due_at(entry.schedule, now, now)
        return score_of(due_at)

    def _park(self, record: DueRecord, reason: str) -> Decision:
        logger.error(
            "beat: parked entry %r, it will not run until fixed: %s "
            "(write a correct definition and ZADD it back to the schedule)",
            record.key_text, reason,
        )
        return Decision(record, "park", score=NEVER, reason=parked_reason(reason))

    def _sleep_until(self, next_score: float | None) -> float:
        interval = self.max_interval
        if next_score is not None:
            interval = min(interval, max(next_score - time.time(), 0.0))
        if self.lock is not None:
            # Renew well before expiry: a third of the timeout survives two missed renewals.
            interval = min(interval, self.lock_timeout / 3)
        return interval

    def _standby_interval(self) -> float:
        return min(self.conf.lock_poll_interval, self.max_interval)

    def _lock_lost(self) -> float:
        logger.warning(
            "beat: lost lock %s (it expired or another beat took it); back to standby, "
            "dispatching nothing until this beat holds it again", self.lock.key
        )
        self.lock.held = False
        return self._standby_interval()

    def _redis_failed(self, exc: RedisError) -> float:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            self._retry_delay = REDIS_RETRY_FIRST
            logger.error(
                "beat: Redis at %s is unavailable (%s: %s); retrying until it answers",
                display_url(self.conf.redis_url), type(exc).__name__, exc,
            )
        else:
            self._retry_delay = min(self._retry_delay * 2, REDIS_RETRY_MAX)
        return self._retry_delay

    def _redis_answered(self) -> None:
        if self._redis_down_since is not None:
            logger.info(
                "beat: Redis answers again after %.1fs",
                time.monotonic() - self._redis_down_since,
            )
            self._redis_down_since = None
            # A Redis that restarted without its data lost the static entries too.
            self._statics_synced = False

    # -- Celery's Scheduler API -------------------------------------------------

    def get_schedule(self) -> dict:
        """The entries due now and the next one due: never the whole schedule."""
        batch = self.store.read_due(time.time(), self.conf.claim_batch_size)
        keys = [record.key for record in batch.records]
        if batch.next_key is not None:
            keys.append(batch.next_key)
        entries = {}
        for key in keys:
            try:
                entry = self.Entry.from_key(key.decode("utf-8", "replace"), app=self.app)
            except (KeyError, ValueError):
                continue
            entries[entry.name] = entry
        return entries

    def set_schedule(self, schedule: dict) -> None:
        self.update_from_dict(schedule)

    schedule = property(get_schedule, set_schedule)

    def close(self) -> None:
        if self.lock is not None and self.lock.held:
            try:
                self.lock.release()
                logger.info("beat: Released lock %s", self.lock.key)
            except RedisError as exc:
                logger.warning("beat: could not release lock %s: %s", self.lock.key, exc)
        super().close()

    @property
    def info(self) -> str:
        lines = [f"       . redis -> {display_url(self.conf.redis_url)}"]
        if self.lock_key:
            lines.append(
                f"       . lock -> `{self.lock_key}` {humanize_seconds(self.lock_timeout)} "
                f"({self.lock_timeout:g}s)"
            )
        else:
            lines.append("       . lock -> disabled")
        return "\n".join(lines)


def _same_json(stored: bytes, written: str) -> bool:
    """Whether two JSON texts hold the same value (key order and 60 vs 60.0 aside)."""
    try:
        return json.loads(stored) == json.loads(written)
    except ValueError:
        return False
