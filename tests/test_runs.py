"""Task ids of runs: the documented uuid5 derivation, spelled out for speed, must not drift."""

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from redbeat.records import InFlight
from redbeat.runs import RUN_NAMESPACE, task_id_for


@given(st.text(max_size=40), st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_a_run_task_id_is_uuid5_of_key_and_scheduled_milliseconds(key, scheduled):
    assert task_id_for(key, scheduled) == str(uuid.uuid5(RUN_NAMESPACE, f"{key}@{round(scheduled * 1000)}"))


_times = st.floats(min_value=0, max_value=253402300799, allow_nan=False)


@given(st.text(max_size=40), st.text(max_size=40), _times, _times, _times, st.integers(0, 100))
def test_an_in_flight_record_is_the_json_of_its_fields(key, token, scheduled, claimed_at, retry_at, attempts):
    run = InFlight(task_id=task_id_for(key, scheduled), key=key, scheduled=scheduled, claimed_at=claimed_at,
                   token=token, retry_at=retry_at, attempts=attempts)
    assert run.to_json() == json.dumps({"task_id": run.task_id, "key": key, "scheduled": scheduled,
                                        "claimed_at": claimed_at, "token": token, "retry_at": retry_at,
                                        "attempts": attempts})
    assert InFlight.from_json(run.to_json()) == run


def test_a_run_now_record_says_so_and_a_slot_record_reads_as_before():
    run = InFlight(task_id="t", key="redbeat:k", scheduled=1.5, claimed_at=2.0, token="x", retry_at=3.0,
                   run_now=True, publish_by=9.0)
    assert json.loads(run.to_json())["run_now"] is True
    assert InFlight.from_json(run.to_json()).run_now is True
    assert InFlight.from_json(run.to_json()).publish_by is None  # beat's own, not stored
    slot = InFlight(task_id="t", key="redbeat:k", scheduled=1.5, claimed_at=2.0, token="x", retry_at=3.0)
    assert "run_now" not in json.loads(slot.to_json())
    assert InFlight.from_json(json.dumps({**json.loads(slot.to_json()), "run_now": "yes"})).run_now is False


def test_a_run_is_late_only_past_the_moment_it_had_to_start_by():
    run = InFlight(task_id="t", key="redbeat:k", scheduled=1.5, claimed_at=2.0, token="x", retry_at=3.0)
    assert not run.late_at(1e12)  # no deadline
    run.publish_by = 10.0
    assert not run.late_at(10.0) and run.late_at(10.001)
