"""Writes a TZif file (RFC 8536) for a made-up time zone whose clocks change at
instants the test chooses, so a real beat can live through a DST change in seconds."""

from __future__ import annotations

import struct
from pathlib import Path

HEADER = struct.Struct(">4sc15x6l")


def write_zone(path: Path, transitions: list[tuple[int, int]], base_offset: int = 0) -> None:
    """Write a zone that starts at ``base_offset`` seconds from UTC and switches, at each
    (UNIX second, new offset) in ``transitions``, to that offset; standard after the last."""
    offsets = [base_offset] + [offset for _, offset in transitions]
    types = sorted(set(offsets))
    names = b"".join(f"T{offset:+d}\0".encode() for offset in types)
    name_index, position = {}, 0
    for offset in types:
        name_index[offset] = position
        position += len(f"T{offset:+d}\0")
    body = b"".join(struct.pack(">q", at) for at, _ in transitions)
    body += bytes(types.index(offset) for _, offset in transitions)
    body += b"".join(struct.pack(">lBB", offset, int(offset != base_offset), name_index[offset])
                     for offset in types)
    body += names
    counts = (0, 0, 0, len(transitions), len(types), len(names))
    # A version 1 block with no transitions, then the version 2 block readers use.
    v1 = HEADER.pack(b"TZif", b"2", 0, 0, 0, 0, 1, 1) + struct.pack(">lBB", base_offset, 0, 0) + b"\0"
    v2 = HEADER.pack(b"TZif", b"2", *counts) + body
    footer = b"\n\n"  # no rule after the last transition: its offset stays
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(v1 + v2 + footer)
