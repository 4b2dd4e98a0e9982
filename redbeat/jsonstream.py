"""Reading one big JSON document a piece at a time, so that an import of 100,000
entries holds one entry at a time rather than the whole file.

The caller walks the document's shape: ``members`` of an object and ``items``
of an array are generators that stop at the closing bracket, and ``value``
reads one whole value (an entry) at the current place. Each read text is
dropped once parsed, so memory is bounded by the largest single value read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["JsonReader"]

CHUNK = 1 << 16
_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"
_BOM = "\ufeff"
_NUMBER_GOES_ON = frozenset("0123456789+-.eE")


class JsonReader:
    """A cursor over a JSON text read from ``stream`` in chunks."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.buffer = ""
        self.at = 0
        self.eof = False
        self.read_chars = 0  # how far into the stream the buffer ends

    def _fill(self, size: int = CHUNK) -> bool:
        """Read the next ``size`` characters, dropping what was parsed; False at the end of the stream."""
        if self.eof:
            return False
        data = self.stream.read(size)
        if not data:
            self.eof = True
            return False
        if not self.read_chars and data.startswith(_BOM):
            data = data[1:]  # Windows editors start UTF-8 files with a byte order mark, which is no JSON
        self.read_chars += len(data)
        self.buffer = self.buffer[self.at:] + data
        self.at = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end), not consumed."""
        while True:
            while self.at < len(self.buffer) and self.buffer[self.at] in _WHITESPACE:
                self.at += 1
            if self.at < len(self.buffer):
                return self.buffer[self.at]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            raise ValueError(f"expected {char!r} but found {found or 'the end of the file'!r} {self._where()}")
        self.at += 1

    def value(self) -> Any:
        """The whole JSON value at the cursor."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.at)
            except json.JSONDecodeError as exc:
                # A value cut by the buffer's end: read as much again as is held, so that a
                # value of n characters is parsed a few times over, not n / CHUNK times.
                if self._fill(max(CHUNK, len(self.buffer) - self.at)):
                    continue
                raise ValueError(f"not JSON {self._where()}: {exc.msg}") from None
            except RecursionError:
                raise ValueError(f"JSON nested too deeply {self._where()}") from None
            if self._may_be_cut(value, end) and self._fill():
                continue
            self.at = end
            return value

    def _may_be_cut(self, value: Any, end: int) -> bool:
        """Whether ``value``, parsed up to ``end``, may be the start of a longer one cut by the
        buffer's end: a number or word that ends the buffer, or a number followed by nothing but
        what could go on with it (``1.`` of ``1.5``, ``2e`` of ``2e3``)."""
        if end == len(self.buffer):
            return True
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return is_number and all(char in _NUMBER_GOES_ON for char in self.buffer[end:])

    def members(self) -> Iterator[str]:
        """The names of an object's members; the caller reads each one's value before the next."""
        self.expect("{")
        if self.peek() == "}":
            self.at += 1
            return
        while True:
            name = self.value()
            if not isinstance(name, str):
                raise ValueError(f"expected a member name {self._where()}")
            self.expect(":")
            yield name
            if self._closed("}"):
                return

    def items(self) -> Iterator[None]:
        """Once per item of an array; the caller reads each item before the next."""
        self.expect("[")
        if self.peek() == "]":
            self.at += 1
            return
        while True:
            yield None
            if self._closed("]"):
                return

    def _closed(self, closing: str) -> bool:
        """After a member or item: True at the closing bracket, False after a comma."""
        found = self.peek()
        self.at += 1
        if found == ",":
            return False
        if found == closing:
            return True
        raise ValueError(f"expected ',' or {closing!r} but found {found or 'the end of the file'!r} {self._where()}")

    def end(self) -> None:
        """Refuse anything but whitespace after the document."""
        if self.peek():
            raise ValueError(f"extra data after the JSON document {self._where()}")

    def _where(self) -> str:
        return f"near character {self.read_chars - len(self.buffer) + self.at}"
