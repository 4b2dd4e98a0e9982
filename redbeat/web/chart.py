"""The overview's lateness chart, drawn on the server as SVG: one dot per recent run,
when it was dispatched (x) against how late (y, seconds), red for a run not published.
Served as an image (``/chart.svg``), so nothing in it runs; every text in it is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape

from ..printable import printable
from .readings import Dispatch

__all__ = ["lateness_svg"]

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
PUBLISHED = "published"


def _label(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def lateness_svg(runs: Sequence[Dispatch]) -> str:
    """The chart of ``runs`` (oldest first)."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="lateness of recent dispatches">',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>']
    if not runs:
        parts.append(f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle" font-family="sans-serif" '
                     'font-size="13" fill="#666666">no recent dispatches in the histories read</text></svg>')
        return "".join(parts)
    first, last = runs[0].dispatched, runs[-1].dispatched
    span = max(last - first, 1.0)
    top = max(max(run.lateness for run in runs), 0.001) * 1.1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: float) -> float:
        return LEFT + (at - first) / span * plot_w

    def y(late: float) -> float:
        return TOP + plot_h - max(min(late, top), 0.0) / top * plot_h
    parts += [f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#999999"/>',
              f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#999999"/>']
    for fraction in (0.0, 0.5, 1.0):
        value = top * fraction
        parts.append(f'<text x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end" font-family="sans-serif" '
                     f'font-size="10" fill="#444444">{_label(value)}</text>')
    for at, anchor in ((first, "start"), (last, "end")):
        parts.append(f'<text x="{x(at):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" font-family="sans-serif" '
                     f'font-size="10" fill="#444444">{datetime.fromtimestamp(at, timezone.utc):%H:%M:%S} UTC</text>')
    for run in runs:
        colour = "#2a7ab0" if run.outcome == PUBLISHED else "#c0392b"
        parts.append(f'<circle cx="{x(run.dispatched):.1f}" cy="{y(run.lateness):.1f}" r="3" fill="{colour}">'
                     f'<title>{escape(printable(run.name))}: {_label(max(run.lateness, 0.0))} late, '
                     f'{escape(printable(run.outcome))}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
