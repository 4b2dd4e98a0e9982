"""Acting on many entries at once: ``pause``, ``resume``, ``remove`` and ``run-now`` with
``--match GLOB`` (and ``--task``, ``--parked``). Without ``--yes`` they only list what
they would touch; with it, each entry gets the command's own one-entry action."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from .. import admin
from ..printable import printable
from .base import Tool


@dataclass(frozen=True)
class Selection:
    """Which entries a bulk command picks, and whether it may act (``--yes``)."""

    match: str | None = None
    task: str | None = None
    parked: bool = False
    yes: bool = False

    @property
    def given(self) -> bool:
        return self.match is not None or self.task is not None or self.parked

    def entries(self, tool: Tool) -> Iterator[admin.EntryView]:
        """The entries picked, read a chunk at a time; the name pattern is matched by Redis."""
        for view in admin.entries(tool.app, match=self.match):
            if view.kind == "foreign":
                continue
            if self.task is not None and (view.entry is None or view.entry.task != self.task):
                continue
            if self.parked and view.parked is None:
                continue
            yield view


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --match, --task, --parked and --yes to a one-entry command, handed to it as ``selection``."""
    @functools.wraps(command)
    def with_selection(*args: Any, match: str | None, task: str | None, parked: bool, yes: bool,
                       **kwargs: Any) -> Any:
        return command(*args, selection=Selection(match, task, parked, yes), **kwargs)
    options = [
        click.option("--match", metavar="GLOB", help="Every entry whose name matches this Redis glob "
                     "(* ? [abc] [^a], \\ escapes one character)."),
        click.option("--task", help="Every entry of this task (with --match: those of them)."),
        click.option("--parked", is_flag=True, help="Every entry beat parked (with the other filters: those of them)."),
        click.option("--yes", is_flag=True, help="Act on the entries picked (without it: only list them)."),
    ]
    for option in reversed(options):
        with_selection = option(with_selection)
    return with_selection


def one_or_many(tool: Tool, name: str | None, selection: Selection, verb: str, act: Callable[[str], None]) -> None:
    """Run ``act`` on the entry ``name``, or on every entry ``selection`` picks (``--yes``), or
    list those it would touch. Refusals of single entries are said and the others done; exit 1 then."""
    if selection.given and name:
        raise click.UsageError("give a NAME, or --match, --task or --parked, not both")
    if not selection.given:
        if not name:
            raise click.UsageError("give a NAME, or pick entries with --match GLOB, --task NAME or --parked")
        act(name)
        return
    if not selection.yes:
        _preview(tool, selection, verb)
        return
    failed = 0
    for view in selection.entries(tool):
        try:
            act(view.name)
        except click.ClickException as exc:
            failed += 1
            click.secho(printable(f"{view.name}: {exc.format_message()}"), fg="red", err=True)
    if failed:
        click.echo(f"{failed} entries could not be changed", err=True)
        sys.exit(1)


def _preview(tool: Tool, selection: Selection, verb: str) -> None:
    """List the entries ``verb`` would touch, one a line, and say nothing changed."""
    count = 0
    for view in selection.entries(tool):
        count += 1
        task = view.entry.task if view.entry else "-"
        click.echo(printable(f"would {verb}: {view.name}  ({task})"))
    click.echo(f"{count} entries; nothing changed (add --yes)")
