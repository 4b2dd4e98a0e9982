"""A RedBeat schedule entry: one scheduled task, as Celery sees it and as Redis stores it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import MINYEAR, datetime, timezone
from itertools import islice
from typing import TYPE_CHECKING, Any

from celery import Celery, current_app
from celery.beat import ScheduleEntry
from celery.schedules import schedstate

from .client import get_store
from .config import catch_up_limit, ensure_conf, no_deadline
from .decoder import DecodeError, dumps, meta_json, to_timestamp
from .entrywrites import EntryWrite, StoredFields
from .overlap import Overlap, RunBound, run_bound
from .planning import Plan, Policy, plan_runs, upcoming
from .records import NEVER, Meta, Status, decode_json
from .schedules import answering_as_beat, clocked
from .slots import zone_of
from .validation import (
    DEFINITION_FIELDS,
    OPTION_FIELDS,
    OPTIONAL_FIELDS,
    PROTOCOL_HEADERS,
    RESERVED_HEADERS,
    RESERVED_OPTIONS,
    InvalidEntryError,
    check_decoded,
    check_written,
    reserved_options,
    without_reserved,
)

if TYPE_CHECKING:
    from .store import ScheduleStore

# The definition's fields and its checks live in ``validation``; the names stay importable from here.
__all__ = ["RedBeatSchedulerEntry", "EntryNotFoundError", "score_of", "bounded", "next_score", "write_over",
           "overlap_policy", "entry_run_bound",
           "DEFINITION_FIELDS", "OPTION_FIELDS", "PROTOCOL_HEADERS", "RESERVED_HEADERS", "RESERVED_OPTIONS",
           "reserved_options", "without_reserved"]

# Entries ``save_many`` reads and writes per round trip.
SAVE_CHUNK = 1000

# The attribute of a task message (a copy of its entry) holding the run beat claimed
# and publishes: such a message is due whatever its meta says (2.x-style maybe_due asks).
CLAIMED_RUN = "_redbeat_run"

# Stands in for last_run_at while an entry is built from Redis, replaced at once.
_NOT_YET_KNOWN = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EntryNotFoundError(KeyError):
    """No entry under a key: a KeyError, as celery-redbeat 2.x raised, that says so."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no entry under the key {self.key!r}"


def score_of(moment: datetime | None) -> float:
    return NEVER if moment is None else to_timestamp(moment)


class RedBeatSchedulerEntry(ScheduleEntry):
    """One scheduled task, stored in Redis as a hash under ``<prefix><name>``."""

    # Set by celery's ScheduleEntry, which has no type information: declared here for the checker.
    schedule: Any
    last_run_at: datetime | None
    total_run_count: int

    def __init__(
        self,
        name: str | None = None,
        task: str | None = None,
        schedule: Any = None,
        args: Any = None,
        kwargs: dict | None = None,
        enabled: bool | None = True,
        options: dict | None = None,
        catch_up: str | None = None,
        catch_up_max: int | None = None,
        starting_deadline: float | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        max_runs: int | None = None,
        on_finish: str | None = None,
        jitter: float | None = None,
        overlap: str | None = None,
        max_run_time: float | None = None,
        description: str | None = None,
        next_slot: datetime | None = None,
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
        self.schedule = answering_as_beat(self.schedule)  # Celery's crontab and interval answer otherwise
        if isinstance(self.schedule, clocked) and clsargs.get("last_run_at") is None:
            self.last_run_at = None  # a one-off has not run just because it was created
        # null (a definition another program wrote) means the default: enabled (docs/format.rst).
        self.enabled = True if enabled is None else enabled
        self.catch_up = catch_up
        self.catch_up_max = catch_up_max
        self.starting_deadline = starting_deadline
        self.start_at = start_at
        self.end_at = end_at
        self.max_runs = None if max_runs == -1 else max_runs  # -1, like None, means no limit
        self.on_finish = on_finish
        self.jitter = jitter
        self.overlap = overlap
        self.max_run_time = max_run_time
        self.description = description
        # The slot beat recorded as next (``status``), so skipped slots stay skipped.
        self.next_slot = next_slot
        ensure_conf(self.app)

    # -- keys -----------------------------------------------------------------

    @staticmethod
    def generate_key(app: Celery, name: str) -> str:
        return ensure_conf(app).keys.entry(name)

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
        definition, meta, status = get_store(app).load(key)
        if not definition:
            raise EntryNotFoundError(key)
        return cls.from_stored(definition, meta, app=app, key=key, status=status)

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
        status: bytes | str | Status | None = None,
        fields: dict | None = None,
    ) -> RedBeatSchedulerEntry:
        """Build an entry from the raw ``definition``, ``meta`` and ``status`` of its hash (``status``
        may come decoded, the definition too: ``fields`` from ``decode_definition``, the entry's to keep).

        Raises ValueError (DecodeError) naming the field that is wrong.
        """
        fields = cls.decode_definition(definition) if fields is None else fields
        state = cls.decode_meta(meta)
        if not fields.get("name") and key is not None:
            fields["name"] = key[len(ensure_conf(app).key_prefix):]
        pointer = status if isinstance(status, Status) else Status.from_json(status)
        # The recorded next slot holds only for the definition it was computed from.
        next_slot = None
        if pointer.next_slot is not None and pointer.definition == definition_digest(definition):
            next_slot = pointer.next_slot
        # Celery fills a missing last_run_at with "now", which costs more than
        # the rest of building the entry; stored None means never run.
        entry = cls(app=app, total_run_count=state["total_run_count"],
                    last_run_at=state["last_run_at"] or _NOT_YET_KNOWN, next_slot=next_slot, **fields)
        entry.last_run_at = state["last_run_at"]
        return entry

    @staticmethod
    def load_definition(key: str, app: Celery | None = None, definition: Any = None) -> dict:
        app = app or current_app._get_current_object()
        if definition is None:
            definition = get_store(app).load(key).definition
        if not definition:
            raise EntryNotFoundError(key)
        return RedBeatSchedulerEntry.decode_definition(definition)

    @staticmethod
    def decode_definition(definition: bytes | str) -> dict:
        """The constructor arguments in a stored ``definition``, checked field by field."""
        decoded = decode_json(definition, "definition")
        if not isinstance(decoded, dict):
            raise DecodeError("definition must be a JSON object")
        fields = {name: decoded[name] for name in DEFINITION_FIELDS if name in decoded}
        check_decoded(fields)
        return fields

    @staticmethod
    def load_meta(key: str, app: Celery | None = None) -> dict:
        app = app or current_app._get_current_object()
        return RedBeatSchedulerEntry.decode_meta(get_store(app).load(key).meta)

    @staticmethod
    def decode_meta(meta: bytes | str | None, app: Celery | None = None) -> dict:
        """``last_run_at`` (None if never run) and ``total_run_count`` from stored ``meta``."""
        state = Meta.from_json(meta)
        return {"last_run_at": state.last_run_at, "total_run_count": state.total_run_count}

    # -- timing ---------------------------------------------------------------

    def policy(self) -> Policy:
        """How this entry treats its slots: its own options, else the global settings."""
        conf = ensure_conf(self.app)

        def either(value: Any, default: Any) -> Any:
            return default if value is None else value

        return Policy(
            catch_up=either(self.catch_up, conf.catch_up),
            catch_up_max=catch_up_limit(either(self.catch_up_max, conf.catch_up_max)),
            # The entry's -1 or 0 (no deadline) overrides the setting's deadline, its null does not.
            starting_deadline=no_deadline(either(self.starting_deadline, conf.starting_deadline)),
            start_at=self.start_at,
            end_at=self.end_at,
            max_runs=self.max_runs,
            on_finish=either(self.on_finish, "disable"),
            jitter=either(self.jitter, 0.0),
        )

    def plan(self, now: datetime, policy: Policy | None = None) -> Plan:
        """Which slots run if beat looks at this entry at ``now`` (``policy``: its ``policy()``, if known)."""
        return plan_runs(self.key, self.schedule, self.policy() if policy is None else policy,
                         self.last_run_at, self.next_slot, self.total_run_count, now)

    def preview(self, count: int = 5, now: datetime | None = None) -> list[dict]:
        """The next ``count`` runs, exactly as beat will dispatch them.

        Each is ``{"slot", "fire_at", "local"}``: the scheduled instant (UTC),
        when beat dispatches it (UTC, jitter included) and the slot in the
        entry's time zone.
        """
        now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        zone = zone_of(self.schedule) if self.schedule is not None else timezone.utc
        runs = upcoming(self.key, self.schedule, self.policy(), self.last_run_at, self.next_slot,
                        self.total_run_count, now, count)
        return [{"slot": slot, "fire_at": fire, "local": slot.astimezone(zone)} for slot, fire in runs]

    @property
    def due_at(self) -> datetime | None:
        """When beat next looks at the entry (None: never again); never run means now."""
        now = self._default_now().astimezone(timezone.utc)
        plan = self.plan(now)
        if plan.runs or plan.missed:
            return now  # beat dispatches or records them at its next tick
        return plan.fire_at

    @property
    def score(self) -> float:
        """The entry's score in the schedule: UNIX seconds of ``due_at``, -1 for never."""
        return score_of(self.due_at)

    def is_due(self) -> schedstate:
        if vars(self).get(CLAIMED_RUN) is not None:  # the task message of a run beat claimed: due by that claim
            return schedstate(True, 0.0)
        if not self.enabled:
            return schedstate(False, 5.0)
        last_run_at = self.last_run_at or datetime(MINYEAR, 1, 2, tzinfo=timezone.utc)
        return self.schedule.is_due(last_run_at)

    # -- writing --------------------------------------------------------------

    def to_definition(self) -> dict:
        definition = {
            "name": self.name,
            "task": self.task,
            "args": list(self.args) if self.args is not None else [],
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        definition.update((name, getattr(self, name)) for name in OPTIONAL_FIELDS if getattr(self, name) is not None)
        return definition

    def definition_json(self) -> str:
        return dumps(self.to_definition())

    def checked_definition_json(self) -> str:
        """``definition_json``, refused (DecodeError naming the field) if beat would park it, or
        if the app knows its task and it cannot take the entry's arguments, or if its name is
        none an entry may have (one of RedBeat's own keys): InvalidEntryError."""
        keys = ensure_conf(self.app).keys
        if not keys.is_entry_key(self.key):
            raise InvalidEntryError(keys.no_entry_name(self.key))
        definition = self.definition_json()
        self.decode_definition(definition)
        check_written(self.to_definition(), self.app)
        return definition

    def meta_json(self) -> str:
        return meta_json(self.last_run_at, self.total_run_count)

    def save(self) -> RedBeatSchedulerEntry:
        """Store the definition and schedule it; an existing entry keeps its meta (see ``write_over``).

        Raises DecodeError, naming the field, for a definition beat would park.
        """
        store = get_store(self.app)
        store.save(write_over(self, store.load(self.key), self.checked_definition_json()))
        return self

    @classmethod
    def save_many(cls, entries: Iterable[RedBeatSchedulerEntry], app: Celery | None = None) -> int:
        """``save`` many entries with two round trips (a read, a write) per thousand; returns how many.

        Raises DecodeError for the first definition beat would park; the
        thousands of entries before it may have been written.
        """
        return _save_in_chunks(get_store(app or current_app._get_current_object()), entries)

    def delete(self) -> None:
        """Delete the entry and take it out of the schedule; a KeyError (NoEntryKeyError) if its
        name is one of RedBeat's own keys."""
        get_store(self.app).delete(self.key)

    @property
    def rank(self) -> int | None:
        """The entry's position in the schedule (0 = due first), as in celery-redbeat 2.x."""
        return get_store(self.app).rank(self.key)

    def run_now(self) -> None:
        """Dispatch once at beat's next tick, leaving the regular schedule as it is."""
        get_store(self.app).request_run_now(self.key)

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


def next_score(entry: RedBeatSchedulerEntry, now: datetime | None = None) -> float:
    """The score beat gives ``entry`` as it is (definition, run history, recorded next
    slot) when it looks at it at ``now``: ``now`` if it has runs due, slots to record as
    missed or an end to apply (``bounded``), else the fire time of its next slot (-1:
    none); a paused entry the fire time of its next regular slot, where beat moves it."""
    now = (now or entry._default_now()).astimezone(timezone.utc)
    plan = entry.plan(now)
    if entry.enabled and (plan.runs or plan.missed or (plan.finished and bounded(entry))):
        return now.timestamp()
    return score_of(plan.fire_at)


def write_over(entry: RedBeatSchedulerEntry, stored: StoredFields | None, definition: str | None = None) -> EntryWrite:
    """How saving ``entry`` as ``definition`` (by default its own) writes over the fields
    ``stored`` under its key (None: no hash there): the score rule of every way of saving
    (see ``EntryWrites.SAVE_LUA``, docs/adding-tasks.rst).

    A new entry (no stored meta) gets its own meta and ``score``, which may raise. An
    existing one keeps its stored meta, and ``entry`` takes that run history; it is
    scored as beat will score it at its next tick: the new definition with the stored
    meta and status (``next_score``), or 0 if they cannot be read (beat then decides,
    and parks it if it must).
    """
    definition = entry.definition_json() if definition is None else definition
    if stored is None or stored.meta is None:
        return EntryWrite(entry.key, definition, entry.meta_json(), entry.score)
    try:
        as_stored = entry.from_stored(definition, stored.meta, app=entry.app, key=entry.key, status=stored.status)
        score = next_score(as_stored)
        if as_stored.enabled and Status.from_json(stored.status).waiting_slot is not None:
            # A run waits for the previous one to finish (overlap buffer_one): beat looks at it
            # again soon, as it did before this write, not at the entry's next slot.
            score = as_stored._default_now().timestamp()
    except Exception:  # any bad stored field must cost this score, never the save
        return EntryWrite(entry.key, definition, stored.meta, 0.0)
    entry.last_run_at, entry.total_run_count = as_stored.last_run_at, as_stored.total_run_count
    entry.next_slot = as_stored.next_slot
    return EntryWrite(entry.key, definition, stored.meta, score)


def _save_in_chunks(store: ScheduleStore, entries: Iterable[RedBeatSchedulerEntry]) -> int:
    """``save`` each of ``entries``: per SAVE_CHUNK entries, one round trip reads what
    is stored, one writes."""
    count = 0
    chunks = iter(entries)
    while chunk := list(islice(chunks, SAVE_CHUNK)):
        definitions = [entry.checked_definition_json() for entry in chunk]
        stored = store.load_many([entry.key for entry in chunk])
        count += store.save_many([write_over(entry, fields, definition)
                                  for entry, definition, fields in zip(chunk, definitions, stored)],
                                 chunk=SAVE_CHUNK)
    return count


def overlap_policy(entry: RedBeatSchedulerEntry) -> Overlap:
    """What a slot of ``entry`` does while its previous run has not finished (docs/scheduling.rst)."""
    return Overlap(entry.overlap or Overlap.ALLOW)


def entry_run_bound(entry: RedBeatSchedulerEntry) -> RunBound:
    """After how long a started run of ``entry`` with no end counts as finished, and why: its
    ``max_run_time``, else its task's hard time limit (as its app knows the task) plus a grace,
    else ``redbeat_max_run_time``."""
    task = entry.app.tasks.get(entry.task) if entry.task else None
    task_limit, app_limit = getattr(task, "time_limit", None), entry.app.conf.task_time_limit
    if task_limit == app_limit:
        task_limit = None  # Celery copies the app's limit onto a task that sets none: say it is the app's
    return run_bound(entry.max_run_time, task_limit, app_limit, ensure_conf(entry.app).max_run_time)


def bounded(entry: RedBeatSchedulerEntry) -> bool:
    """Whether the entry asked to end (one-off, run limit, end date): then ``on_finish`` applies.

    Other entries whose schedule is over (an rrule past its ``until``) just
    stop, with a score of -1, as they did in celery-redbeat 2.x.
    """
    return (isinstance(entry.schedule, clocked) or entry.max_runs is not None or entry.end_at is not None
            or entry.on_finish is not None)


def definition_digest(definition: bytes | str) -> str:
    """A short fingerprint of a stored definition, to tell whether it changed."""
    raw = definition.encode("utf-8", "surrogateescape") if isinstance(definition, str) else definition
    return hashlib.sha1(raw).hexdigest()[:16]
