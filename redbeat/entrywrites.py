"""Writing entries: the entry API, the static sync, an import, and the command line's edits.

Every way of writing a definition follows one score rule, SAVE_LUA's (see
``EntryWrites.save`` and docs/adding-tasks.rst).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from .config import RedBeatConfig
from .keys import key_bytes
from .lua import ArgLayout
from .stages import text
from .storepart import StorePart, WrongTypeError

__all__ = ["EntryWrites", "EntryWrite", "UnchangedEntry", "ImportedWrite", "StoredFields"]

SAVE_ARGS = ArgLayout("ARG_", ("definition", "meta", "score"), first=1)


class EntryWrite(NamedTuple):
    """A definition to write as ``save`` writes it (see SAVE_LUA): the entry's key,
    the definition, and a meta and a score. ``meta`` is the meta the score was
    computed from: the stored one of an existing entry, the new entry's own
    otherwise (``entry.write_over`` makes both)."""

    key: bytes | str
    definition: bytes | str
    meta: bytes | str
    score: float


class UnchangedEntry(NamedTuple):
    """An entry whose stored definition is already the one wanted: its name, and the
    score it gets back if it has none."""

    name: str
    score: float


class ImportedWrite(NamedTuple):
    """One entry of an import (see ``write_imported``)."""

    key: bytes
    score: float
    fields: dict[bytes, bytes]
    exact: bool  # from an export: the whole hash, as exported


class StoredFields(NamedTuple):
    """An entry's hash fields as stored (None: not there)."""

    definition: bytes | None
    meta: bytes | None
    status: bytes | None = None


class EntryWrites(StorePart):
    """Writing, editing and deleting entries, and the set of static names."""

    def __init__(self, client: Redis | RedisCluster, conf: RedBeatConfig) -> None:
        super().__init__(client, conf)
        self._save = self.client.register_script(self.SAVE_LUA)

    # The score rule of every way of writing a definition (docs/adding-tasks.rst).
    # ARG_SCORE comes computed by entry.write_over: for a new entry from its own
    # meta; for an existing one from its stored meta and status with the new
    # definition, as beat would at its next tick. The script:
    # - writes the definition and drops a parked mark (a new definition deserves
    #   a new chance); writes ARG_META only if the hash has none (an existing
    #   entry keeps its meta and its history);
    # - writes ARG_SCORE only if the stored meta is then ARG_META (the score holds
    #   for what is stored) and no run-now request waits; else 0, and beat
    #   decides at its next tick (beat claimed a run since the meta was read,
    #   or the entry was created meanwhile);
    # - moves an existing entry's score only earlier: the saving host's clock
    #   may be ahead of Redis's, by which beat decides, and a score pushed past
    #   a slot would make it late or missed; beat looking early is always safe.
    #   A score of -1 (no next run) does not hold a new definition back.
    # So the score is a real next run at every moment but such races, and never
    # one from the caller's fresh object (which would push the entry back each
    # time an app re-saves it).
    # KEYS: schedule, entry   ARGV: SAVE_ARGS
    # Returns: 1 if the computed score (or an earlier stored one) was written, 0 if 0 was
    SAVE_LUA = SAVE_ARGS.lua() + """
    redis.call('HSET', KEYS[2], 'definition', ARGV[ARG_DEFINITION])
    redis.call('HDEL', KEYS[2], 'parked')
    local new = redis.call('HSETNX', KEYS[2], 'meta', ARGV[ARG_META]) == 1
    if redis.call('HGET', KEYS[2], 'meta') == ARGV[ARG_META] and redis.call('HEXISTS', KEYS[2], 'run_now') == 0 then
        -- Scores stay the text they were written as (Lua's numbers print fewer digits).
        local score = ARGV[ARG_SCORE]
        local stored = redis.call('ZSCORE', KEYS[1], KEYS[2])
        if not new and stored and tonumber(stored) >= 0
                and (tonumber(score) < 0 or tonumber(stored) < tonumber(score)) then
            score = stored
        end
        redis.call('ZADD', KEYS[1], score, KEYS[2])
        return 1
    end
    redis.call('ZADD', KEYS[1], 0, KEYS[2])
    return 0
    """

    def save(self, write: EntryWrite) -> bool:
        """Write an entry's definition, with the score rule of SAVE_LUA; whether
        ``write.score`` was written (False: 0 was, for beat to decide)."""
        return bool(self._save(keys=[self.conf.schedule_key, key_bytes(write.key)], args=self._save_args(write)))

    @staticmethod
    def _save_args(write: EntryWrite) -> list:
        return SAVE_ARGS.pack(definition=write.definition, meta=write.meta, score=repr(write.score))

    def _queue_save(self, pipe: Any, write: EntryWrite) -> None:
        """``save`` as part of ``pipe``."""
        # redis-py refuses scripts in a Redis Cluster pipeline (which is no
        # transaction there anyway): each save is then a call of its own.
        client = self.client if isinstance(self.client, RedisCluster) else pipe
        self._save(keys=[self.conf.schedule_key, key_bytes(write.key)], args=self._save_args(write), client=client)

    def save_many(self, writes: Iterable[EntryWrite], chunk: int = 1000) -> int:
        """``save`` for many at once: one round trip per ``chunk``."""
        count = 0
        pipe = self.client.pipeline(transaction=False)
        for write in writes:
            self._queue_save(pipe, write)
            count += 1
            if count % chunk == 0:
                pipe.execute()
        pipe.execute()
        return count

    def write_entries(
        self,
        changed: Iterable[EntryWrite],
        unchanged: Iterable[UnchangedEntry],
        removed: Iterable[str] = (),
        statics: Iterable[str] | None = None,
    ) -> None:
        """Write entries by name in one transaction.

        ``changed`` holds the writes of new or edited entries, written as
        ``save`` writes them. ``unchanged`` entries are
        not written: they get their score back only if they had none.
        ``removed`` names are deleted (by their key's bytes: a name read back as
        ``admin.key_text`` may hold bytes that are not UTF-8); NoEntryKeyError,
        with nothing written, if one is RedBeat's own. ``statics``, when given,
        becomes the set of static names.
        """
        removed_keys = [key_bytes(self.key_for(name)) for name in removed]
        for key in removed_keys:
            self.refuse_no_entry_key(key)
        pipe = self.client.pipeline()
        for write in changed:
            self._queue_save(pipe, write)
        for name, score in unchanged:
            pipe.zadd(self.conf.schedule_key, {self.key_for(name): score}, nx=True)
        for key in removed_keys:
            pipe.zrem(self.conf.schedule_key, key)
            pipe.delete(key)
        if statics is not None:
            pipe.delete(self.conf.statics_key)
            statics = list(statics)
            if statics:
                pipe.sadd(self.conf.statics_key, *statics)
        pipe.execute()

    def write_imported(self, writes: Iterable[ImportedWrite],
                       statics: Sequence[str] = ()) -> int:
        """Write imported entries as (key, score, fields, exact), in one transaction;
        returns how many keys were written.

        An exact entry (from an export) replaces the whole hash with ``fields``
        (none: only its score comes back, as an orphan member); the others
        are written as ``save`` writes them. ``statics`` are added to the set
        of static names. NoEntryKeyError, with nothing written, if a key is
        one of RedBeat's own (the import's plan refuses those first).
        """
        writes = list(writes)
        for write in writes:
            self.refuse_no_entry_key(write.key)
        pipe = self.client.pipeline()
        written = set()
        for key, score, fields, exact in writes:
            written.add(key)
            if exact:
                pipe.delete(key)
                if fields:
                    # redis-py's mapping type has invariant keys, which refuse a dict[bytes, bytes].
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.zadd(self.conf.schedule_key, {key: score})
            else:
                self._queue_save(pipe, EntryWrite(key, fields[b"definition"], fields[b"meta"], score))
        if statics:
            pipe.sadd(self.conf.statics_key, *statics)
        pipe.execute()
        return len(written)

    def request_run_now(self, key: str) -> None:
        """Ask beat to dispatch the entry once at its next tick, off its regular schedule."""
        raw = key_bytes(key)
        pipe = self.client.pipeline()
        pipe.hset(raw, "run_now", repr(time.time()))
        pipe.zadd(self.conf.schedule_key, {raw: 0})
        pipe.execute()

    def save_meta(self, key: str, meta: str, score: float) -> None:
        raw = key_bytes(key)
        pipe = self.client.pipeline()
        pipe.hset(raw, "meta", meta)
        pipe.zadd(self.conf.schedule_key, {raw: score})
        pipe.execute()

    def delete(self, key: str) -> None:
        """Delete an entry and take it out of the schedule; NoEntryKeyError for one of RedBeat's own keys."""
        self.refuse_no_entry_key(key)
        raw = key_bytes(key)
        pipe = self.client.pipeline()
        pipe.zrem(self.conf.schedule_key, raw)
        pipe.zrem(self.keys.failing, raw)  # its failed last run is no longer anyone's concern
        pipe.delete(raw)
        pipe.execute()

    def load(self, key: str) -> StoredFields:
        """An entry's ``definition``, ``meta`` and ``status``."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        fields = self.client.hmget(key_bytes(key), "definition", "meta", "status")
        definition, meta, status = cast("list[bytes | None]", fields)
        return StoredFields(definition, meta, status)

    def load_many(self, keys: Sequence[str]) -> list[StoredFields | None]:
        """Each key's ``definition``, ``meta`` and ``status`` in one round trip; None for a
        key that holds another type than a hash (someone else's data, never to be written)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key_bytes(key), "definition", "meta", "status")
        return [None if isinstance(fields, ResponseError) else StoredFields(*fields)
                for fields in pipe.execute(raise_on_error=False)]

    def static_names(self) -> set[str]:
        """The names in the set of static entries; WrongTypeError if that key is no set."""
        try:
            return {text(name) for name in self.client.smembers(self.conf.statics_key)}
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            raise WrongTypeError(self.conf.statics_key, text(self.client.type(self.conf.statics_key)), "set") from exc

    def move_aside(self, key: str, now: float) -> str:
        """Rename one of RedBeat's own keys that holds the wrong type of value out
        of the way, keeping it for whoever wrote it; returns its new name."""
        aside = self.keys.set_aside(key, now)
        self.client.rename(key, aside)
        return aside
