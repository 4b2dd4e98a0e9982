"""RedBeat: a Celery beat scheduler that keeps its schedule in Redis."""

from .schedulers import RedBeatScheduler, RedBeatSchedulerEntry

__all__ = ["RedBeatScheduler", "RedBeatSchedulerEntry", "__version__"]
__version__ = "3.0.0.dev0"
