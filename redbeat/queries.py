"""What operators ask of the schedule (``admin`` and the command line): reads only.

None of these is on the tick's path: they may take a few round trips, and
read a busy schedule consistently rather than fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import ResponseError

from .keys import key_bytes
from .stages import text
from .storepart import StorePart

__all__ = ["ScheduleQueries", "BeatRecords", "chunks"]


@dataclass(frozen=True)
class BeatRecords:
    """What the beats wrote about themselves, as read at ``now`` (Redis's clock): the
    active beat's heartbeat and the standbys' records by token (None: a key of the wrong type)."""

    now: float
    heartbeat: bytes | None
    standbys: dict[bytes, bytes] | None


class ScheduleQueries(StorePart):
    """Read-only questions about one app's schedule and RedBeat's own keys."""

    # The Redis type each of RedBeat's own keys must have ("none": not there yet).
    OWN_KEY_TYPES = {"schedule": "zset", "statics": "set", "lock": "string", "inflight": "hash",
                     "heartbeat": "string", "standbys": "hash", "run-outcomes": "hash", "failing": "zset"}

    def own_keys(self) -> dict[str, str]:
        """RedBeat's own keys by role (the lock only when locking is on)."""
        conf = self.conf
        keys = {"schedule": conf.schedule_key, "statics": conf.statics_key, "inflight": self.inflight_key,
                "heartbeat": self.heartbeat_key, "standbys": self.keys.standbys,
                "run-outcomes": self.keys.run_outcomes, "failing": self.keys.failing}
        if conf.lock_key:
            keys["lock"] = conf.lock_key
        return keys

    def own_key_types(self) -> dict[str, str]:
        """The Redis type of each of RedBeat's own keys, by role; one round trip."""
        keys = self.own_keys()
        return dict(zip(keys, self.key_types([key.encode() for key in keys.values()])))

    def schedule_members(self, chunk: int = 1000, match: str | None = None) -> Iterator[list[bytes]]:
        """Every member of the schedule, once, in chunks of about ``chunk``; with ``match``,
        only the entries whose name matches that Redis glob pattern, filtered by Redis
        (ZSCAN MATCH on the prefix, escaped, and the pattern), so the others never cross the network.

        ZSCAN, not ZRANGE by rank: a running beat moves scores all the time,
        which shifts ranks between pages, so paging by rank skips some members
        and repeats others. ZSCAN returns every member that stays in the set
        for the whole scan at least once, whatever happens to the scores;
        the repeats it may return are dropped here.
        """
        seen: set[bytes] = set()
        cursor = 0
        pattern = None if match is None else key_glob(self.conf.key_prefix, match)
        while True:
            cursor, pairs = self.client.zscan(self.conf.schedule_key, cursor, count=chunk, match=pattern)
            # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
            fresh = [cast(bytes, member) for member, _ in pairs if member not in seen]
            seen.update(fresh)
            if fresh:
                yield fresh
            if cursor == 0:
                return

    def read_entries(self, keys: Sequence[bytes]) -> list[tuple[float | None, dict[bytes, bytes] | str | None]]:
        """(score, fields) of each key, read in one transaction so that an entry's
        score and hash belong together even while beat moves it.

        The score is None for a key that is not (or no longer) in the schedule.
        The fields are the key's Redis type instead when it is no hash, and
        None for a key outside the prefix: that is no entry, and its hash is
        not read (under Redis Cluster it lives in another slot).
        """
        prefix = self.conf.key_prefix.encode()
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.zscore(self.conf.schedule_key, key)
            if key.startswith(prefix):
                pipe.hgetall(key)
        replies = iter(pipe.execute(raise_on_error=False) if keys else ())
        read: list[tuple[bytes, float | None, Any]] = []
        for key in keys:
            score = next(replies)
            if isinstance(score, Exception):
                raise score  # the schedule itself is unreadable: nothing here can be trusted
            read.append((key, score, next(replies) if key.startswith(prefix) else None))
        wrong = [key for key, _, raw in read if isinstance(raw, Exception)]
        kinds = dict(zip(wrong, self.key_types(wrong)))
        return [(score, kinds[key] if isinstance(raw, Exception) else raw) for key, score, raw in read]

    def key_types(self, keys: Sequence[bytes | str]) -> list[str]:
        """The Redis type of each key ("none" for a key that is not there)."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key_bytes(key))
        return [text(kind) for kind in pipe.execute()]

    def history(self, key: str) -> list[dict]:
        """The entry's recent runs, newest first."""
        records = []
        for raw in self.client.lrange(self.history_key(key), 0, -1):
            try:
                records.append(json.loads(raw))
            except ValueError:
                continue
        return records

    def history_records(self, key: str) -> list[bytes]:
        """The raw records of an entry's run history, newest first (``key`` as
        decoded with surrogateescape, so that any bytes name their key)."""
        # The store's client answers in bytes (decode_responses=False); redis-py's types cannot tell.
        return cast("list[bytes]", self.client.lrange(self.history_key(key).encode("utf-8", "surrogateescape"), 0, -1))

    def misfiled_histories(self) -> Iterator[tuple[bytes, str]]:
        """(key, Redis type) of history keys that are no list."""
        pattern = _glob_escape(self.keys.histories) + "*"
        for keys in chunks(self.client.scan_iter(match=pattern, count=1000), 1000):
            for key, kind in zip(keys, self.key_types(keys)):
                if kind != "list":
                    yield key, kind

    def rank(self, key: str) -> int | None:
        """The entry's position in the schedule, 0 for the first due; None if it is not in it."""
        # A list only with withscore=True, which is not asked for.
        return cast("int | None", self.client.zrank(self.conf.schedule_key, key_bytes(key)))

    def known(self, key: str) -> bool:
        """Whether ``key`` is an entry hash or a member of the schedule (an orphan)."""
        raw = key_bytes(key)
        return bool(self.client.exists(raw)) or self.client.zscore(self.conf.schedule_key, raw) is not None

    def unscheduled_hashes(self, scheduled: set[bytes]) -> Iterator[bytes]:
        """Hashes under the prefix that are neither RedBeat's own keys nor in the schedule.

        ``scheduled`` are the members seen a moment ago; a hash not among them
        is looked up again before it is reported, so an entry added meanwhile
        is not taken for an unscheduled one.
        """
        own = self.keys.own.encode()
        raw_keys = self.client.scan_iter(match=_glob_escape(self.conf.key_prefix) + "*", count=1000, _type="hash")
        candidates = (key for key in raw_keys if not key.startswith(own) and key not in scheduled)
        for keys in chunks(candidates, 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.zscore(self.conf.schedule_key, key)
            yield from (key for key, score in zip(keys, pipe.execute()) if score is None)

    def time(self) -> float:
        """Now by Redis's clock, the one beat decides by (UNIX seconds)."""
        seconds, microseconds = self.client.time()
        return seconds + microseconds / 1e6

    def overview(self, now: float) -> dict[str, Any]:
        """The lock's token, the heartbeat, the standbys' records (by token), and how the
        schedule stands at ``now``; two round trips. What cannot be read (a key of the
        wrong type) is None."""
        conf = self.conf
        pipe = self.client.pipeline(transaction=False)
        pipe.get(conf.lock_key or conf.default_lock_key)
        pipe.get(self.heartbeat_key)
        pipe.hgetall(self.keys.standbys)
        pipe.zcard(conf.schedule_key)
        pipe.zcount(conf.schedule_key, 0, now)
        # Score 0 means "due now" to whoever wrote it, not "late since 1970".
        pipe.zrangebyscore(conf.schedule_key, "(0", now, start=0, num=1, withscores=True)
        pipe.zrangebyscore(conf.schedule_key, "-inf", "(0")
        pipe.hlen(self.inflight_key)
        replies = [None if isinstance(reply, ResponseError) else reply
                   for reply in pipe.execute(raise_on_error=False)]
        token, heartbeat, standbys, total, due, oldest, never, in_flight = replies
        parked = 0
        if never:
            pipe = self.client.pipeline(transaction=False)
            for key in never:
                pipe.hexists(key, "parked")
            parked = sum(reply is True for reply in pipe.execute(raise_on_error=False))
        return {"lock_token": token, "heartbeat": heartbeat, "standbys": standbys, "entries": total, "due": due,
                "oldest_due_score": oldest[0][1] if oldest else None,
                "never_due": None if never is None else len(never) - parked,
                "parked": None if never is None else parked, "in_flight": in_flight}

    def beat_records(self) -> BeatRecords:
        """The heartbeat and the standbys' records, then now by Redis's clock; two round
        trips (Redis Cluster refuses TIME in a pipeline)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.heartbeat_key)
        pipe.hgetall(self.keys.standbys)
        heartbeat, standbys = [None if isinstance(reply, ResponseError) else reply
                               for reply in pipe.execute(raise_on_error=False)]
        return BeatRecords(self.time(), heartbeat, standbys)

    def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None if the server will not say (managed Redis)."""
        try:
            # Keyed by bytes or str, as the client decodes; redis-py's types say str either way.
            reply: dict[Any, Any] = self.client.config_get("maxmemory-policy")
        except ResponseError:
            return None
        policy = reply.get(b"maxmemory-policy", reply.get("maxmemory-policy"))
        return text(policy) if policy is not None else None


def chunks(items: Iterable[Any], size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def key_glob(prefix: str, name_pattern: str) -> bytes:
    """The Redis glob of the keys under ``prefix`` whose names match ``name_pattern``."""
    return (_glob_escape(prefix) + name_pattern).encode("utf-8", "surrogateescape")


def _glob_escape(prefix: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in prefix)
