"""Task ids of runs: the documented uuid5 derivation, spelled out for speed, must not drift."""

import uuid

from hypothesis import given
from hypothesis import strategies as st

from redbeat.runs import RUN_NAMESPACE, task_id_for


@given(st.text(max_size=40), st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_a_run_task_id_is_uuid5_of_key_and_scheduled_milliseconds(key, scheduled):
    assert task_id_for(key, scheduled) == str(uuid.uuid5(RUN_NAMESPACE, f"{key}@{round(scheduled * 1000)}"))
