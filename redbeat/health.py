"""How well a beat ticks, as its logs and its heartbeat tell it: Redis's clock as this
host sees it, and runs of failed ticks with their backoff."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from celery.utils.log import get_logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import without_urls
from .printable import printable
from .store import WrongTypeError

__all__ = ["RedisClock", "TickHealth", "CLOCK_SKEW_WARNING", "RETRY_FIRST", "RETRY_MAX", "STALLED_AFTER"]

logger = get_logger("celery.beat")

# A host clock this many seconds off Redis's is warned about.
CLOCK_SKEW_WARNING = 1.0
RETRY_FIRST = 0.1
RETRY_MAX = 1.0
# A beat process counts as stalled (its liveness check fails) once its next tick is
# this many seconds overdue, or a tick has run for this long (at least; the
# scheduler allows ten lock timeouts): Celery's loop calls tick again as soon as
# the sleep the last one asked for is over, and a tick of many batches hands back
# within a few lock timeouts however much is due.
STALLED_AFTER = 60.0


class RedisClock:
    """Now by Redis's clock: this host's clock (``host_clock``, which a test may set
    off), corrected by the offset seen at the last read."""

    def __init__(self, host_clock: Callable[[], float] = time.time) -> None:
        self.host_clock = host_clock
        self.offset = 0.0  # Redis's clock minus this host's, as last seen
        self._skewed = False

    def now(self) -> float:
        """Now, in UNIX seconds by Redis's clock."""
        return self.host_clock() + self.offset

    def observe(self, redis_now: float, local_now: float) -> None:
        """Note how far this host's clock is from Redis's, and warn when it is far off:
        RedBeat decides by Redis's clock, but the task messages, the worker and the
        logs of this host go by its own."""
        offset = redis_now - local_now
        skewed = abs(offset) > CLOCK_SKEW_WARNING
        if skewed and not self._skewed:
            logger.warning("beat: this host's clock is %.1fs %s Redis's; beat decides by Redis's clock, but "
                           "fix this host's time (NTP): task ETAs and logs here go by it",
                           abs(offset), "behind" if offset > 0 else "ahead of")
        elif self._skewed and not skewed:
            logger.info("beat: this host's clock is within %.1fs of Redis's again", CLOCK_SKEW_WARNING)
        self._skewed = skewed
        self.offset = offset


class TickHealth:
    """A run of failed ticks: since when (UNIX seconds), why, the delay before the next
    try; and the moments the heartbeat reports (``last_good_tick``, ``active_since``)."""

    def __init__(self, clock: Callable[[], float], redis_url: str, stalled_after: float = STALLED_AFTER) -> None:
        self.clock = clock
        self.stalled_after = stalled_after  # see STALLED_AFTER
        self.redis_url = redis_url  # for log lines: already masked (client.display_url)
        self.failing_since: float | None = None
        self.failure = ""  # why the last tick failed
        self.retry_delay = RETRY_FIRST
        self.last_good_tick: float | None = None
        self.active_since: float | None = None
        self._tick_started: float | None = None  # monotonic, while a tick runs
        self._next_tick_at: float | None = None  # monotonic: when the last tick asked to be called again

    def tick_started(self) -> None:
        self._tick_started = time.monotonic()

    def tick_ended(self, interval: float) -> None:
        """A tick handed back, asking to be called again in ``interval`` seconds."""
        self._tick_started = None
        self._next_tick_at = time.monotonic() + interval

    def liveness(self) -> tuple[bool, str]:
        """Whether this beat process still ticks (its loop is not stuck), and why, in one
        line: what a per-process liveness probe asks. A beat whose ticks fail (Redis is
        down) is alive: restarting it would not help."""
        now = time.monotonic()
        if self._tick_started is not None:
            running = now - self._tick_started
            if running > self.stalled_after:
                return False, f"stalled: a tick has run for {running:.0f}s"
            return True, f"ticking: a tick has run for {running:.1f}s"
        if self._next_tick_at is None:
            return True, "starting: no tick yet"
        overdue = now - self._next_tick_at
        if overdue > self.stalled_after:
            return False, f"stalled: the next tick is {overdue:.0f}s overdue"
        failing = f"; ticks failing: {self.failure}" if self.failing_since is not None else ""
        return True, f"ticking: next tick in {max(-overdue, 0.0):.1f}s{failing}"

    def ticking(self, now: float) -> float:
        """A tick starts at ``now``; returns the heartbeat's ``last_tick``, which advances
        only while the ticks before this one completed, so it ages while ticks fail."""
        if self.active_since is None:
            self.active_since = now
        if self.failing_since is None or self.last_good_tick is None:
            self.last_good_tick = now
        return self.last_good_tick

    def failed(self, exc: Exception) -> float:
        """Log the first failure of a run of them (and any other kind of failure
        after it), and back off: 0.1 s doubling to 1 s. Returns the delay."""
        # The text goes to the log and the heartbeat (redbeat status): no URL, whose password it may hold.
        failure = printable(without_urls(f"{type(exc).__name__}: {exc}"))[:500]
        if self.failing_since is None:
            self.failing_since = self.clock()
            self.retry_delay = RETRY_FIRST
        else:
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)
        if failure != self.failure:
            if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                logger.error("beat: Redis at %s is unavailable (%s); retrying until it answers",
                             self.redis_url, failure)
            elif isinstance(exc, WrongTypeError):
                logger.error("beat: cannot tick: %s; retrying, dispatching nothing meanwhile", failure)
            else:
                # The traceback, for the bug report, with the URLs in its texts masked as in ``failure``.
                trace = without_urls("".join(traceback.format_exception(exc)).rstrip())
                logger.error("beat: tick failed (%s); retrying, dispatching nothing meanwhile\n%s", failure, trace)
        self.failure = failure
        return self.retry_delay

    def succeeded(self) -> bool:
        """A tick completed; whether it ends a run of failed ones."""
        if self.failing_since is None:
            return False
        logger.info("beat: ticking normally again after %.1fs of failed ticks", self.clock() - self.failing_since)
        self.failing_since = None
        self.failure = ""
        return True
