"""The schedule table's rows and the entry page's data, as plain JSON-able dicts that
the pages render and the API returns: built from ``admin``'s views and summaries and
``entrydetails``, the same reading ``redbeat list`` and ``redbeat show`` print."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import schedule as interval_schedule

from .. import admin
from ..client import get_store
from ..entrydetails import EntryDetails
from ..slots import zone_of
from ..timeformat import iso, with_iso_times

__all__ = ["state_of", "rows_for", "entry_data", "parked_words", "shown_json"]


def state_of(view: admin.EntryView, now: float) -> str:
    """The entry's state as the census counts it (parked, finished, paused, active), with
    ``due`` for an active one whose time has come, and ``malformed`` or ``orphan``."""
    if view.kind != "hash":
        return "orphan"
    if view.parked is not None:
        return "parked"
    if view.score is not None and view.score < 0:
        return "finished"
    if view.entry is not None and not view.entry.enabled:
        return "paused"
    if view.error:
        return "malformed"
    return "due" if view.score is not None and view.score <= now else "active"


def _zone_name(view: admin.EntryView) -> str | None:
    """The zone of the entry's wall-clock times; None for an interval, which has none."""
    entry = view.entry
    if entry is None or entry.schedule is None or isinstance(entry.schedule, interval_schedule):
        return None
    try:
        zone = zone_of(entry.schedule)
    except Exception:
        return None
    return str(getattr(zone, "key", None) or zone)


# How far back a row looks for its entry's last published run: slots an overlap or catch-up
# policy skipped, and runs given up, come after it in the history.
LAST_RUN_LOOKBACK = 10


def _last_runs(app: Celery, keys: list[str]) -> dict[str, dict]:
    """The newest record of a run that was published, of each entry (among its newest
    ``LAST_RUN_LOOKBACK``): the run the row's ``last_run`` names. One pipelined read."""
    store = get_store(app)
    pipe = store.client.pipeline(transaction=False)
    for key in keys:
        pipe.lrange(admin.key_bytes(store.history_key(key)), 0, LAST_RUN_LOOKBACK - 1)
    last = {}
    for key, raw in zip(keys, pipe.execute(raise_on_error=False)):
        for record in _records(raw if isinstance(raw, list) else []):
            if record.get("outcome") == "published":
                last[key] = record
                break
    return last


def _records(raw: list[bytes]) -> Iterator[dict]:
    """The readable records of a history, newest first; junk skipped."""
    for item in raw:
        record = admin.history_dict(item)
        if record is not None:
            yield record


def _row(view: admin.EntryView, summary: dict, last: dict | None, now: float) -> dict[str, Any]:
    lateness = last.get("lateness") if last else None
    return {
        "name": view.name,
        "task": summary["task"],
        "description": summary["description"],
        "schedule": summary["schedule"],
        "zone": _zone_name(view),
        "state": state_of(view, now),
        "next_run": summary["next_run"],
        "next_run_at": None if view.next_run is None else view.score,
        "due_now": summary["due_now"],
        # meta's last_run_at is set when an entry is created: no run until one is counted.
        "last_run": summary["last_dispatched"] or (summary["last_run"] if summary["total_run_count"] else None),
        "last_lateness": lateness if isinstance(lateness, (int, float)) else None,
        "last_outcome": last.get("outcome") if last else None,
        "runs": summary["published"],
        "given_up": summary["given_up"],
        "in_flight": summary["in_flight"],
        "last_run_state": summary["last_run_state"],
        "parked": view.parked,
        "error": view.error,
    }


def rows_for(app: Celery, keys: list[bytes], now: float) -> list[dict[str, Any]]:
    """The rows of the entries ``keys`` (members of the schedule), in that order: the page's
    hashes, their last worker events and their newest history records, in three round trips."""
    views = [view for view in admin.entries(app, [admin.key_text(key) for key in keys], worker_events=True)
             if view.score is not None]  # gone since the page was read
    in_flight = admin.in_flight_counts(app)
    last = _last_runs(app, [view.key for view in views if view.kind == "hash"])
    return [_row(view, view.summary(in_flight[view.key]), last.get(view.key), now) for view in views]


def parked_words(reason: str) -> str:
    """Why beat parked an entry, and what to do, in plain words."""
    return (f"Beat set this entry aside and will not run it: {reason}. Fix its definition (edit it here or with "
            "redbeat edit); saving it puts it back in the schedule.")


def _next_runs(details: EntryDetails) -> list[dict[str, Any]]:
    """The next runs in the entry's zone, each saying when the zone's offset changed since the one before (DST)."""
    runs = []
    offset: timedelta | None = None
    for run in details.runs:
        local: datetime = run["local"]
        changed = offset is not None and local.utcoffset() != offset
        runs.append({"slot": run["slot"].isoformat(), "fire_at": run["fire_at"].isoformat(),
                     "local": local.strftime("%a %Y-%m-%d %H:%M:%S"), "zone": local.strftime("%Z (UTC%z)"),
                     "offset_changed": changed})
        offset = local.utcoffset()
    return runs


def _history(details: EntryDetails) -> list[dict[str, Any]]:
    runs = []
    for record in details.history:
        if list(record) == ["unreadable"]:
            runs.append({"unreadable": record["unreadable"]})
            continue
        runs.append({**with_iso_times(record), "lateness": record.get("lateness")})
    return runs


def shown_json(value: Any) -> str:
    """``value`` as JSON for people: readable (not ASCII only), yet every character ``printable``
    would escape (controls, bidi, a byte that is not UTF-8) written as a JSON escape: the page
    shows it as the other texts, and it is still the JSON to edit."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if text.replace("\n", "").isprintable():
        return text  # the common case, at C speed
    return "".join(char if char.isprintable() or char == "\n" else json.dumps(char)[1:-1] for char in text)


def entry_data(details: EntryDetails, now: float) -> dict[str, Any]:
    """The entry page's data, and the API's answer for one entry."""
    view = details.view
    return {
        **details.summary,
        "state": state_of(view, now),
        "zone": _zone_name(view),
        "parked_words": None if view.parked is None else parked_words(view.parked),
        "fields": with_iso_times(details.fields),
        "definition_json": shown_json(details.fields.get("definition")),
        "next_runs": _next_runs(details),
        "preview_error": details.preview_error,
        "history": _history(details),
        "history_error": details.history_error,
        "worker_events_error": details.events_error,
        "overlap": None if details.overlap is None else details.overlap.as_json(),
        "read_at": iso(now),
    }
