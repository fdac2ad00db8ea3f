"""Human sizes and durations: parsing what users write, formatting what they read."""

from __future__ import annotations

import math
import re

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
    """`1536` -> `1.5 KiB`; binary units because that is what limits are written in."""
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """`0.41` -> `0.41 s`, `75` -> `1m 15s`, `4000` -> `1h 6m`."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
