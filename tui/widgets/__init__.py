"""Widgets shared by dagtop's screens, and the colours of the status glyphs they all use.

The glyphs are the product's own (`engine.units.GLYPHS`, the same in the CLI). The glyph alone
must say what happened (colour-blind users, no-colour terminals); the colour, set by the
`status-*` classes in app.tcss or the widgets' component classes, only repeats it.
"""

from __future__ import annotations

from rich.text import Text

from engine.units import GLYPHS, glyph

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


def status_text(status: str | None, text: str = "") -> Text:
    """`glyph text` as Rich Text, the glyph coloured by status."""
    out = Text(glyph(status), style=STYLES.get(status or "never", ""))
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
