"""Celery's broker, as beat uses it: connecting before taking the lock, batches of
messages, sending one run as a task message, and telling a broker that is down
from one that refused a message."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.utils.log import get_logger
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import without_urls
from .entry import CLAIMED_RUN, RedBeatSchedulerEntry, reserved_options, without_reserved
from .logfields import log_fields
from .printable import printable
from .records import InFlight

__all__ = ["Broker", "MessageSender", "broker_unreachable", "causes", "claimed_run", "reraise_shutdown"]

logger = get_logger("celery.beat")

# Publishes one task message (an entry copied for one run, see Broker.send).
MessageSender = Callable[[RedBeatSchedulerEntry], None]


def claimed_run(entry: RedBeatSchedulerEntry) -> InFlight | None:
    """The run ``entry`` is the task message of, if beat claimed it and is publishing it: the
    scheduler's hooks (maybe_due, apply_entry, reserve) tell by it a run beat claimed from
    an entry somebody else hands them."""
    return vars(entry).get(CLAIMED_RUN)


class Broker:
    """Celery's producer for one beat.

    ``producer`` gives the scheduler's producer (it connects when first
    asked); ``sender`` gives the function that hands a task message to
    Celery's ``apply_async`` path, whose signals Sentry, tracing and users
    hook into. It is asked once per batch, in ``batch``: the scheduler's
    hooks may be replaced at any time, and looking at them once per run
    would cost every run of a large drain. ``clock`` (UNIX seconds, by
    Redis's clock in beat) gives the lateness its log lines carry.
    """

    def __init__(self, app: Celery, producer: Callable[[], Any], sender: Callable[[], MessageSender],
                 batch_size: int, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.clock = clock
        self.producer = producer
        self.sender = sender
        self.send_message: MessageSender | None = None  # the sender's answer for the batch being sent
        self.batch_size = batch_size
        self._prepared = False

    def prepare(self) -> None:
        """Connect to the broker and declare the default queue, before taking the lock.

        On a distant broker that takes several round trips (a connection, its
        channel's own, the queue's declaration): over two seconds at 300 ms
        each. Counted against the lock in the first publish, it let the lock
        expire, and beats took it from one another at start-up. Tried once
        (Celery's broker_connection_max_retries apply): later, kombu
        reconnects as it publishes.
        """
        if self._prepared:
            return
        self._prepared = True
        try:
            self.producer().maybe_declare(self.app.amqp.default_queue)
        except Exception as exc:
            logger.warning("beat: could not connect to the broker before taking the lock (%s); the first publish "
                           "will try again", printable(without_urls(str(exc))))

    def buffers(self) -> bool:
        """Whether messages published in ``batch`` wait for the end of it.

        kombu 5.7 and later buffer them on the transports that can (a pipeline
        on Redis); on the others, and with older kombu, each goes out as it is
        published.
        """
        producer = self.producer()
        return (self.batch_size > 1 and hasattr(producer, "batch")
                and bool(getattr(producer, "supports_batch_publish", False)))

    def batch(self) -> contextlib.AbstractContextManager:
        """A context in which publishing buffers messages and sends them at its
        end, if the transport can (``buffers``); if it exits with an
        exception, kombu discards what it buffered."""
        self.send_message = self.sender()
        if not self.buffers():
            return contextlib.nullcontext()
        # No flush of its own inside a batch: only the end of the context
        # sends, so that a batch is published or failed as a whole.
        return self.producer().batch(max_size=1_000_000)

    def send(self, entry: RedBeatSchedulerEntry, run: InFlight) -> Exception | None:
        """Publish one run of ``entry``; the error if it failed (not logged here)."""
        logger.info("Scheduler: Sending due task %s (%s)", printable(entry.name), printable(entry.task),
                    extra=log_fields(entry, run=run, now=self.clock()))
        try:
            options = dict(entry.options or {})
            refused = reserved_options(options)
            if refused:
                # Loading refuses such definitions; one built another way must not
                # change the task the worker runs or its id either.
                logger.error("beat: entry %s sets %s, which Celery's task protocol or RedBeat owns; sent without",
                             printable(entry.name), ", ".join(refused), extra=log_fields(entry, run=run))
                options = without_reserved(options)
            options["task_id"] = run.task_id
            # Which run this is, for workers that want to recognise a duplicate.
            options["headers"] = {**(options.get("headers") or {}),
                                  "redbeat_key": run.key, "redbeat_scheduled": run.scheduled}
            # One entry may send several runs, each with its own id: publish a copy.
            # (copy.copy would go through ScheduleEntry.__reduce__, which drops the app.)
            message = object.__new__(type(entry))
            message.__dict__.update(entry.__dict__, options=options)
            message.__dict__[CLAIMED_RUN] = run
            (self.send_message or self.sender())(message)
        except Exception as exc:
            reraise_shutdown(exc)
            return exc  # logged by the publisher, which tells a run to retry from one given up
        return None


def broker_unreachable(exc: BaseException) -> bool:
    """Whether a publish failed for want of a broker (then the rest of the batch would too).

    kombu wraps what the broker's client raised, so the whole chain of causes
    counts: a broker that answered with an error (a Redis ResponseError, such
    as a queue key of the wrong type) refused one message and is not down.
    """
    chain = causes(exc)
    if any(isinstance(cause, RedisResponseError) for cause in chain):
        return False
    return any(isinstance(cause, (OSError, ConnectionError, TimeoutError, KombuOperationalError,
                                  RedisConnectionError, RedisTimeoutError)) for cause in chain)


def reraise_shutdown(exc: BaseException) -> None:
    """Raise the SystemExit or KeyboardInterrupt behind ``exc``, if there is one.

    Celery's SIGTERM handler closes the scheduler and raises SystemExit
    wherever beat is; inside a publish, the broker's client then fails on the
    closed connection and raises an ordinary error instead. Caught as a
    failed publish, it would keep beat running after its shutdown.
    """
    for cause in causes(exc):
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            raise cause


def causes(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the chain of exceptions it was raised from or while handling."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain
