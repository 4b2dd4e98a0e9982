"""Everything known of one entry, read for ``redbeat show`` and the dashboard's entry
page alike: its summary and stored fields, its next runs, its recent runs joined with
what the workers reported of them, and why any of these cannot be read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from . import admin
from .client import get_store
from .entry import RedBeatSchedulerEntry
from .overlapview import OverlapView, overlap_view
from .records import Status

__all__ = ["EntryDetails", "entry_details", "json_or_text", "preview"]


def json_or_text(raw: bytes) -> Any:
    """A field's JSON value; its text (exact, bytes that are not UTF-8 escaped) when
    it is no JSON or too deeply nested to print."""
    text = admin.key_text(raw)
    try:
        value = json.loads(text)
        json.dumps(value, indent=2)
    except (ValueError, RecursionError):
        return text
    return value


@dataclass
class EntryDetails:
    """One entry as ``show`` prints it; ``history`` is beat's records, newest first, each
    with what the workers reported of its run (``admin.with_run_states``)."""

    view: admin.EntryView
    summary: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    preview_error: str | None = None
    history: list[Any] = field(default_factory=list)
    history_error: str | None = None
    events_error: str | None = None
    now: float = 0.0  # Redis's clock when read: beat's, for "in 5m" and "2h ago"
    overlap: OverlapView | None = None  # its overlap policy at work, for an entry that can be read

    @property
    def missing(self) -> bool:
        """Whether there is no entry of that name: no member of the schedule, no hash."""
        return self.view.score is None and not self.view.fields


def entry_details(app: Celery, name: str, runs: int = 5) -> EntryDetails:
    """The entry ``name`` with its next ``runs`` runs; ``missing`` when there is none."""
    [view] = admin.entries(app, [RedBeatSchedulerEntry.generate_key(app, name)], worker_events=True)
    details = EntryDetails(view)
    if details.missing:
        return details
    details.fields = {k: json_or_text(v) for k, v in view.fields.items()}
    details.runs, details.preview_error = preview(view, runs)
    history, wrong_history = admin.history(app, view.key)
    details.history_error = wrong_history.explanation() if wrong_history else None
    states, wrong_events = admin.run_states_of(app, view.key)
    details.history = admin.with_run_states(history, states)
    details.events_error = wrong_events.explanation() if wrong_events else None
    details.summary = view.summary(admin.in_flight_counts(app)[view.key])
    details.now = get_store(app).time()
    if view.entry is not None:
        details.overlap = overlap_view(view.entry, Status.from_json(view.fields.get("status")),
                                       view.last_worker_event, details.now)
    return details


def preview(view: admin.EntryView, count: int = 5) -> tuple[list[dict], str | None]:
    """The entry's next runs, or why they cannot be worked out."""
    if view.entry is None:
        return [], None
    try:
        return view.entry.preview(count), None
    except Exception as exc:
        return [], str(exc) or type(exc).__name__
