"""Text from Redis reaches logs and terminals escaped (see redbeat/printable.py)."""

from hypothesis import given
from hypothesis import strategies as st

from redbeat.printable import printable


def test_plain_names_are_unchanged():
    assert printable("nightly-report") == "nightly-report"
    assert printable("café 日本 ü") == "café 日本 ü"


def test_newlines_cannot_forge_log_lines():
    assert printable("job\n[2026-01-01 00:00:00,000: INFO/MainProcess] forged") == (
        "job\\n[2026-01-01 00:00:00,000: INFO/MainProcess] forged")
    assert printable("a\rb\u2028c") == "a\\rb\\u2028c"


def test_terminal_escapes_are_shown_not_obeyed():
    assert printable("\x1b[2J\x1b]0;pwned\x07") == "\\x1b[2J\\x1b]0;pwned\\x07"
    assert printable("abc\u202edef") == "abc\\u202edef"  # right-to-left override
    assert printable("\x9b31m") == "\\x9b31m"  # the one-byte CSI


def test_a_backslash_cannot_fake_an_escape():
    assert printable("a\\nb") == "a\\\\nb"


def test_bytes_that_are_not_utf8_show_as_hex():
    assert printable(b"key:\xff\xfe") == "key:\\xff\\xfe"
    assert printable("é".encode()) == "é"


@given(st.text())
def test_output_is_one_printable_line(value):
    shown = printable(value)
    assert shown.isprintable()
    assert "\n" not in shown and "\x1b" not in shown
