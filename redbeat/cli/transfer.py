"""Moving a schedule in and out as JSON: ``export`` and ``import``."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from .. import admin
from ..decoder import dumps
from ..printable import printable
from .base import (
    Tool,
    emit,
    json_option,
    parse_json,
    pass_tool,
    redbeat,
)


@redbeat.command(name="export")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default: stdout).")
@pass_tool
def export_command(tool: Tool, output: Any) -> None:
    """The whole schedule as JSON (for backups and moves); `import` reads it back exactly.

    Exact under a running beat too: each entry appears once, as it was at one moment."""
    output.write(json.dumps(admin.export_schedule(tool.app), indent=2, allow_nan=False) + "\n")


@redbeat.command(name="import")
@click.argument("source", type=click.File(), required=False)
@click.option("--beat-schedule", "beat_schedule", metavar="MODULE:NAME",
              help="Import a beat_schedule dict from Python, e.g. proj.celeryconfig:beat_schedule.")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes (default: only report them).")
@json_option
@pass_tool
def import_command(tool: Tool, source: Any, beat_schedule: str | None, apply_changes: bool, as_json: bool) -> None:
    """Import an export, or a JSON {name: spec} file. Dry run unless --apply."""
    if beat_schedule:
        module, _, attribute = beat_schedule.partition(":")
        specs = getattr(importlib.import_module(module), attribute or "beat_schedule")
        data = {name: json.loads(dumps(spec)) for name, spec in specs.items()}
    elif source is not None:
        data = parse_json(source.read(), "the import file")
    else:
        raise click.UsageError("give a file to import, or --beat-schedule MODULE:NAME")
    try:
        plan = admin.plan_import(tool.app, data)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    applied = apply_changes and not plan.invalid
    written = admin.apply_import(tool.app, plan) if applied else 0
    if as_json:
        emit({**plan.as_dict(), "applied": applied, "written": written})
    else:
        _print_import(plan, applied, written)
    if plan.invalid:
        sys.exit(1)


def _print_import(plan: admin.ImportPlan, applied: bool, written: int) -> None:
    for label in ("create", "update", "unchanged"):
        names = getattr(plan, label)
        listed = f"  ({', '.join(names[:10])}{' ...' if len(names) > 10 else ''})" if names else ""
        click.echo(printable(f"{label:>9}: {len(names)}{listed}"))
    for name, count in plan.duplicates.items():
        click.secho(printable(f"  duplicate: {name} is given {count} times; the last one given counts"),
                    fg="yellow")
    for name, reason in plan.invalid.items():
        click.secho(printable(f"  invalid: {name}: {reason}"), fg="red")
    for name, reason in plan.unrunnable.items():
        click.secho(printable(f"  warning: {name} is copied as it is, but beat will park it: {reason}"), fg="yellow")
    if plan.invalid:
        click.echo("nothing written: fix the invalid entries first")
    elif applied:
        click.echo(f"written: {written} entries")
    else:
        click.echo("dry run: nothing written (add --apply to write)")
