"""A one-line resource gauge: a label, a sparkline of the samples, and the latest value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline

from engine.units import format_bytes


def format_percent(p: float | None) -> str:
    return "–" if p is None else f"{p:.0f}%"


class ResourceGauge(Horizontal):
    """`CPU ▁▃▇█▇ 98%` or `RSS ▂▄▆█ 612 MiB`: the whole series, its latest value on the right."""

    DEFAULT_CSS = """
    ResourceGauge { width: auto; height: 1; }
    ResourceGauge > Label { width: auto; padding: 0 1 0 0; }
    ResourceGauge > Sparkline { width: 16; height: 1; margin: 0 1 0 0; }
    ResourceGauge > .gauge--value { min-width: 8; }
    """

    def __init__(
        self,
        label: str,
        unit: Literal["percent", "bytes"],
        *,
        id: str | None = None,  # noqa: A002 - Textual's own keyword
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label
        self.unit = unit
        self.values: tuple[float, ...] = ()
        self.limit: float | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="gauge--label")
        yield Sparkline([], classes="gauge--spark")
        yield Label("–", classes="gauge--value")

    def text(self) -> str:
        """The latest value, with the limit when one is known (`612.0 MiB / 2.0 GiB`)."""
        if not self.values:
            return "–"
        fmt = format_bytes if self.unit == "bytes" else format_percent
        last = fmt(self.values[-1])
        return last if self.limit is None else f"{last} / {fmt(self.limit)}"

    def update_values(self, values: Sequence[float], limit: float | None = None) -> None:
        """Show a new series (the whole attempt so far); cheap if nothing changed."""
        values = tuple(values)
        if values == self.values and limit == self.limit:
            return
        self.values, self.limit = values, limit
        if self.is_mounted:
            self._show()

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        # One sample would draw a full bar (Sparkline's way to show a single value): wait for two.
        self.query_one(Sparkline).data = list(self.values) if len(self.values) > 1 else []
        value = self.query_one(".gauge--value", Label)
        text, shown = self.text(), str(value.content)
        if text != shown:
            # As wide as before (`612.0 MiB` -> `615.3 MiB`): a repaint, not a layout.
            value.update(text, layout=len(text) != len(shown))


__all__ = ["ResourceGauge", "format_percent"]
