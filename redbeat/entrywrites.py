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
from .lua import ArgLayout
from .stages import text
from .storepart import StorePart, WrongTypeError

__all__ = ["EntryWrites", "EntryWrite", "UnchangedEntry", "ImportedWrite", "StoredFields"]

SAVE_ARGS = ArgLayout("ARG_", ("definition", "meta", "score"), first=1)


class EntryWrite(NamedTuple):
    """A definition to write as ``save`` writes it: the entry's key (its name, for
    ``write_entries``), the definition, and the meta and score it gets if it is new."""

    key: str
    definition: str
    meta: str
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

    # The score rule of every way of writing a definition. A new entry gets
    # its meta and its computed score. An existing entry keeps its meta and
    # its history, loses a parked mark, and is scored 0: beat looks at it at
    # its next tick and runs it only if its stored meta says it is due. (A
    # score computed from the caller's fresh object would push the entry
    # back each time an app re-saves it.) A hash without meta counts as new.
    # KEYS: schedule, entry   ARGV: SAVE_ARGS   Returns: 1
    SAVE_LUA = SAVE_ARGS.lua() + """
    redis.call('HSET', KEYS[2], 'definition', ARGV[ARG_DEFINITION])
    redis.call('HDEL', KEYS[2], 'parked')
    if redis.call('HSETNX', KEYS[2], 'meta', ARGV[ARG_META]) == 1 then
        redis.call('ZADD', KEYS[1], ARGV[ARG_SCORE], KEYS[2])
    else
        redis.call('ZADD', KEYS[1], 0, KEYS[2])
    end
    return 1
    """

    def save(self, key: str, definition: str, meta: str, score: float) -> None:
        """Write an entry's definition; meta and score only if it is new (see SAVE_LUA).

        Saving also clears a parked mark: a new definition deserves a new chance.
        """
        self._save(keys=[self.conf.schedule_key, key], args=SAVE_ARGS.pack(definition=definition, meta=meta,
                                                                            score=repr(score)))

    def _queue_save(self, pipe: Any, key: bytes | str, definition: bytes | str, meta: bytes | str,
                    score: float) -> None:
        """``save`` as part of ``pipe``."""
        # redis-py refuses scripts in a Redis Cluster pipeline (which is no
        # transaction there anyway): each save is then a call of its own.
        client = self.client if isinstance(self.client, RedisCluster) else pipe
        self._save(keys=[self.conf.schedule_key, key],
                   args=SAVE_ARGS.pack(definition=definition, meta=meta, score=repr(score)), client=client)

    def save_many(self, items: Iterable[EntryWrite], chunk: int = 1000) -> int:
        """``save`` for many (key, definition, meta, score) at once: one round trip per ``chunk``."""
        count = 0
        pipe = self.client.pipeline(transaction=False)
        for key, definition, meta, score in items:
            self._queue_save(pipe, key, definition, meta, score)
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

        ``changed`` holds (name, definition, meta, score) of new or edited
        entries, written as ``save`` writes them. ``unchanged`` entries are
        not written: they get their score back only if they had none.
        ``removed`` names are deleted. ``statics``, when given, becomes the
        set of static names.
        """
        pipe = self.client.pipeline()
        for name, definition, meta, score in changed:
            self._queue_save(pipe, self.key_for(name), definition, meta, score)
        for name, score in unchanged:
            pipe.zadd(self.conf.schedule_key, {self.key_for(name): score}, nx=True)
        for name in removed:
            pipe.zrem(self.conf.schedule_key, self.key_for(name))
            pipe.delete(self.key_for(name))
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
        of static names.
        """
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
                self._queue_save(pipe, key, fields[b"definition"], fields[b"meta"], score)
        if statics:
            pipe.sadd(self.conf.statics_key, *statics)
        pipe.execute()
        return len(written)

    def rewrite_definition(self, key: str, definition: str) -> None:
        """Replace an entry's definition (meta kept) and have beat look at it at its next tick."""
        pipe = self.client.pipeline()
        pipe.hset(key, "definition", definition)
        pipe.hdel(key, "parked")
        pipe.zadd(self.conf.schedule_key, {key: 0})
        pipe.execute()

    def request_run_now(self, key: str) -> None:
        """Ask beat to dispatch the entry once at its next tick, off its regular schedule."""
        pipe = self.client.pipeline()
        pipe.hset(key, "run_now", repr(time.time()))
        pipe.zadd(self.conf.schedule_key, {key: 0})
        pipe.execute()

    def save_meta(self, key: str, meta: str, score: float) -> None:
        pipe = self.client.pipeline()
        pipe.hset(key, "meta", meta)
        pipe.zadd(self.conf.schedule_key, {key: score})
        pipe.execute()

    def delete(self, key: str) -> None:
        pipe = self.client.pipeline()
        pipe.zrem(self.conf.schedule_key, key)
        pipe.delete(key)
        pipe.execute()

    def load(self, key: str) -> StoredFields:
        """An entry's ``definition``, ``meta`` and ``status``."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        definition, meta, status = cast("list[bytes | None]", self.client.hmget(key, "definition", "meta", "status"))
        return StoredFields(definition, meta, status)

    def load_many(self, keys: Sequence[str]) -> list[StoredFields | None]:
        """Each key's ``definition`` and ``meta``; None for a key that holds
        another type than a hash (someone else's data, never to be written)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "definition", "meta")
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
