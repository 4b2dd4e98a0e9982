"""RedBeat: a Celery beat scheduler that keeps its schedule in Redis."""

__version__ = "3.0.0.dev0"

from .schedulers import RedBeatScheduler, RedBeatSchedulerEntry  # noqa: E402 - needs __version__

__all__ = ["RedBeatScheduler", "RedBeatSchedulerEntry", "__version__"]
