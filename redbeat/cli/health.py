"""Beat's health: ``status``, ``liveness``, ``doctor``, ``schema``."""

from __future__ import annotations

import socket
import sys
from importlib import resources

import click

from .. import admin
from ..client import get_store
from ..config import ensure_conf
from ..deadline import overall_deadline
from ..liveness import liveness as liveness_of
from ..outcomereads import failing_entries
from ..printable import printable
from ..timeformat import with_iso_times
from .base import (
    ExitCode,
    Tool,
    build_store,
    emit,
    json_option,
    pass_tool,
    redbeat,
    table,
    timeout_option,
)


@redbeat.command()
@click.option("--max-age", type=float, default=60.0, show_default=True,
              help="Exit 1 when beat last completed a tick longer ago than this many seconds.")
@timeout_option("Seconds to wait for Redis to connect and for each answer [default: the group's --timeout].")
@json_option
@click.pass_context
def status(ctx: click.Context, max_age: float, timeout: float | None, as_json: bool) -> None:
    """Who holds the lock, when beat last ticked, how late the schedule runs.

    A health check: exits 0 healthy, 1 when no beat completed a tick within
    --max-age seconds, its ticks are failing or the last one stopped, 3 when
    beat ticks but runs do not go out (degraded), 4 when Redis cannot be
    reached in --timeout seconds, 5 on a configuration error. Entries whose
    last runs failed (as workers recording runs report) are named, and change
    no exit code: their tasks fail, not beat.
    """
    tool = _probe_tool(ctx, timeout)
    report = admin.beat_status(tool.app)
    store = get_store(tool.app)
    failing = failing_entries(store.client, store.keys)
    report["failing_entries"] = failing.as_dict() if failing is not None else None
    problems = admin.unhealthy_reasons(report, max_age)
    degraded = admin.degraded_reasons(report)
    report["healthy"], report["degraded"] = not problems, degraded
    report["beat"] = with_iso_times(report["beat"])  # the heartbeat as written, its moments as ISO 8601
    if as_json:
        emit(report)
    else:
        _print_status(report)
        _print_failing(report["failing_entries"], store.keys.failing)
        if problems:
            click.secho(printable(f"UNHEALTHY: {'; '.join(problems)}"), fg="red", bold=True)
        elif degraded:
            click.secho(printable(f"DEGRADED: {'; '.join(degraded)}"), fg="yellow", bold=True)
        else:
            click.secho("healthy", fg="green", bold=True)
    if problems or degraded:
        sys.exit(ExitCode.FAILED if problems else ExitCode.DEGRADED)


def _probe_tool(ctx: click.Context, timeout: float | None) -> Tool:
    """The tool of a probe (status, liveness), its store built with the probe's own --timeout if given."""
    tool = ctx.find_object(Tool)
    assert tool is not None
    if timeout is not None:
        tool.timeout = timeout
    seconds = tool.timeout if tool.timeout is not None else ensure_conf(tool.app).command_timeout_setting()
    # Before the store is built: on Redis Cluster building it asks each startup node in turn.
    ctx.with_resource(overall_deadline(seconds))
    build_store(ctx)
    return tool


@redbeat.command()
@click.option("--host", default=socket.gethostname, show_default="this host's name, as beat writes it",
              help="Answer for the beats on this host (in Kubernetes: the pod's name).")
@click.option("--pid", type=int, help="Answer for this process only [default: any beat on the host].")
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stale when its record is older [default: 3 lock timeouts (plus 1s) for the active beat, "
                   "3 lock polls (plus 1s) for a standby].")
@timeout_option("Seconds to wait for Redis to connect and for each answer [default: the group's --timeout].")
@click.pass_context
def liveness(ctx: click.Context, host: str, pid: int | None, max_age: float | None, timeout: float | None) -> None:
    """Whether the beat process on this host is alive, active or standing by.

    A per-process probe: exits 0 when its record (the active beat's heartbeat,
    or a standby's check-in) is fresh, 1 when it is stale or absent, 4 when
    Redis cannot be reached in --timeout seconds, 5 on a configuration error.
    """
    tool = _probe_tool(ctx, timeout)
    report = liveness_of(tool.app, host, pid, max_age)
    for line in report.lines:
        click.echo(printable(line))
    if not report.alive:
        sys.exit(ExitCode.FAILED)


def _print_status(report: dict) -> None:
    holder = report["lock_holder"]
    beat = report["beat"] or {}

    def count(name: str) -> str:
        return "?" if report[name] is None else str(report[name])
    lines = [
        ("lock", f"{report['lock_key']} held by {holder['host']} pid {holder['pid']}"
                 + (f" since {holder['since']}" if holder.get("since") else "")
         if holder else f"{report['lock_key'] or '(disabled)'}: free"),
        ("last tick", f"{report['last_tick']} ({report['last_tick_age']:.1f}s ago) by "
                      f"{beat.get('host')} pid {beat.get('pid')}, RedBeat {beat.get('version')}"
         + (f"; stopped at {report['stopped_at']}" if report["stopped_at"] else "")
         if report["last_tick"] else report["heartbeat_error"] or "never (no heartbeat: no beat is active)"),
        *([("failing", f"since {report['failing_since']}: {report['error']}")] if report["failing_since"] else []),
        ("standbys", ", ".join(f"{standby['host']} pid {standby['pid']} (checked {standby['last_check_age']:.1f}s "
                               f"ago)" for standby in report["standbys"]) or "none"),
        ("entries", f"{count('entries')} total, {count('due')} due, {count('parked')} parked, "
                    f"{count('never_due')} never due, {count('in_flight')} in flight"),
        ("most overdue", f"{report['most_overdue_seconds']:.3f}s"),
        ("eviction", f"maxmemory-policy {report['eviction_policy']}"
                     + (" — Redis may delete schedule entries!" if report["eviction_warning"] else "")),
    ]
    for label, value in lines:
        click.echo(f"{label:>13}: {printable(value)}")
    if report["claiming_paused"]:
        # Not unhealthy: beat ticks, and restarting it would not make the broker take the runs.
        click.secho(f"{'claiming':>13}: " + printable(f"paused since {report['claiming_paused_since']}: "
                                                      f"{report['claiming_paused']}"), fg="yellow")
    for wrong in report["wrong_types"]:
        click.secho(f"{'wrong type':>13}: {printable(wrong['explanation'])}", fg="red")


def _print_failing(failing: dict | None, failing_key: str) -> None:
    """The entries whose last reported run failed, if any: a note, not a health problem."""
    if failing is None:
        click.secho(f"{'failed runs':>13}: " + printable(f"unknown: {failing_key} is not a sorted set"), fg="yellow")
        return
    if not failing["count"]:
        return
    older = f" (and {failing['unchecked']} older, not checked)" if failing["unchecked"] else ""
    names = ", ".join(failing["names"]) + (", ..." if failing["count"] > len(failing["names"]) else "")
    entries = "1 entry" if failing["count"] == 1 else f"{failing['count']} entries"
    click.secho(f"{'failed runs':>13}: " + printable(f"{entries}{older} whose last run failed, newest "
                                                     f"first: {names} (`redbeat show NAME` says how; their tasks "
                                                     f"fail, not beat)"), fg="yellow")


@redbeat.command()
@pass_tool
def schema(tool: Tool) -> None:
    """The JSON Schema of `definition` and `meta`, for programs in other languages."""
    click.echo(resources.files("redbeat").joinpath("schema.json").read_text())


@redbeat.command()
@json_option
@pass_tool
def doctor(tool: Tool, as_json: bool) -> None:
    """Find orphans, malformed, parked, never-due and stale static entries, and explain each."""
    configured = set(tool.app.conf.beat_schedule or {}) or None
    if configured is not None:
        configured.add("celery.backend_cleanup")  # Celery's own entry, added by beat itself
    findings = admin.doctor(tool.app, configured)
    problems = [finding for finding in findings if not finding.notice]
    if as_json:
        emit([finding.as_dict() for finding in findings])
    else:
        _print_findings(problems, [finding for finding in findings if finding.notice])
    if problems:
        sys.exit(ExitCode.FAILED)


def _print_findings(problems: list[admin.Finding], notices: list[admin.Finding]) -> None:
    """Problems, then notices (worth knowing, nothing wrong), each explanation whole: it is the point."""
    for title, findings, colour in (("problems", problems, "red"), ("notices (nothing wrong)", notices, None)):
        if findings:
            click.secho(f"{title}:", fg=colour, bold=True)
            table([[f.kind, f.key, f.explanation] for f in findings], ["KIND", "KEY", "WHAT IT MEANS"], wide=True)
    if problems:
        click.secho(f"{len(problems)} problem(s), {len(notices)} notice(s)", fg="red")
    else:
        click.secho("nothing wrong found" + (f", {len(notices)} notice(s)" if notices else ""), fg="green")
