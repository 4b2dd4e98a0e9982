"""Moving a schedule: ``move-prefix``, and ``rollback-to-2`` (for celery-redbeat 2.x)."""

from __future__ import annotations

import click
from celery import Celery

from .. import rollback
from ..client import build_client
from ..config import DEFAULT_KEY_PREFIX, HASH_TAG, ConfigurationError, ensure_conf
from ..keys import KeyNames
from ..prefixmove import MoveAction, MoveError, MovePlan, MoveResult, PrefixMover
from ..printable import printable
from .base import (
    Tool,
    emit,
    json_option,
    pass_tool,
    redbeat,
    table,
)


@redbeat.command(name="move-prefix")
@click.option("--to", "to_prefix", required=True, help="The new key prefix; on Redis Cluster a hash-tagged one "
                                                       "such as '{redbeat}:'.")
@click.option("--from", "from_prefix", help="The prefix the schedule is under now (default: the configured one).")
@click.option("--apply", "apply_move", is_flag=True, help="Move (default: only report what would move).")
@click.option("--force", is_flag=True, help="Write over conflicting entries, and move while a beat holds the lock "
                                            "(taking it, which stops that beat dispatching) or ticks.")
@pass_tool
def move_prefix(tool: Tool, to_prefix: str, from_prefix: str | None, apply_move: bool, force: bool) -> None:
    """Move the schedule, key by key, to another key prefix (docs/configuration.rst, Redis Cluster)."""
    source = KeyNames(from_prefix if from_prefix is not None else _configured_prefix(tool.app))
    target = KeyNames(to_prefix)
    if not source.prefix or not target.prefix or source.prefix.startswith(target.prefix) \
            or target.prefix.startswith(source.prefix):
        raise click.ClickException(f"cannot move from {source.prefix!r} to {target.prefix!r}: each prefix must be "
                                   "non-empty and neither may start with the other")
    mover = _mover(tool, source, target)
    try:
        if apply_move:
            result = mover.apply(force)
            _print_move(result.plan, result)
        else:
            _print_move(mover.plan(force), None)
    except MoveError as exc:
        raise click.ClickException(printable(str(exc))) from None


def _configured_prefix(app: Celery) -> str:
    """``redbeat_key_prefix`` as set (lower case first, as RedBeatConfig reads it), which
    cannot be read through RedBeatConfig on a cluster: it refuses that prefix."""
    for name in ("redbeat_key_prefix", "REDBEAT_KEY_PREFIX"):
        if app.conf.get(name) is not None:
            return str(app.conf.get(name))
    return DEFAULT_KEY_PREFIX


def _mover(tool: Tool, source: KeyNames, target: KeyNames) -> PrefixMover:
    """The mover, on a client built from the app's settings with the new prefix;
    the source lock is the configured one when the source is the configured prefix."""
    app = tool.app
    configured = _configured_prefix(app)
    app.conf.redbeat_key_prefix = target.prefix
    try:
        conf = ensure_conf(app)
    except ConfigurationError:
        if HASH_TAG.search(target.prefix):
            raise
        raise click.ClickException(f"--to {target.prefix!r} has no hash tag, which Redis Cluster needs: "
                                   "use one such as '{redbeat}:'") from None
    tool.apply_timeout(conf)
    lock_setting = conf.either_or("redbeat_lock_key", None) if source.prefix == configured else None
    lock_key = source.lock(lock_setting) or source.default_lock
    return PrefixMover(build_client(conf, decode_responses=False), source, target, lock_key)


def _print_move(plan: MovePlan, result: MoveResult | None) -> None:
    click.echo(printable(f"from {plan.source.prefix!r} to {plan.target.prefix!r}"))
    table([[entry.action, entry.member, entry.target, repr(entry.score), "yes" if entry.static else "",
            entry.history, entry.reason] for entry in plan.entries],
          ["ACTION", "ENTRY", "TO", "SCORE", "STATIC", "HISTORY", "NOTE"], wide=True)  # a plan is read whole
    click.echo("   ".join(f"{action}: {plan.count(action)}" for action in MoveAction))
    for line in _move_notes(plan):
        click.echo(printable(line))
    if result is not None:
        click.echo(f"moved {result.moved} entries, {result.in_flight} runs in flight and {result.failing} members "
                   "of the failing set")
    click.echo(printable(f"then set redbeat_key_prefix = {plan.target.prefix!r} in the configuration "
                         "(and the ACL user's key pattern), and start beat"))
    if result is None:
        click.echo("dry run: nothing written (add --apply to move)")


def _move_notes(plan: MovePlan) -> list[str]:
    """What the move does besides entries: static names, runs in flight, the workers' keys, the lock,
    the heartbeat."""
    notes = [f"statics: {len(plan.statics)} names to {plan.target.statics} for the entries moved",
             f"in flight: {len(plan.in_flight)} runs to {plan.target.inflight}, task ids kept",
             f"worker events: each moved entry's to {plan.target.worker_event_lists}<name>",
             f"failing: {plan.failing} members to {plan.target.failing}, renamed to the new prefix",
             f"run outcomes: {'the counts' if plan.outcome_counts else 'none'} to {plan.target.run_outcomes} "
             "(kept there instead if workers already count there)"]
    if plan.held_for_3:
        notes.append(f"held for 3: {plan.held_for_3} entries that rollback-to-2 holds out of the schedule are not "
                     "moved: run `redbeat rollback-to-2 --undo --apply` first")
    if plan.lock_holder is not None:
        notes.append(f"lock: {plan.lock_key} is held by {plan.lock_holder}: stop that beat first "
                     "(or --force, which takes its lock)")
    else:
        notes.append(f"lock: {plan.lock_key} is free: the move holds it while it runs, so no beat starts")
    if plan.heartbeat_age is not None:
        notes.append(f"heartbeat: a beat ticked {plan.heartbeat_age:.0f}s ago: stop it first")
    else:
        notes.append(f"heartbeat: no beat ticking; {plan.source.heartbeat} is left to expire")
    return notes


@redbeat.command("rollback-to-2")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes (without it: a dry run).")
@click.option("--undo", is_flag=True, help="Put back what a rollback changed, before RedBeat runs the schedule.")
@json_option
@pass_tool
def rollback_to_2(tool: Tool, apply_changes: bool, undo: bool, as_json: bool) -> None:
    """Prepare the schedule for celery-redbeat 2.x (a dry run unless --apply), or --undo it.

    Entries 2.x cannot read get a 2.x-readable definition (RedBeat's kept
    aside in the entry's hash); entries 2.x cannot run at all are held out of
    the schedule. Stop 2.x's beat before --undo --apply.
    """
    if undo:
        rewritten, held = rollback.undo_plans(tool.app)
        missed = rollback.undo(tool.app, rewritten, held) if apply_changes else []
        rows = [[p.key, "restore" if p.restore else "keep", p.note] for p in rewritten]
        rows += [[key, "put back", "back in the schedule at its score"] for key in held]
    else:
        planned = rollback.plans(tool.app)
        missed = [p.key for p in rollback.apply(tool.app, planned)] if apply_changes else []
        rows = [[p.key, str(p.action), "; ".join(p.reasons)] for p in planned]
    if as_json:
        emit({"applied": apply_changes, "entries": [dict(zip(("key", "action", "why"), row)) for row in rows],
              "changed_meanwhile": missed})
        return
    if not rows:
        click.echo("nothing to do: " + ("no entry is rolled back" if undo else
                                          "celery-redbeat 2.x can read every entry in the schedule"))
        return
    table(rows, ["KEY", "ACTION", "WHY"], wide=True)  # a plan is read whole
    _print_rollback_summary(rows, missed, apply_changes, undo)


def _print_rollback_summary(rows: list[list[str]], missed: list[str], applied: bool, undo: bool) -> None:
    held = sum(1 for row in rows if row[1] == "hold")
    if held:
        click.echo(f"{held} held entries will not run under celery-redbeat 2.x; --undo puts them back.")
    if not undo and len(rows) > held:
        click.echo("Rewritten entries run under 2.x with plain semantics: the options dropped are named above "
                   "(a crontab without its timezone runs in the app's timezone).")
    for key in missed:
        click.echo(printable(f"{key}: changed meanwhile, left as it is: run the command again"), err=True)
    if not applied:
        click.echo("Dry run: nothing written. Add --apply to write these changes.")
    elif undo:
        click.echo("Undone: RedBeat's beat can run the schedule.")
    else:
        click.echo("Applied: celery-redbeat 2.x can run the schedule. Undo with: redbeat rollback-to-2 --undo --apply")
