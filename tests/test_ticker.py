"""Unit tests of the ticker's own rules that need no Redis."""

from __future__ import annotations

from redbeat.ticker import ClaimingPause


def test_claiming_pauses_at_max_in_flight_and_resumes_only_at_nine_tenths_of_it():
    pause = ClaimingPause(limit=10)
    assert not pause.paused(9, now=100.0)
    assert pause.paused(10, now=101.0)
    assert pause.reason() == "10 runs waiting in flight (redbeat_max_in_flight is 10)"
    assert pause.since == 101.0
    assert pause.paused(10, now=102.0)  # no flapping at the limit
    assert not pause.paused(9, now=103.0)
    assert pause.reason() is None and pause.since is None
