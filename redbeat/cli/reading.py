"""Reading the schedule: ``list`` and ``show``."""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from .. import admin
from ..client import get_store
from ..entrydetails import entry_details
from ..overlapview import OverlapView
from ..printable import printable
from ..records import unix_seconds
from ..timeformat import iso_and_relative, with_iso_times
from .base import (
    Tool,
    emit,
    json_option,
    pass_tool,
    redbeat,
    relative,
    table,
)


@redbeat.command(name="list")
@json_option
@click.option("--match", "pattern", metavar="GLOB",
              help="Only names matching this Redis glob (* ? [abc] [^a], \\ escapes one character), "
                   "filtered by Redis.")
@click.option("--task", help="Only entries of this task.")
@click.option("--search", metavar="TEXT", help="Only entries whose name, task or description holds TEXT "
                                                "(any case).")
@click.option("--sort", type=click.Choice(["next", "name", "task", "last"]), default="next", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the first N entries in this order.")
@click.option("--wide", is_flag=True, help="Every cell whole, and the DESCRIPTION column (the table is otherwise "
                                           "cut to the terminal's width).")
@pass_tool
def list_entries(tool: Tool, as_json: bool, pattern: str | None, task: str | None, search: str | None, sort: str,
                 limit: int | None, wide: bool) -> None:
    """A table of entries: schedule, next and last run, runs published (and given up), parked reason,
    and how the last run reported by the workers went (when workers record runs)."""
    in_flight = admin.in_flight_counts(tool.app)
    now = get_store(tool.app).time()  # beat's clock, for "in 5s" and "2m ago"
    # Each entry is cut down to its summary and row as it is read: the decoded entries of a
    # whole schedule are never held at once.
    listed = ((summary, None if as_json else _row(view, summary, now, wide))
              for view in admin.entries(tool.app, match=pattern, worker_events=True)
              if (task is None or (view.entry and view.entry.task == task)) and (search is None or view.matches(search))
              for summary in [view.summary(in_flight[view.key])])
    sort_key = LIST_ORDERS[sort]
    chosen = (heapq.nsmallest(limit, listed, key=lambda pair: sort_key(pair[0])) if limit
              else sorted(listed, key=lambda pair: sort_key(pair[0])))
    if as_json:
        emit([summary for summary, _ in chosen])
        return
    # The workers' column only when some entry has a run they reported: without worker.py, none has.
    reported = any(summary["last_run_state"] is not None for summary, _ in chosen)
    table([row[:-1] + (row[-1:] if reported else []) for _, row in chosen if row is not None],
          ["NAME", "TASK", "SCHEDULE", "ENABLED", "NEXT RUN", "LAST RUN", "RUNS", "PARKED",
           *(["DESCRIPTION"] if wide else []), *(["LAST RUN STATE"] if reported else [])],
          wide=wide, keep=("NEXT RUN", "LAST RUN", "ENABLED", "RUNS"))


LIST_ORDERS: dict[str, Callable[[dict], Any]] = {
    "next": lambda s: (s["next_run"] is None and not s["due_now"], s["next_run"] or "", s["name"]),
    "name": lambda s: s["name"], "task": lambda s: (s["task"] or "", s["name"]),
    "last": lambda s: (s["last_run"] or "", s["name"])}


def _row(view: admin.EntryView, summary: dict, now: float, wide: bool) -> list[str]:
    """The table row of one entry (with its description when ``wide``), and last the
    state of the run the workers reported last (a column only when some entry has one)."""
    last = _last_dispatch(view)
    return [
        view.name,
        summary["task"] or "-",
        summary["schedule"] or "-",
        {True: "yes", False: "no", None: "-"}[summary["enabled"]],
        _next_run_words(view, now),
        relative(last, now) if last else "never",
        _runs_words(summary),
        summary["parked"] or summary["error"] or "",
        *([summary["description"] or ""] if wide else []),
        _last_run_state_words(summary),
    ]


def _last_run_state_words(summary: dict) -> str:
    """``failed: ValueError (2.1s)``: the state of the run the workers reported last."""
    if summary["last_run_state"] is None:
        return "-"
    duration = summary["last_run_duration"]
    return (_state_words(summary["last_run_state"], summary["last_run_exception"])
            + (f" ({duration:.3f}s)" if duration is not None else ""))


def _state_words(state: str, exception: str | None, retries: int = 0) -> str:
    """``failed: ValueError``, ``succeeded (retried 1x)``: a run's state at the workers."""
    said = f"{state}: {exception}" if exception else state
    return f"{said} (retried {retries}x)" if retries and state != "retried" else said


@redbeat.command()
@click.argument("name")
@json_option
@pass_tool
def show(tool: Tool, name: str, as_json: bool) -> None:
    """The full definition and meta, the next 5 runs and the recent history."""
    # The overlap bound comes from the task's own time limit when the app knows the task: import
    # the app's task modules as beat does as it starts, so that show names the bound beat uses.
    _ = tool.tasks_known  # the property imports them, once
    details = entry_details(tool.app, name)
    view = details.view
    if details.missing:
        what = "" if view.kind == "none" else f" (its key is a {view.kind}, not a hash)"
        raise click.ClickException(printable(f"no entry named {name!r}{what}"))
    summary, fields, runs, preview_error = details.summary, details.fields, details.runs, details.preview_error
    history, history_error, events_error = details.history, details.history_error, details.events_error
    preview = [{"slot": run["slot"].isoformat(), "fire_at": run["fire_at"].isoformat(),
                "local": run["local"].isoformat()} for run in runs]
    now, overlap = details.now, details.overlap
    if as_json:
        emit({**summary, "overlap": None if overlap is None else overlap.as_json(), "fields": fields,
              "next_runs": preview, "preview_error": preview_error,
              "history": with_iso_times(history), "history_error": history_error,
              "worker_events_error": events_error})
        return
    _print_entry(view, summary, fields, now, overlap)
    _print_runs(runs, preview_error, history, history_error, now)
    if events_error:
        click.secho(f"\nworker events: {printable(events_error)}", fg="red")


# What ``show`` prints of an entry's summary, in this order; the moments with their relative form.
SHOWN = ("name", "key", "task", "description", "schedule", "enabled", "next_run", "last_run", "last_dispatched",
         "total_run_count", "published", "given_up", "in_flight", "missed", "parked", "error")
MOMENTS = ("next_run", "last_run", "last_dispatched")


def _print_entry(view: admin.EntryView, summary: dict, fields: dict, now: float,
                 overlap: OverlapView | None = None) -> None:
    def said(label: str, value: Any) -> str:
        return _moment(value, now) if label in MOMENTS else printable(value)
    for label in SHOWN:
        if label == "next_run" and summary["due_now"]:
            click.echo(f"{label:>16}: now (score 0: due at beat's next tick)")
        elif summary[label] is not None:
            click.echo(f"{label:>16}: {said(label, summary[label])}")
    if summary["last_run_state"] is not None:
        click.echo(f"{'last_run_state':>16}: {printable(_last_run_state_words(summary))} (reported "
                   f"{_moment(summary['last_run_reported'], now)})")
    for line in overlap.lines() if overlap is not None else []:
        click.echo(f"{'overlap':>16}: {printable(line)}")
    failure = summary["last_failure"]
    if failure is not None:
        click.secho(f"{'last_failure':>16}: {printable(failure['reason'])} (given up at "
                    f"{_moment(failure['at'], now)})", fg="red")
    if view.kind != "hash":
        click.echo(f"{'score':>16}: {view.score:g}")
    for field_name, value in fields.items():
        value = with_iso_times(value, lambda seconds: iso_and_relative(seconds, now))
        shown = printable(value) if isinstance(value, str) else json.dumps(value, indent=2)
        click.echo(f"\n{printable(field_name)}:\n{shown}")


def _moment(value: str, now: float) -> str:
    """An ISO 8601 time of the summary, with its relative form."""
    return f"{value} ({relative(datetime.fromisoformat(value), now)})"


def _print_runs(runs: list[dict], preview_error: str | None, history: list[dict], history_error: str | None,
                now: float) -> None:
    """The next runs and the recent ones, or why either cannot be shown."""
    if runs:
        click.secho("\nnext runs:", bold=True)
        table([[f"{run['local']:%a %Y-%m-%d %H:%M:%S %Z}", f"{run['slot'].isoformat()} ({relative(run['slot'], now)})",
                f"{run['fire_at']:%H:%M:%S.%f}"[:-3]] for run in runs],
              ["LOCAL TIME", "UTC", "DISPATCH AT (UTC)"])
    if preview_error:
        click.secho(f"\nnext runs: cannot be worked out: {printable(preview_error)}", fg="red")
    if history:
        click.secho("\nrecent runs:", bold=True)
        # The workers' columns only when they reported some run: without worker.py, none is.
        reported = any(record.get("state") is not None for record in history)
        table([_history_row(record, now, reported) for record in history],
              ["SCHEDULED", "DISPATCHED", "LATE", "OUTCOME", *(["RUN STATE", "DURATION"] if reported else []),
               "TASK ID"])
    if history_error:
        click.secho(f"\nrecent runs: {printable(history_error)}", fg="red")


def _history_row(record: dict, now: float, reported: bool) -> list[str]:
    """A row of ``recent runs``, with what the workers reported of the run when ``reported``."""
    if list(record) == ["unreadable"]:
        return ["-", "-", "-", "unreadable", *(["-", "-"] if reported else []), record["unreadable"]]
    late = record.get("lateness")
    return [_when(record.get("scheduled"), now), _when(record.get("dispatched"), now),
            f"{late:.3f}s" if isinstance(late, (int, float)) and not isinstance(late, bool) else _when(late, now),
            str(record.get("outcome", "")) + (f": {record['reason']}" if record.get("reason") else ""),
            *(_run_state_cells(record) if reported else []),
            str(record.get("task_id", ""))]


def _run_state_cells(record: dict) -> list[str]:
    """The state of a run at the workers, and how long it ran."""
    state = record.get("state")
    if state is None:
        return ["-", "-"]
    duration = record.get("duration")
    return [_state_words(state, record.get("exception"), record.get("retries") or 0),
            "-" if duration is None else f"{duration:.3f}s"]


def _when(value: Any, now: float) -> str:
    """UNIX seconds as ISO 8601 with the relative form; anything else as it is."""
    if value is None:
        return "-"
    seconds = unix_seconds(value)
    return str(value) if seconds is None else iso_and_relative(seconds, now)


def _next_run_words(view: admin.EntryView, now: float) -> str:
    if view.score is None:
        return "-"
    if view.score == 0:
        return "now (score 0)"
    if view.next_run is None:
        return "never" if view.score < 0 else f"never (score {view.score:g})"
    return f"{relative(view.next_run, now)} ({view.next_run:%Y-%m-%d %H:%M:%S} UTC)"


def _runs_words(summary: dict) -> str:
    """The runs that reached the broker, and those given up if any."""
    if summary["published"] is None:
        return "-"
    given_up = f" ({summary['given_up']} given up)" if summary["given_up"] else ""
    return f"{summary['published']}{given_up}"


def _last_dispatch(view: admin.EntryView) -> datetime | None:
    """When beat last sent it: ``status``, else (data from celery-redbeat 2.x) ``last_run_at`` of a run."""
    summary_time = view.summary()["last_dispatched"]
    if summary_time:
        return datetime.fromisoformat(summary_time)
    if view.entry and view.entry.total_run_count and view.entry.last_run_at:
        return view.entry.last_run_at
    return None
