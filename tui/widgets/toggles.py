"""A checkbox and a radio button whose state reads without colour.

Textual draws both as a coloured block ("▐X▌", "▐●▌") whether ticked or not, so on a
monochrome terminal, or to a colour-blind user, ticked and unticked look the same. These
draw `[x]`/`[ ]` and `(•)`/`( )`, and keep the colour as a second cue.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox, RadioButton


def _mark(widget: Checkbox | RadioButton, on: str, off: str) -> Content:
    style = widget.get_visual_style("toggle--button")
    return Content.assemble((on if widget.value else off, style))


class Tick(Checkbox):
    """A `Checkbox` drawn `[x]` or `[ ]`."""

    @property
    def _button(self) -> Content:
        return _mark(self, "[x]", "[ ]")


class Choice(RadioButton):
    """A `RadioButton` drawn `(•)` or `( )`."""

    @property
    def _button(self) -> Content:
        return _mark(self, "(•)", "( )")


__all__ = ["Choice", "Tick"]
