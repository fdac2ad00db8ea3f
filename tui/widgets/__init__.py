"""Widgets shared by dagtop's screens, and the one table of status glyphs they all use.

The glyph alone must say what happened (colour-blind users, no-colour terminals); the colour,
set by the `status-*` classes in app.tcss or the widgets' component classes, only repeats it.
"""

from __future__ import annotations

from rich.text import Text

GLYPHS: dict[str, str] = {
    "success": "✓",
    "failed": "✗",
    "running": "◐",
    "queued": "…",
    "retrying": "↻",
    "skipped": "⊘",
    "canceled": "■",
    "stale": "◧",
    "never": "·",
}
"""Status → glyph. Anything unknown shows as `?`, never as a plausible state."""

STYLES: dict[str, str] = {
    "success": "green",
    "failed": "bold red",
    "running": "bold yellow",
    "queued": "cyan",
    "retrying": "bold magenta",
    "skipped": "dim",
    "canceled": "dim red",
    "stale": "yellow",
    "never": "dim",
}
"""Status → Rich style for glyphs drawn inside Rich `Text` (tree labels, table cells)."""

PARTITIONED = "▦"
IN_FLIGHT = frozenset({"queued", "running", "retrying"})


def glyph(status: str | None) -> str:
    """The glyph of a run or step status (`None` means never run)."""
    return GLYPHS.get(status or "never", "?")


def status_text(status: str | None, text: str = "") -> Text:
    """`glyph text` as Rich Text, the glyph coloured by status."""
    key = status or "never"
    out = Text(GLYPHS.get(key, "?"), style=STYLES.get(key, ""))
    if text:
        out.append(" ")
        out.append(text)
    return out


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis (names are mostly ASCII identifiers)."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


__all__ = ["GLYPHS", "IN_FLIGHT", "PARTITIONED", "STYLES", "glyph", "shorten", "status_text"]
