"""Widgets shared by dagtop's screens, and the colours of the status glyphs they all use.

The glyphs are the product's own (`engine.units.GLYPHS`, the same in the CLI). The glyph alone
must say what happened (colour-blind users, no-colour terminals); the colour, set by the
`status-*` classes in app.tcss or the widgets' component classes, only repeats it.
"""

from __future__ import annotations

from rich.text import Text

from engine.status import PartitionStatus, StepStatus, TickStatus
from engine.units import GLYPHS, glyph

# What the UI shows besides the statuses the engine records (engine.status), each with the
# product's glyph (engine.units.GLYPHS, whose keys these are).
NEVER = "never"
"""No status yet: never run, or not read yet (also its style here and in app.tcss)."""
STARTED = TickStatus.STARTED
"""A tick or a file that started a run whose status is not known (the run is gone)."""
CHECK_FAILED = "check-failed"
"""A materialized (or stale) partition whose value failed a check."""

STYLES: dict[str, str] = {
    StepStatus.SUCCESS: "green",
    StepStatus.FAILED: "bold red",
    StepStatus.RUNNING: "bold yellow",
    StepStatus.QUEUED: "cyan",
    StepStatus.RETRYING: "bold magenta",
    StepStatus.SKIPPED: "dim",
    StepStatus.CANCELED: "dim red",
    PartitionStatus.STALE: "yellow",
    NEVER: "dim",
}
"""Status → Rich style for glyphs drawn inside Rich `Text` (tree labels, table cells); a run's
statuses are its steps' too."""

PARTITIONED = "▦"


def status_text(status: str | None, text: str = "") -> Text:
    """`glyph text` as Rich Text, the glyph coloured by status."""
    out = Text(glyph(status), style=STYLES.get(status or NEVER, ""))
    if text:
        out.append(" ")
        out.append(text)
    return out


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis (names are mostly ASCII identifiers)."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


__all__ = [
    "CHECK_FAILED",
    "GLYPHS",
    "NEVER",
    "PARTITIONED",
    "STARTED",
    "STYLES",
    "glyph",
    "shorten",
    "status_text",
]
