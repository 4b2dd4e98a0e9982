"""The store's contract, run on fakeredis and on the session's real redis-server.

Every test takes ``store``: a ScheduleStore of an app on either backend, so
the same promises are checked where the unit tests run (fakeredis) and where
production runs (Redis). The scripts are called directly, as beat calls them.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from celery import Celery

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry, changes
from redbeat.cli import Tool
from redbeat.client import get_store
from redbeat.decoder import meta_json
from redbeat.entry import write_over
from redbeat.entrywrites import ImportedWrite
from redbeat.lock import BeatLock
from redbeat.records import InFlight
from redbeat.runs import task_id_for
from redbeat.schedulefile import apply_import, plan_import
from redbeat.store import Decision, Outcome, ScheduleStore

NOW = 1_800_000_000.0  # the "now" passed to read_due: the tests do not depend on either clock
HOUR = {"__type__": "interval", "every": 3600}


@pytest.fixture(params=["fakeredis", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def contract_app(backend: str, request: pytest.FixtureRequest) -> Celery:
    return request.getfixturevalue("fake_app" if backend == "fakeredis" else "app")


@pytest.fixture
def store(contract_app: Celery) -> ScheduleStore:
    return get_store(contract_app)


@pytest.fixture
def owner(store: ScheduleStore) -> BeatLock:
    """The beat holding the lock."""
    lock = BeatLock(store.client, store.conf.default_lock_key, timeout=60)
    assert lock.acquire()
    return lock


@pytest.fixture
def stranger(store: ScheduleStore, owner: BeatLock) -> BeatLock:
    """A beat that believes it holds the lock, with another token (its own lock expired)."""
    return BeatLock(store.client, owner.key, timeout=60, token="stranger-token")


def put_entry(store: ScheduleStore, name: str, score: float, meta: str | None = None, **definition: object) -> str:
    key = store.key_for(name)
    fields = {"definition": json.dumps({"name": name, "task": "tasks.contract", "schedule": HOUR} | definition)}
    if meta is not None:
        fields["meta"] = meta
    store.client.hset(key, mapping=fields)
    store.client.zadd(store.conf.schedule_key, {key: score})
    return key


def put_in_flight(store: ScheduleStore, key: str, scheduled: float = NOW - 10, token: str = "owner") -> InFlight:
    run = InFlight(task_id=task_id_for(key, scheduled), key=key, scheduled=scheduled, claimed_at=NOW - 5,
                   token=token, retry_at=NOW + 30)
    store.client.hset(store.inflight_key, run.task_id, run.to_json())
    return run


def snapshot(store: ScheduleStore) -> dict[bytes, bytes]:
    """Every key of the database with its DUMP: equal snapshots mean nothing was written."""
    client = store.client
    return {key: client.dump(key) for key in client.keys("*")}


def score_of(store: ScheduleStore, key: str) -> float | None:
    return store.client.zscore(store.conf.schedule_key, key)


# -- fenced scripts ------------------------------------------------------------------------

def _read_due(store: ScheduleStore, lock: BeatLock, run: InFlight) -> bool:
    return store.read_due(NOW, 10, lock=lock, heartbeat='{"token": "stranger-token"}', repair=True).lock_lost


def _claim(store: ScheduleStore, lock: BeatLock, run: InFlight) -> bool:
    [record] = store.read_due(NOW, 10).records
    decision = Decision(record, "run", score=NOW + 3600, meta='{"total_run_count": 1}', status="{}",
                        runs=(InFlight(task_id="new-run", key=record.key_text, scheduled=NOW, claimed_at=NOW,
                                       token=lock.token, retry_at=NOW + 30),))
    return store.claim([decision], lock=lock) is None


def _take_over(store: ScheduleStore, lock: BeatLock, run: InFlight) -> bool:
    raw = store.client.hget(store.inflight_key, run.task_id)
    taken = replace(run, token=lock.token, attempts=1)
    return store.take_over([(raw, taken)], lock=lock) is None


def _retry_later(store: ScheduleStore, lock: BeatLock, run: InFlight) -> bool:
    store.retry_later([InFlight(task_id=run.task_id, key=run.key, scheduled=run.scheduled, claimed_at=run.claimed_at,
                                token=lock.token, retry_at=NOW + 600, attempts=3)], lock=lock)
    return True  # retry_later says nothing: the snapshot is the proof


@pytest.mark.parametrize("call", [_read_due, _claim, _take_over, _retry_later],
                         ids=["read_due", "claim", "take_over", "retry_later"])
def test_fenced_scripts_refuse_another_token_and_write_nothing(store, owner, stranger, call):
    key = put_entry(store, "fenced", 0, meta=meta_json(None, 0))
    run = put_in_flight(store, key)
    store.client.pexpire(owner.key, 50_000)
    before = snapshot(store)

    assert call(store, stranger, run)

    assert snapshot(store) == before
    assert 0 < store.client.pttl(owner.key) <= 50_000  # the owner's lock, not renewed by the stranger


def test_fenced_scripts_work_for_the_lock_holder(store, owner):
    """The refusal above is the fence's, not a broken call: the same calls succeed with the token."""
    key = put_entry(store, "fenced", 0, meta=meta_json(None, 0))
    run = put_in_flight(store, key)
    batch = store.read_due(NOW, 10, lock=owner)
    assert not batch.lock_lost and [r.key for r in batch.records] == [key.encode()]
    assert not _claim(store, owner, run)
    assert store.client.hexists(store.inflight_key, "new-run")
    retried = InFlight(task_id=run.task_id, key=key, scheduled=run.scheduled, claimed_at=run.claimed_at,
                       token=owner.token, retry_at=NOW + 600, attempts=3)
    store.retry_later([retried], lock=owner)
    assert store.client.hget(store.inflight_key, run.task_id) == retried.to_json().encode()


# -- claims are compare-and-set ----------------------------------------------------------

def test_claim_applies_only_the_records_unchanged_since_the_read(store, owner):
    keys = {name: put_entry(store, name, 0, meta=meta_json(None, 0))
            for name in ("unchanged", "definition", "meta", "run_now", "run_now_served")}
    store.client.hset(keys["run_now_served"], "run_now", "1")
    batch = store.read_due(NOW, 10, lock=owner)
    assert len(batch.records) == 5
    client = store.client
    client.hset(keys["definition"], "definition", json.dumps({"name": "definition", "task": "tasks.edited",
                                                              "schedule": HOUR}))
    client.hset(keys["meta"], "meta", meta_json(None, 5))
    client.hset(keys["run_now"], "run_now", "1")
    client.hdel(keys["run_now_served"], "run_now")
    edited = {name: client.hgetall(key) for name, key in keys.items() if name != "unchanged"}

    decisions = [Decision(record, "move", score=NOW + 3600, meta=meta_json(None, 1), status='{"missed": 0}')
                 for record in batch.records]
    applied = store.claim(decisions, lock=owner)

    assert [d.record.key for d in applied] == [keys["unchanged"].encode()]
    assert score_of(store, keys["unchanged"]) == NOW + 3600
    assert client.hget(keys["unchanged"], "meta") == meta_json(None, 1).encode()
    for name, fields in edited.items():
        assert client.hgetall(keys[name]) == fields, name
        assert score_of(store, keys[name]) == 0, name


# -- history ---------------------------------------------------------------------------------

def test_history_is_capped_at_redbeat_history_size(store):
    store.conf.history_size = 3
    key = put_entry(store, "capped", 0)
    runs = [put_in_flight(store, key, scheduled=NOW + i) for i in range(5)]
    store.record([Outcome(run, "published", run.scheduled + 0.5) for run in runs[:2]])
    store.read_due(NOW, 10, published=[Outcome(run, "published", run.scheduled + 0.5) for run in runs[2:]])

    history = store.history(key)
    assert [record["task_id"] for record in history] == [run.task_id for run in reversed(runs[2:])]
    assert store.client.hlen(store.inflight_key) == 0


def test_a_run_is_recorded_once_even_if_recorded_twice(store):
    key = put_entry(store, "once", 0)
    run = put_in_flight(store, key)
    store.record([Outcome(run, "published", NOW)])
    store.record([Outcome(run, "published", NOW)])
    assert len(store.history(key)) == 1


# -- take-over -------------------------------------------------------------------------------

def test_a_take_over_gives_a_run_to_exactly_one_of_two_callers(store, owner):
    key = put_entry(store, "taken", 0)
    run = put_in_flight(store, key, token="dead-beat")
    raw = store.client.hget(store.inflight_key, run.task_id)
    first = InFlight(task_id=run.task_id, key=key, scheduled=run.scheduled, claimed_at=NOW, token="first",
                     retry_at=NOW + 30, attempts=1)
    second = InFlight(task_id=run.task_id, key=key, scheduled=run.scheduled, claimed_at=NOW, token="second",
                      retry_at=NOW + 30, attempts=1)

    # Both callers read the same record and pass the fence (the same lock).
    assert store.take_over([(raw, first)], lock=owner) == {run.task_id}
    assert store.take_over([(raw, second)], lock=owner) == set()
    assert store.client.hget(store.inflight_key, run.task_id) == first.to_json().encode()


# -- one score rule for every way of saving ---------------------------------------------------
#
# The rule, as SAVE_LUA, entry.write_over, docs/adding-tasks.rst and
# docs/format.rst state it: writing a definition, a new entry gets its meta and its
# computed score. An existing entry keeps its meta and its history and loses a parked
# mark; its score is the one beat will give it at its next tick, computed from its
# stored meta and status with the new definition: now if runs are due, else its next
# fire time (paused: that of its next regular slot). So the score is a real next run
# at every moment, and an app re-saving its entries never pushes them back. The score
# is 0 (beat decides at its next tick) only if the stored meta changed between the
# read and the write (beat claimed a run), a run-now request waits, or the stored meta
# cannot be read. Finding a definition unchanged is not writing it: the static sync
# and an import leave such an entry as it is (the static sync restores its score only
# if it has none).

RUNS = 7


def _stored_meta(last_run_ago: float) -> tuple[float, str]:
    """When the entry last ran (``last_run_ago`` seconds ago, whole seconds) and its meta."""
    last_run = float(int(time.time() - last_run_ago))
    return last_run, meta_json(datetime.fromtimestamp(last_run, timezone.utc), RUNS)


def _entry(app: Celery, name: str, every: float, enabled: bool = True) -> RedBeatSchedulerEntry:
    return RedBeatSchedulerEntry(name=name, task="tasks.contract", schedule=every, enabled=enabled, app=app)


def _by_entry_save(app, store, name, every, enabled=True):
    _entry(app, name, every, enabled).save()


def _by_save_many(app, store, name, every, enabled=True):
    RedBeatSchedulerEntry.save_many([_entry(app, name, every, enabled)], app=app)


def _by_store_save(app, store, name, every, enabled=True):
    entry = _entry(app, name, every, enabled)
    store.save(write_over(entry, store.load(entry.key)))


def _by_cli_edit(app, store, name, every, enabled=True):
    # What `redbeat edit NAME schedule ...` runs (cli/changing.edit).
    changes.edit_field(app, name, "schedule", {"__type__": "interval", "every": every}, "...", Tool(app).tasks_known)


def _by_import(app, store, name, every, enabled=True):
    spec = {"task": "tasks.contract", "schedule": {"__type__": "interval", "every": every}, "enabled": enabled}
    plan = plan_import(app, {name: spec})
    assert apply_import(app, plan) == (0 if plan.unchanged == [name] else 1)


def _by_static_sync(app, store, name, every, enabled=True):
    scheduler = RedBeatScheduler(app=app, lock_key=None)
    try:
        scheduler.update_from_dict({name: {"task": "tasks.contract", "schedule": float(every), "enabled": enabled}})
    finally:
        scheduler.close()


SAVERS = [
    pytest.param(_by_entry_save, id="entry.save"),
    pytest.param(_by_save_many, id="save_many"),
    pytest.param(_by_store_save, id="store.save"),
    pytest.param(_by_cli_edit, id="cli_edit"),
    pytest.param(_by_import, id="apply_import"),
    pytest.param(_by_static_sync, id="update_from_dict"),
]
# Savers that compare the definition with the stored one first, and write only a changed one.
COMPARING = ("apply_import", "update_from_dict")


@pytest.mark.parametrize("save", [p for p in SAVERS if p.id != "cli_edit"])
def test_saving_a_new_entry_gives_it_its_computed_score(contract_app, store, save):
    expected = _entry(contract_app, "fresh", 3600).score
    save(contract_app, store, "fresh", 3600)
    key = store.key_for("fresh")
    # The score counts from "now" when the entry is built: the saver builds its own a moment later.
    assert score_of(store, key) == pytest.approx(expected, abs=5)
    assert store.client.hget(key, "meta") is not None


@pytest.mark.parametrize("save", SAVERS)
def test_saving_an_existing_entry_keeps_its_meta_and_history_and_scores_its_next_run(contract_app, store, save):
    last_run, meta = _stored_meta(100)
    key = put_entry(store, "kept", NOW + 999, meta=meta)
    store.client.hset(key, "parked", json.dumps({"reason": "old", "parked_at": NOW}))
    history_key = store.history_key(key)
    store.client.lpush(history_key, json.dumps({"task_id": "earlier", "outcome": "published"}))
    history = store.client.dump(history_key)

    save(contract_app, store, "kept", 600)

    definition = json.loads(store.client.hget(key, "definition"))
    assert definition["schedule"]["every"] == 600
    assert store.client.hget(key, "meta") == meta.encode()
    assert not store.client.hexists(key, "parked")
    assert store.client.dump(history_key) == history
    # The new definition counted from the stored last run: beat's next tick would say the same.
    assert score_of(store, key) == last_run + 600


@pytest.mark.parametrize("save", SAVERS)
def test_an_existing_entry_with_a_run_due_is_scored_now(contract_app, store, save):
    _, meta = _stored_meta(1000)
    key = put_entry(store, "due", NOW + 999, meta=meta)
    save(contract_app, store, "due", 600)
    assert score_of(store, key) == pytest.approx(time.time(), abs=5)


@pytest.mark.parametrize("save", SAVERS)
def test_a_paused_entry_is_scored_at_its_next_regular_slot_as_beat_moves_it(contract_app, store, save):
    last_run, meta = _stored_meta(1000)
    key = put_entry(store, "paused", NOW + 999, meta=meta, enabled=False)
    save(contract_app, store, "paused", 600, enabled=False)
    assert json.loads(store.client.hget(key, "definition"))["enabled"] is False
    # Its slot at last_run + 600 passed while paused: not run, and not waited for either.
    assert score_of(store, key) == last_run + 1200


@pytest.mark.parametrize("save", SAVERS)
def test_an_existing_entry_with_unreadable_meta_keeps_it_and_is_scored_0(contract_app, store, save):
    key = put_entry(store, "unreadable", NOW + 999, meta="not json")
    save(contract_app, store, "unreadable", 600)
    assert store.client.hget(key, "meta") == b"not json"
    assert score_of(store, key) == 0


@pytest.mark.parametrize("save", SAVERS)
def test_re_saving_an_unchanged_entry_never_moves_its_next_run_later(contract_app, store, save):
    """2.x scored a re-saved entry from the caller's fresh object (last run: now),
    pushing it back at each save: an app re-saving at start-up starved it."""
    _by_entry_save(contract_app, store, "again", 600)
    key = store.key_for("again")
    last_run, meta = _stored_meta(100)
    store.client.hset(key, "meta", meta)  # as beat records a run, with its next one as the score
    store.client.zadd(store.conf.schedule_key, {key: last_run + 600})

    save(contract_app, store, "again", 600)

    assert store.client.hget(key, "meta") == meta.encode()
    assert score_of(store, key) == last_run + 600


@pytest.mark.parametrize("save", [p for p in SAVERS if p.id in COMPARING])
def test_an_unchanged_definition_is_not_written_by_the_static_sync_nor_an_import(contract_app, store, save):
    save(contract_app, store, "again", 600)
    key = store.key_for("again")
    _, meta = _stored_meta(100)
    store.client.hset(key, "meta", meta)
    store.client.zadd(store.conf.schedule_key, {key: NOW + 999})
    save(contract_app, store, "again", 600)
    assert score_of(store, key) == NOW + 999


def test_the_static_sync_gives_an_unchanged_entry_out_of_the_schedule_its_score_back(contract_app, store):
    _by_static_sync(contract_app, store, "restored", 3600)
    key = store.key_for("restored")
    expected = score_of(store, key)
    store.client.zrem(store.conf.schedule_key, key)

    _by_static_sync(contract_app, store, "restored", 3600)

    # Counted from the stored meta: the entry is where it was.
    assert score_of(store, key) == pytest.approx(expected, abs=5)


def _write_by_save(store, write):
    store.save(write)


def _write_by_save_many(store, write):
    store.save_many([write])


def _write_by_write_entries(store, write):
    store.write_entries([write], [])


def _write_by_write_imported(store, write):
    store.write_imported([ImportedWrite(write.key.encode(), write.score,
                                        {b"definition": write.definition.encode(), b"meta": write.meta}, False)])


WRITES = [pytest.param(call, id=call.__name__.removeprefix("_write_by_"))
          for call in (_write_by_save, _write_by_save_many, _write_by_write_entries, _write_by_write_imported)]


@pytest.mark.parametrize("write_it", WRITES)
def test_a_score_computed_from_meta_that_changed_before_the_write_is_not_written(contract_app, store, write_it):
    """Beat claimed a run between a saver's read and its write: the score computed from
    the meta read is stale, so the entry gets 0 and beat decides from what is stored."""
    _, meta = _stored_meta(100)
    key = put_entry(store, "raced", NOW + 999, meta=meta)
    write = write_over(_entry(contract_app, "raced", 600), store.load(key))
    assert write.score > 0
    claimed = meta_json(datetime.now(timezone.utc), RUNS + 1)
    store.client.hset(key, "meta", claimed)

    write_it(store, write)

    assert store.client.hget(key, "meta") == claimed.encode()
    assert json.loads(store.client.hget(key, "definition"))["schedule"]["every"] == 600
    assert score_of(store, key) == 0


@pytest.mark.parametrize("write_it", WRITES)
def test_an_entry_created_between_the_read_and_the_write_is_scored_0(contract_app, store, write_it):
    entry = _entry(contract_app, "created", 600)
    write = write_over(entry, store.load(entry.key))
    _, meta = _stored_meta(100)
    put_entry(store, "created", NOW + 999, meta=meta)

    write_it(store, write)

    assert store.client.hget(entry.key, "meta") == meta.encode()
    assert score_of(store, entry.key) == 0


@pytest.mark.parametrize("save", SAVERS)
def test_a_waiting_run_now_request_keeps_the_entry_due_at_beats_next_tick(contract_app, store, save):
    _, meta = _stored_meta(100)
    key = put_entry(store, "asked", NOW + 999, meta=meta)
    store.request_run_now(key)
    save(contract_app, store, "asked", 600)
    assert store.client.hexists(key, "run_now")
    assert score_of(store, key) == 0


# -- keys outside the prefix --------------------------------------------------------------------

def test_members_outside_the_prefix_are_never_read_or_written(store, owner):
    foreign = "otherapp:job"
    store.client.hset(foreign, mapping={"definition": "theirs", "meta": "theirs"})
    store.client.zadd(store.conf.schedule_key, {foreign: 0})
    own = put_entry(store, "own", 0, meta=meta_json(None, 0))
    dumped = store.client.dump(foreign)

    records = {r.key: r for r in store.read_due(NOW, 10, lock=owner).records}
    outside = records[foreign.encode()]
    assert outside.kind == "outside"
    assert (outside.definition, outside.meta, outside.status, outside.run_now) == (None, None, None, None)
    assert records[own.encode()].kind == "hash"

    for action in ("run", "move", "park", "delete"):
        assert store.claim([Decision(outside, action, score=NOW + 60, meta="{}", reason="x")], lock=owner) == []
        assert store.client.dump(foreign) == dumped, action
    assert score_of(store, foreign) == 0

    assert len(store.claim([Decision(outside, "drop")], lock=owner)) == 1
    assert score_of(store, foreign) is None
    assert store.client.dump(foreign) == dumped


# -- fairness of a batch ------------------------------------------------------------------------

def test_read_due_splits_a_batch_between_on_time_entries_and_a_backlog(store):
    backlog = [put_entry(store, f"old{i:02}", i) for i in range(1, 11)]
    on_time = [put_entry(store, f"new{i:02}", NOW - 1 + i / 100) for i in range(10)]
    put_entry(store, "later", NOW + 60)

    batch = store.read_due(NOW, 4)

    assert [r.key.decode() for r in batch.records] == on_time[:2] + backlog[:2]
    assert batch.next_key == store.key_for("later").encode() and batch.next_score == NOW + 60


def test_read_due_gives_a_whole_batch_to_either_side_when_the_other_is_empty(store):
    backlog = [put_entry(store, f"old{i:02}", i) for i in range(1, 11)]
    assert [r.key.decode() for r in store.read_due(NOW, 4).records] == backlog[:4]
    store.client.delete(store.conf.schedule_key)
    on_time = [put_entry(store, f"new{i:02}", NOW - 1 + i / 100) for i in range(10)]
    assert [r.key.decode() for r in store.read_due(NOW, 4).records] == on_time[:4]
