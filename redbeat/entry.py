"""A RedBeat schedule entry: one scheduled task, as Celery sees it and as Redis stores it."""

from __future__ import annotations

import json
from datetime import MINYEAR, datetime, timezone
from typing import Any

from celery import Celery, current_app
from celery.beat import ScheduleEntry
from celery.schedules import BaseSchedule, schedstate

from .client import get_store
from .config import ensure_conf
from .decoder import DecodeError, dumps, loads, to_timestamp
from .store import NEVER

__all__ = ["RedBeatSchedulerEntry", "next_due_at", "score_of", "DEFINITION_FIELDS"]

# Definition fields of the data format; other fields are ignored when reading.
DEFINITION_FIELDS = ("name", "task", "args", "kwargs", "options", "schedule", "enabled")


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
