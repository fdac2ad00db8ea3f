"""What people read and write: sizes, durations, status glyphs, text that fits on one line.

The CLI and the UI both print through this module, so a number or a status reads the same in
`dagtop runs` and on the screen. Standard library only and cheap to import: a step's worker
and every command import it.
"""

from __future__ import annotations

import json
import math
import re

from engine.status import PartitionStatus, StepStatus, TickStatus

MAX_SIZE = 1024**5  # 1 PiB: anything larger is a typo, not a memory limit

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str | None) -> int | None:
    """Turn `512MiB`, `2 GB`, `1.5g` or a plain number of bytes into bytes.

    Raises:
        ValueError: the text is not a size.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 1 or value > MAX_SIZE:
            raise ValueError(f"a size must be a positive number of bytes, got {value!r}")
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (try 512MiB, 2GB or a number of bytes)")
    number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not math.isfinite(number) or number < 1 or number > MAX_SIZE:
        raise ValueError(f"a size must be positive and at most 1 PiB, got {value!r}")
    return int(number)


def format_bytes(n: float | None) -> str:
    """`1536` -> `1.5 KiB`, `641728512` -> `612.0 MiB`; `–` when unknown.

    Binary units, because that is what limits are written in; one decimal, so a peak and the
    limit it broke never print as the same number.
    """
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if unit == "B" and abs(value) < 1024:
            return f"{int(value)} B"
        # Rounded before the comparison: 1023.97 KiB is `1.0 MiB`, never `1024.0 KiB`.
        if round(abs(value), 1) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """`0.41` -> `0.41 s`, `75` -> `1m 15s`, `4000` -> `1h 06m`; `–` when unknown.

    Hundredths below 10 s, because a step takes tens of milliseconds; minutes and hours
    without fractions beyond that.
    """
    if seconds is None:
        return "–"
    seconds = max(float(seconds), 0.0)
    if round(seconds, 2) < 10:
        return f"{seconds:.2f} s"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


# --- status glyphs ------------------------------------------------------------------------------

GLYPHS: dict[str, str] = {
    # runs and steps (a run's statuses are steps' too) and backfills
    StepStatus.SUCCESS: "✓",
    StepStatus.FAILED: "✗",
    StepStatus.RUNNING: "◐",
    StepStatus.QUEUED: "…",
    StepStatus.RETRYING: "↻",
    StepStatus.SKIPPED: "⊘",
    StepStatus.CANCELED: "■",
    "never": "·",  # never run; also a cell whose status is not known yet
    # values (assets and partitions)
    PartitionStatus.MATERIALIZED: "✓",  # its latest run made it: the same fact as a success
    PartitionStatus.STALE: "◧",
    PartitionStatus.MISSING: "□",
    "check-failed": "⊠",  # materialized (or stale), but its value failed a check
    # schedule ticks
    TickStatus.STARTED: "▶",  # a tick that started a run whose status is not known yet
}
"""Status -> glyph, for the whole product (CLI and UI). One glyph has one meaning: `■` is
canceled everywhere. The glyph alone must say it (colour-blind users, no-colour terminals)."""

UNKNOWN_GLYPH = "?"
"""An unknown status shows as `?`, never as a plausible state."""


def glyph(status: str | None) -> str:
    """The glyph of a status (`None` means never run)."""
    return GLYPHS.get(status or "never", UNKNOWN_GLYPH)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`count` and its noun, in the singular for one: "1 task pipeline", "4 files".

    Args:
        count: How many.
        noun: The singular; the plural adds "s" unless `many` is given.
        many: The plural when it is not `noun` + "s" ("entries").
    """
    if count == 1:
        return f"1 {noun}"
    return f"{count} {many or noun + 's'}"


# --- one line of text ---------------------------------------------------------------------------

# C0 and C1 controls (newline, carriage return, escape, ...), DEL, and the Unicode line and
# paragraph separators: what breaks a line of output, moves the cursor or starts a terminal
# escape sequence.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_character(text: str) -> str | None:
    """The first control character in `text`, escaped (`\\n`, `\\x1b`), or None if it has none.

    Keys (partition keys, parameter names, the file names a sensor passes on) are printed one
    per line; one holding a newline would break that output, or forge a line of it.
    """
    found = _CONTROL_RE.search(text)
    return None if found is None else repr(found.group())[1:-1]


def one_line(text: str) -> str:
    """`text` with every control character escaped, for a value printed inside a line."""
    if _CONTROL_RE.search(text) is None:
        return text
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


def format_value(value: object, width: int = 40) -> str:
    """A metadata value in one cell: `0.9712`, `1437`, `1234.57`, text on one line, a list or
    dict as compact JSON; cut to `width` characters with `…`."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "–"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, int | str):
        text = one_line(str(value))
    else:
        text = one_line(json.dumps(value, separators=(",", ":"), default=repr))
    return text if len(text) <= width else text[: width - 1] + "…"
