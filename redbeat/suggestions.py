"""Nearest names, for messages that say what was probably meant: a field, a task, a time zone."""

from __future__ import annotations

import difflib
import functools
import zoneinfo
from collections.abc import Iterable

__all__ = ["nearest", "did_you_mean", "nearest_zones"]


def nearest(word: str, choices: Iterable[str], count: int = 1) -> list[str]:
    """The ``count`` choices closest to ``word`` (case aside), closest first; none if nothing is close."""
    by_folded: dict[str, str] = {}
    for choice in choices:
        by_folded.setdefault(choice.casefold(), choice)
    matches = difflib.get_close_matches(word.casefold(), by_folded, n=count, cutoff=0.6)
    return [by_folded[match] for match in matches]


def did_you_mean(word: str, choices: Iterable[str], count: int = 1) -> str:
    """`` (did you mean 'x'?)`` for the nearest choices, or nothing."""
    close = nearest(word, choices, count)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


@functools.lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def nearest_zones(name: str, count: int = 3) -> list[str]:
    """IANA zone names close to ``name``: its spelling, or its last part ('Pari' finds Europe/Paris)."""
    zones = _zones()
    close = nearest(name, zones, count)
    by_city: dict[str, str] = {}
    for zone in zones:
        by_city.setdefault(zone.rsplit("/", 1)[-1].casefold(), zone)
    for city in nearest(name.rsplit("/", 1)[-1], by_city, count):
        if by_city[city.casefold()] not in close:
            close.append(by_city[city.casefold()])
    return close[:count]
