"""Every key name of a schedule comes from one place (redbeat/keys.py)."""

from redbeat.keys import KeyNames


def test_key_names_follow_the_data_format():
    keys = KeyNames("redbeat:")
    assert (keys.schedule, keys.statics, keys.default_lock, keys.inflight, keys.heartbeat) == (
        "redbeat::schedule", "redbeat::statics", "redbeat::lock", "redbeat::inflight", "redbeat::heartbeat")
    assert keys.entry("nightly") == "redbeat:nightly"
    assert keys.history("redbeat:nightly") == "redbeat::history:nightly"


def test_a_lock_key_without_the_prefix_gets_it_as_in_2x():
    keys = KeyNames("{redbeat}:")
    assert keys.lock("mylock") == "{redbeat}:mylock"
    assert keys.lock("{redbeat}::lock") == "{redbeat}::lock"
    assert keys.lock(None) is None and keys.lock("") is None


def test_only_keys_under_the_prefix_that_are_not_redbeats_own_are_entry_keys():
    keys = KeyNames("redbeat:")
    assert keys.is_entry_key("redbeat:nightly")
    assert not keys.is_entry_key("session:42")
    assert not keys.is_entry_key("redbeat::inflight")


def test_an_own_key_of_the_wrong_type_is_set_aside_under_its_name_and_the_time_in_milliseconds():
    keys = KeyNames("redbeat:")
    assert keys.set_aside(keys.inflight, 1_800_000_000.1234) == "redbeat::inflight:wrongtype:1800000000123"
