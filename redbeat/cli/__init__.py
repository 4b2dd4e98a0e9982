"""The ``redbeat`` command line: ``celery -A proj redbeat <command>`` (with the
app's configuration) or the standalone ``redbeat --redis-url ... <command>``.

One module per kind of command; importing them registers their commands on the group.
"""

from . import changing, health, metrics, moves, reading, transfer, web  # noqa: F401 - each registers its commands
from .base import ExitCode, Tool, main, redbeat

__all__ = ["redbeat", "main", "Tool", "ExitCode"]
