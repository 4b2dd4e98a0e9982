"""One page of the schedule, searched, filtered and sorted in Redis: what the dashboard's
schedule table shows, fast at 100,000 entries (docs/web.rst, *What each page costs*).

Without a search or a state filter, a page costs O(log N + page): the entries in next-run
order are ranks of the schedule's sorted set (ZRANGE by rank), the finished ones (negative
scores) after the others; ``due`` is a range of scores, also read by rank. Only the page's
members are returned; the caller reads their hashes.

A search (name or task text) or a state filter scans: a script walks the schedule a chunk
at a time (ZSCAN) and returns only the members that match, deciding the state with the
census's own Lua (``census.ENTRY_STATE_LUA``), so no definition crosses the network. At
most ``MATCH_LIMIT`` matches are kept (``capped`` says so), sorted here, then paged.
Sorting by name without a search reads every member's name (no hash): O(N) names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from celery import Celery

from .census import ENTRY_STATE_LUA
from .client import get_store
from .queries import key_glob
from .store import ScheduleStore

__all__ = ["StateFilter", "SortOrder", "PageQuery", "Page", "schedule_page", "MATCH_LIMIT"]

# Matches kept of a search: enough for any screen, bounded for memory and time.
MATCH_LIMIT = 20_000
# Members scanned per script call: a few milliseconds of Redis's time each at most (those
# whose name does not match cost far less: Redis drops them before the script sees them).
SEARCH_CHUNK = 1000
MAX_PAGE_SIZE = 500


class StateFilter(str, Enum):
    """Which entries the table shows: the census's states, ``due`` (its time has come), or all."""

    ALL = ""
    ACTIVE = "active"
    PAUSED = "paused"
    PARKED = "parked"
    FINISHED = "finished"
    DUE = "due"


class SortOrder(str, Enum):
    NEXT = "next"  # next run first, finished ones last
    NEXT_DESC = "-next"
    NAME = "name"
    NAME_DESC = "-name"


@dataclass(frozen=True)
class PageQuery:
    """What the table asks: a search of names and of task names (text, any case), a state, an order, a page."""

    name: str = ""
    task: str = ""
    state: StateFilter = StateFilter.ALL
    sort: SortOrder = SortOrder.NEXT
    page: int = 1
    size: int = 50

    @property
    def scans(self) -> bool:
        """Whether this query walks the whole schedule (a search or a state filter but ``due``)."""
        return bool(self.name or self.task) or self.state not in (StateFilter.ALL, StateFilter.DUE)

    @property
    def offset(self) -> int:
        return (max(self.page, 1) - 1) * self.size


@dataclass(frozen=True)
class Page:
    """The page's members (entry keys as bytes, in order), how many entries match in all,
    and whether a search stopped at ``MATCH_LIMIT`` matches (``total`` is then a floor)."""

    keys: list[bytes]
    total: int
    capped: bool = False


# Members of one ZSCAN chunk that match: the name matches the glob ARGV[4] (ZSCAN's MATCH:
# Redis filters the names, in C), the task holds ARGV[5] (text found in the definition's
# "task", lower case), the state is ARGV[6] ('' any).
# KEYS: schedule; ARGV: prefix, cursor, count, name glob, task text, state
# Returns: {next cursor, member, score, member, score, ...}
SEARCH_LUA = ENTRY_STATE_LUA + """
local prefix, task_text, wanted = ARGV[1], ARGV[5], ARGV[6]
local scanned = redis.call('ZSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3], 'MATCH', ARGV[4])
local members = scanned[2]
local found = {scanned[1]}
for i = 1, #members, 2 do
    local key, score = members[i], tonumber(members[i + 1])
    local ok = true
    if task_text ~= '' or wanted ~= '' then
        local state, _, definition = entry_state(prefix, key, score)
        ok = state and (wanted == '' or state == wanted)
        if ok and task_text ~= '' then
            local task = definition and string.match(definition, '"task"%s*:%s*"([^"]*)"')
            ok = task and string.find(string.lower(task), task_text, 1, true)
        end
    end
    if ok then
        found[#found + 1] = key
        found[#found + 1] = members[i + 1]
    end
end
return found
"""


def schedule_page(app: Celery, query: PageQuery, now: float) -> Page:
    """The page ``query`` asks for, at ``now`` (UNIX seconds, for ``due``)."""
    store = get_store(app)
    if query.scans:
        return _searched(store, query)
    if query.sort in (SortOrder.NAME, SortOrder.NAME_DESC):
        return _by_name(store, query, now)
    return _by_rank(store, query, now)


def _by_rank(store: ScheduleStore, query: PageQuery, now: float) -> Page:
    """Next-run order by rank: the members of scores 0 and above, then the finished (negative)
    ones; or only the due ones (scores 0 to ``now``). One round trip for the counts, one per segment."""
    key = store.conf.schedule_key
    pipe = store.client.pipeline(transaction=False)
    pipe.zcount(key, "-inf", "(0")
    pipe.zcard(key)
    pipe.zcount(key, 0, now)
    finished, total, due = pipe.execute()
    segments = ([(finished, due, False)] if query.state == StateFilter.DUE
                else [(finished, total - finished, False), (0, finished, False)])
    if query.sort == SortOrder.NEXT_DESC:
        segments = [(start, length, True) for start, length, _ in reversed(segments)]
    ranks = _ranks(segments, query.offset, query.size)
    keys: list[bytes] = []
    for start, stop, reverse in ranks:
        members = store.client.zrange(key, start, stop)
        keys += cast("list[bytes]", list(reversed(members)) if reverse else members)
    return Page(keys, due if query.state == StateFilter.DUE else total)


def _ranks(segments: list[tuple[int, int, bool]], offset: int, size: int) -> list[tuple[int, int, bool]]:
    """The rank ranges (first, last, reversed) of the page ``offset``..``offset+size`` over
    ``segments`` (first rank, length, reversed) laid end to end."""
    ranges = []
    for first, length, reverse in segments:
        if size <= 0:
            break
        if offset >= length:
            offset -= length
            continue
        count = min(size, length - offset)
        if reverse:  # counted from the segment's end
            last = first + length - 1 - offset
            ranges.append((last - count + 1, last, True))
        else:
            ranges.append((first + offset, first + offset + count - 1, False))
        offset, size = 0, size - count
    return ranges


def _by_name(store: ScheduleStore, query: PageQuery, now: float) -> Page:
    """Every member's name (or every due one's: scores 0 to ``now``), sorted here, then paged."""
    key = store.conf.schedule_key
    names = cast("list[bytes]", store.client.zrangebyscore(key, 0, now) if query.state == StateFilter.DUE
                 else store.client.zrange(key, 0, -1))
    names.sort(reverse=query.sort == SortOrder.NAME_DESC)
    return Page(names[query.offset:query.offset + query.size], len(names))


def name_glob(prefix: str, text: str) -> bytes:
    """The Redis glob of the entry keys whose name holds ``text``, in any ASCII case
    (each letter as a class: ``[jJ][oO][bB]``); any name when ``text`` is empty."""
    def char_glob(char: str) -> str:
        if char.lower() != char.upper() and char.isascii():
            return f"[{char.lower()}{char.upper()}]"
        return "\\" + char if char in "*?[]\\^-" else char
    return key_glob(prefix, "*" + "".join(char_glob(char) for char in text) + "*" if text else "*")


def _searched(store: ScheduleStore, query: PageQuery) -> Page:
    """Scan for the matches (at most ``MATCH_LIMIT``), sort them, page them."""
    script = store.client.register_script(SEARCH_LUA)
    args: list[Any] = [store.conf.key_prefix, 0, SEARCH_CHUNK, name_glob(store.conf.key_prefix, query.name),
                       query.task.lower(), query.state.value]
    matches: dict[bytes, float] = {}  # ZSCAN may return a member twice while Redis resizes the set
    capped = False
    while True:
        cursor, *found = cast("list[Any]", script(keys=[store.conf.schedule_key], args=args))
        matches.update(zip(found[::2], (float(score) for score in found[1::2])))
        if len(matches) >= MATCH_LIMIT:
            capped = True
            break
        if int(cursor) == 0:
            break
        args[1] = cursor
    if query.sort in (SortOrder.NAME, SortOrder.NAME_DESC):
        ordered = sorted(matches, reverse=query.sort == SortOrder.NAME_DESC)
    else:  # next run first, finished (negative scores) last
        ordered = sorted(matches, key=lambda member: (matches[member] < 0, matches[member], member),
                         reverse=query.sort == SortOrder.NEXT_DESC)
    return Page(ordered[query.offset:query.offset + query.size], len(matches), capped)
