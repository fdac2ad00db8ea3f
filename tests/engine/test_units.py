"""What people read: sizes, durations, status glyphs and one-line text (`engine.units`), the
same for the CLI and the UI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.status import PartitionStatus, StepStatus
from engine.units import (
    GLYPHS,
    UNKNOWN_GLYPH,
    control_character,
    format_bytes,
    format_duration,
    format_value,
    glyph,
    one_line,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "–"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1.0 MiB"),  # rounds up into the next unit, never "1024.0 KiB"
        (215.4 * 1024**2, "215.4 MiB"),
        (200 * 1024**2, "200.0 MiB"),
        (2 * 1024**3, "2.0 GiB"),
        (3 * 1024**5, "3072.0 TiB"),
    ],
)
def test_bytes(n: float | None, text: str) -> None:
    assert format_bytes(n) == text


def test_a_peak_just_over_its_limit_never_prints_as_the_limit() -> None:
    limit = 200 * 1024**2
    assert format_bytes(limit + 0.1 * 1024**2) != format_bytes(limit)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (-0.5, "0.00 s"),  # a clock step backwards is no negative duration
        (0.018, "0.02 s"),
        (0.41, "0.41 s"),
        (9.999, "10.0 s"),  # rounds into the next form, never "10.00 s"
        (12.34, "12.3 s"),
        (59.96, "1m 00s"),
        (75, "1m 15s"),
        (3599.9, "1h 00m"),
        (4000, "1h 06m"),
        (90_000, "25h 00m"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_one_glyph_has_one_meaning() -> None:
    # A materialized value is the same fact as a step's success; every other status has its own.
    meanings: dict[str, set[str]] = {}
    for status, mark in GLYPHS.items():
        meanings.setdefault(mark, set()).add(status)
    shared = {mark: names for mark, names in meanings.items() if len(names) > 1}
    assert shared == {
        GLYPHS[StepStatus.SUCCESS]: {StepStatus.SUCCESS, PartitionStatus.MATERIALIZED}
    }
    assert GLYPHS[StepStatus.CANCELED] != GLYPHS[PartitionStatus.MATERIALIZED]
    assert UNKNOWN_GLYPH not in GLYPHS.values()


def test_the_wireframes_status_glyphs() -> None:
    wanted = {
        StepStatus.SUCCESS: "✓",
        StepStatus.FAILED: "✗",
        StepStatus.RUNNING: "◐",
        StepStatus.QUEUED: "…",
        StepStatus.SKIPPED: "⊘",
        StepStatus.CANCELED: "■",
        "never": "·",
        PartitionStatus.STALE: "◧",
    }
    assert {status: GLYPHS[status] for status in wanted} == wanted
    assert glyph(None) == "·" and glyph("no such status") == UNKNOWN_GLYPH


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("2025-01-05", None),
        ("日本語 ☃ 🐍", None),
        ("\u202eevil", None),  # a format character, not a line break: shown as it is
        ("line\nbreak", "\\n"),
        ("a\rb", "\\r"),
        ("tab\there", "\\t"),
        ("\x1b[31mred", "\\x1b"),
        ("del\x7f", "\\x7f"),
        ("c1\x85", "\\x85"),
        ("sep\u2028", "\\u2028"),
        ("a\x00b", "\\x00"),
    ],
)
def test_control_characters(text: str, found: str | None) -> None:
    assert control_character(text) == found
    shown = one_line(text)
    assert control_character(shown) is None and len(shown.splitlines()) <= 1


def test_the_module_stays_cheap_and_standard_library_only() -> None:
    code = (
        "import sys; before = set(sys.modules); import engine.units; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new - set(sys.stdlib_module_names) - {'engine'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.9712, "0.9712"),
        (1234.5678, "1234.57"),
        (1437, "1437"),
        (True, "true"),
        (None, "–"),
        ("two\nlines", "two\\nlines"),
        ({"a": [1, 2]}, '{"a":[1,2]}'),
        ("x" * 50, "x" * 39 + "…"),
    ],
)
def test_metadata_values_in_one_cell(value: object, text: str) -> None:
    assert format_value(value) == text
