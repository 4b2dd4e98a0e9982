"""Argument positions named once: the Lua a layout declares and the list Python packs agree."""

from __future__ import annotations

import re

import pytest

from redbeat.claims import CLAIM_FIELDS
from redbeat.lock import FENCE_LUA
from redbeat.lua import ArgLayout
from redbeat.store import ScheduleStore


def test_a_layout_declares_each_position_as_a_lua_local_from_its_first():
    layout = ArgLayout("ARG_", ("token", "ttl_ms", "now"), first=1)
    assert layout.lua().split() == ["local", "ARG_TOKEN,", "ARG_TTL_MS,", "ARG_NOW", "=", "1,", "2,", "3",
                                    "local", "ARG_SIZE", "=", "3"]
    assert CLAIM_FIELDS.lua().splitlines()[1].endswith("= 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10")


def test_pack_puts_the_values_in_the_layouts_order_and_index_finds_them():
    layout = ArgLayout("RUN_", ("task_id", "history_key", "record"), first=0)
    packed = layout.pack(record="{}", task_id="t1", history_key="h")
    assert packed == ["t1", "h", "{}"]
    assert packed[layout.index("record")] == "{}"
    assert ArgLayout("ARG_", ("history_size",), first=1).pack(history_size=3) == [3]


def test_pack_refuses_a_missing_or_an_unknown_name():
    layout = ArgLayout("RUN_", ("task_id", "record"), first=0)
    with pytest.raises(KeyError):
        layout.pack(task_id="t1", recrod="{}")
    with pytest.raises(TypeError):
        layout.pack(task_id="t1")
    with pytest.raises(TypeError):
        layout.pack(task_id="t1", record="{}", extra=1)


@pytest.mark.parametrize("script", [name for name in dir(ScheduleStore) if name.endswith("_LUA")])
def test_every_script_reads_argv_by_named_positions_only(script):
    # FENCE_LUA's ARGV[1] and ARGV[2] are its own (lock.py), shared with the lock's renewal.
    lua = getattr(ScheduleStore, script).replace(FENCE_LUA, "")
    positions = re.findall(r"ARGV\[([^\]]*)\]", lua)
    assert not [p for p in positions if re.search(r"\d", p)]
