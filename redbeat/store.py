"""Where the schedule lives in Redis: the keys, and the scripts that change them.

The store is the only part of RedBeat that knows the data layout of
docs/format.rst:

- ``<prefix><name>``: hash with ``definition`` and ``meta`` (JSON), plus
  ``parked`` (JSON) when beat set a malformed entry aside;
- ``<prefix>:schedule``: sorted set of entry keys by next due time;
- ``<prefix>:statics``: set of names of entries from ``beat_schedule``;
- ``<prefix>:inflight``: hash of runs claimed but not yet published;
- ``<prefix>:history:<name>``: list of an entry's recent runs, newest first;
- ``<prefix>:heartbeat``: the active beat's last tick;
- ``<prefix>:standbys``: hash of the beats standing by, with their last check;
- ``<prefix>:worker-events:<name>``: list of what workers reported of an entry's
  runs, newest first (written only by workers that enable ``worker.py``).

It moves bytes; it does not decode entries (that is ``decoder`` and
``entry``) nor decide when things run (that is the scheduler). Its parts are
named after their callers, each with the Lua scripts it runs beside the
method that runs them:

- ``due.DueReads``: the tick's read of what is due, the record of what it
  published, the heartbeat;
- ``claims.Claims``: the tick's claims and the runs in flight;
- ``statuses.Statuses``: entries' status, counted after publishing;
- ``entrywrites.EntryWrites``: saving, editing and deleting entries;
- ``standbys.Standbys``: the check-ins of beats standing by;
- ``queries.ScheduleQueries``: what the command line and ``admin`` read;
- ``workerevents.WorkerEvents``: what workers report of runs, and its reads;
- ``overlapstore.OverlapStore``: what the overlap policies read and write.

``lua`` holds what the scripts share, ``storepart`` what the parts share.
"""

from __future__ import annotations

from .claims import Claims
from .due import ON_TIME_WINDOW, DueReads
from .entrywrites import EntryWrites
from .lua import WRONG_TYPE
from .overlapstore import OverlapStore
from .queries import ScheduleQueries
from .records import NEVER, Outcome
from .stages import Decision, DueBatch, DueRecord, text
from .standbys import Standbys
from .statuses import Statuses
from .storepart import WrongTypeError
from .workerevents import WorkerEvents

# DueRecord, Decision, DueBatch, Outcome and NEVER live in stages and records; imported from here too.
__all__ = ["ScheduleStore", "DueRecord", "Decision", "DueBatch", "Outcome", "NEVER", "WrongTypeError", "text",
           "WRONG_TYPE", "ON_TIME_WINDOW"]


class ScheduleStore(DueReads, Claims, Statuses, Standbys, EntryWrites, ScheduleQueries, OverlapStore, WorkerEvents):
    """Reads and writes one app's schedule in Redis: every part of the store, on one client."""
