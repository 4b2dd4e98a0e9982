"""Moving a schedule in and out as JSON: ``export`` and ``import``, a chunk at a time
(``redbeat.schedulefile``), with progress on stderr when it is a terminal."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from ..printable import printable
from ..schedulefile import (
    ExportFormat,
    ImportOptions,
    ImportPlan,
    ScheduleFile,
    import_schedule,
    spec_data,
    write_export,
)
from .base import (
    Tool,
    emit,
    json_option,
    pass_tool,
    redbeat,
)

FORMATS = {"export": ExportFormat.EXPORT, "specs": ExportFormat.SPECS}


def terminal_progress() -> Callable[[str, int], None]:
    """A progress callback that rewrites one line on stderr, or does nothing when stderr
    is no terminal (a log or a pipe gets no progress lines)."""
    stream = sys.stderr
    if not stream.isatty():
        return lambda stage, count: None

    def show(stage: str, count: int) -> None:
        stream.write(f"\r\033[K{stage}: {count:,} entries")
        stream.flush()
    return show


def end_progress() -> None:
    stream = sys.stderr
    if stream.isatty():
        stream.write("\r\033[K")
        stream.flush()


@redbeat.command(name="export")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default: stdout).")
@click.option("--format", "format_name", type=click.Choice(sorted(FORMATS)), default="export", show_default=True,
              help="export: each entry's fields as stored, one entry a line; specs: for people and diffs, "
                   "definitions decoded and indented, sorted by name. `import` reads both back exactly.")
@pass_tool
def export_command(tool: Tool, output: Any, format_name: str) -> None:
    """The whole schedule as JSON (for backups, moves and git); `import` reads it back exactly.

    Exact under a running beat too: each entry appears once, as it was at one moment."""
    write_export(tool.app, output, FORMATS[format_name], terminal_progress())
    end_progress()


@redbeat.command(name="import")
@click.argument("source", type=click.File(), required=False)
@click.option("--beat-schedule", "beat_schedule", metavar="MODULE:NAME",
              help="Import a beat_schedule dict from Python, e.g. proj.celeryconfig:beat_schedule.")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes (default: only report them).")
@click.option("--prune", is_flag=True, help="Also remove the entries the file does not hold (static entries "
              "from beat_schedule are kept).")
@click.option("--force", is_flag=True, help="Copy entries the write checks refuse (unknown fields or task), as "
              "a backup of entries written before the checks holds them.")
@json_option
@pass_tool
def import_command(tool: Tool, source: Any, beat_schedule: str | None, apply_changes: bool, prune: bool, force: bool,
                   as_json: bool) -> None:
    """Import an export (either format), or a JSON {name: spec} file. Dry run unless --apply."""
    if beat_schedule:
        module, _, attribute = beat_schedule.partition(":")
        schedule_file = ScheduleFile(data=spec_data(getattr(importlib.import_module(module),
                                                            attribute or "beat_schedule")))
    elif source is not None:
        schedule_file = ScheduleFile.from_stream(source)
    else:
        raise click.UsageError("give a file to import, or --beat-schedule MODULE:NAME")
    options = ImportOptions(require_known=tool.tasks_known, force=force, prune=prune)
    try:
        plan, written = import_schedule(tool.app, schedule_file, apply_changes, options, terminal_progress())
    except ValueError as exc:
        raise click.ClickException(printable(str(exc))) from None
    finally:
        end_progress()
    applied = apply_changes and not plan.invalid
    if as_json:
        emit({**plan.as_dict(), "applied": applied, "written": written})
    else:
        _print_import(plan, applied, written)
    if plan.invalid:
        sys.exit(1)


def _print_import(plan: ImportPlan, applied: bool, written: int) -> None:
    for label in ("create", "update", "unchanged", "remove"):
        names = getattr(plan, label)
        if label == "remove" and not plan.options.prune:
            continue
        listed = f"  ({', '.join(names[:10])}{' ...' if len(names) > 10 else ''})" if names else ""
        click.echo(printable(f"{label:>9}: {len(names)}{listed}"))
    for name, count in plan.duplicates.items():
        click.secho(printable(f"  duplicate: {name} is given {count} times; the last one given counts"),
                    fg="yellow")
    for key in plan.left_alone:
        click.secho(printable(f"  left alone: {key} is a member of the schedule but one of RedBeat's own keys, "
                              "not an entry: --prune never removes it (see `redbeat doctor`)"), fg="yellow")
    for name, reason in plan.invalid.items():
        click.secho(printable(f"  invalid: {name}: {reason}"), fg="red")
    for name, reason in plan.unrunnable.items():
        click.secho(printable(f"  warning: {name} is copied as it is, but beat will park it: {reason}"), fg="yellow")
    if plan.invalid:
        click.echo("nothing written: fix the invalid entries first")
    elif applied:
        click.echo(f"written: {written} entries" + (f" (of which {len(plan.remove)} removed)" if plan.remove else ""))
    else:
        click.echo("dry run: nothing written (add --apply to write)")
