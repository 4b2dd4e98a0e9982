"""Text read from Redis, made safe to print in a log line or a terminal.

Anything that can write to the schedule chooses entry names, task names and
reasons: a newline there forges log lines, and ANSI or OSC escapes repaint or
retitle the operator's terminal. Every such value goes through ``printable``
before it reaches a logger or a command's output (JSON output excepted: its
encoder escapes control characters already).
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(value: object) -> str:
    """``value`` as text with every control or invisible formatting character
    written as a Python escape (``\\n``, ``\\x1b``, ``\\u202e``); a backslash
    is doubled so an escape cannot be faked. Bytes that are not UTF-8 show as
    ``\\xNN``."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "surrogateescape")
    else:
        text = str(value)
    if text.isprintable() and "\\" not in text:
        return text  # the common case, at C speed
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():  # all but controls, format characters (bidi), separators but " "
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1]  # repr escapes exactly what is not printable
