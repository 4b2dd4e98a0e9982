"""Why a run failed to publish, and whether trying again can help: a pure function of
the error ``Broker.send`` returned.

A failure is ``transient`` (the broker is down or slow, or the error is one we
do not know) and gets today's bounded retries with the same task id, or
permanent: the same message would fail the same way however often it is sent,
so beat gives the run up at once.

- ``bad-arguments``: the entry's args and kwargs do not fit the task's
  signature (Celery checks them in ``apply_async`` when the task is
  registered in beat's app and typed, the default).
- ``encoding``: the serializer cannot encode the message (kombu's EncodeError).
- ``refused-by-broker``: the broker answered the message with an error (a Redis
  ResponseError such as WRONGTYPE on the queue's key), apart from the answers
  that pass by themselves (out of memory, a replica being promoted, loading).

There is no ``unregistered-task`` class: beat sends a task its app does not
know by name (``send_task``), which raises nothing, and beat often runs
without the task modules imported, so a name it does not know is no error on
its side. The worker that receives it reports the unknown task.

An error we do not know stays transient: it may be a passing failure of code
we cannot see into (a signal handler, a broker client), and bounded retries
cost little; giving up on it at once could lose runs that would have gone out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from kombu.exceptions import EncodeError
from redis.exceptions import ResponseError as RedisResponseError

from .broker import broker_unreachable, causes
from .config import without_urls
from .printable import printable

__all__ = ["FailureKind", "Failure", "classify", "MAX_REASON_LENGTH"]

# How much of an error's text a reason keeps: one readable line in a log, a status and a history record.
MAX_REASON_LENGTH = 300

# Python's words when a call does not fit a function's signature, which Celery's
# argument check raises as a TypeError.
_SIGNATURE_MISMATCH = re.compile(
    r"missing \d+ required (positional|keyword-only) argument|takes \d+ positional argument|"
    r"takes from \d+ to \d+ positional arguments|takes no arguments|got an unexpected keyword argument|"
    r"got multiple values for argument|got some positional-only arguments passed as keyword")
# Redis answers that refuse a command for a while only: its memory is full, it is
# loading, it is a replica being promoted, a cluster or its primary is down, a script
# runs. The code starts the answer, or follows redis-py's words for a pipeline's command.
_PASSING_REFUSAL = re.compile(r"(?:^|caused error: )(OOM|LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|BUSY|"
                              r"NOREPLICAS|MISCONF)\b")


class FailureKind(str, Enum):
    """The class of a failed publish (the value is what status and history records hold)."""

    TRANSIENT = "transient"
    BAD_ARGUMENTS = "bad-arguments"
    ENCODING = "encoding"
    REFUSED_BY_BROKER = "refused-by-broker"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed publish: its class, and the error in one printable line without URLs."""

    kind: FailureKind
    error: str

    @property
    def permanent(self) -> bool:
        return self.kind is not FailureKind.TRANSIENT

    @property
    def reason(self) -> str:
        """The class and the error, as history records, statuses and log lines give them."""
        return f"{self.kind}: {self.error}"


def classify(exc: BaseException) -> Failure:
    """The class of the failure ``exc`` (what ``Broker.send`` returned) and its error text.

    Celery and kombu wrap the error that happened (SchedulingError, EncodeError
    around a TypeError): the whole chain counts, the outermost known error
    naming the class and giving the text.
    """
    chain = causes(exc)
    if not broker_unreachable(exc):
        for cause in chain:
            kind = _permanent_kind(cause)
            if kind is not None:
                return Failure(kind, _error_text(cause))
    return Failure(FailureKind.TRANSIENT, _error_text(chain[-1]))


def _permanent_kind(exc: BaseException) -> FailureKind | None:
    if isinstance(exc, EncodeError):
        return FailureKind.ENCODING
    if isinstance(exc, RedisResponseError):
        return None if _PASSING_REFUSAL.search(str(exc)) else FailureKind.REFUSED_BY_BROKER
    if isinstance(exc, TypeError) and _SIGNATURE_MISMATCH.search(str(exc)):
        return FailureKind.BAD_ARGUMENTS
    return None


def _error_text(exc: BaseException) -> str:
    """``Type: message`` on one printable line, URLs masked, at most MAX_REASON_LENGTH characters."""
    text = printable(without_urls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))
    return text if len(text) <= MAX_REASON_LENGTH else text[:MAX_REASON_LENGTH - 3] + "..."
