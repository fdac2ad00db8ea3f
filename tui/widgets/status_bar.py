"""The top line: project, engine mode, runs in flight, machine load and the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from engine.status import RunStatus
from tui.widgets import STYLES, glyph

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY = 8
"""CPU samples in the sparkline."""


def tilde(path: Path | str) -> str:
    """`path` with the home folder written `~`."""
    text = str(path)
    home = str(Path.home())
    if home not in ("/", "") and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home) :]
    return text


def sparkline(values: tuple[float, ...]) -> str:
    return "".join(SPARKS[min(int(v / 100 * len(SPARKS)), len(SPARKS) - 1)] for v in values)


def gib(n: int) -> str:
    value = n / 2**30
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


class StatusBar(Widget):
    """One line, htop style. The screen that owns it pushes the numbers in."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $text;
    }
    """

    project: reactive[str] = reactive("")
    mode: reactive[str] = reactive("embedded")
    running: reactive[int] = reactive(0)
    queued: reactive[int] = reactive(0)
    cpu: reactive[tuple[float, ...]] = reactive(())
    """The last few CPU samples, oldest first."""
    memory: reactive[tuple[int, int] | None] = reactive(None)
    """(used, total) bytes."""
    now: reactive[float] = reactive(0.0)
    condition: reactive[str] = reactive("")
    """A transient problem to show (storage busy, a load error), empty when all is well."""
    warning: reactive[str] = reactive("")
    """A standing problem of the setup (an open Dask scheduler), shown until it is fixed."""

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        *,
        id: str | None = None,  # noqa: A002 - Textual's name for it
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.clock = clock or time.time

    def on_mount(self) -> None:
        self.now = self.clock()
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        self.now = self.clock()

    def add_cpu_sample(self, percent: float) -> None:
        # The first sample fills the line, so it never grows from the left (stable snapshots).
        history = self.cpu or (percent,) * HISTORY
        self.cpu = (*history, percent)[-HISTORY:]

    def render(self) -> Text:
        """Everything on one line; narrower terminals lose detail in a fixed order: the
        middle of the project path, the sparkline, the words, and finally the line's end."""
        width = self.size.width
        clock = time.strftime("%H:%M:%S", time.localtime(self.now))
        for project, spark, compact in (
            (self.project, True, False),
            (_squeeze(self.project, 16), True, False),
            (_squeeze(self.project, 16), False, False),
            (_squeeze(self.project, 10), False, True),
            (_squeeze(self.project, 10), False, None),  # 80 columns: narrower gaps
        ):
            left = self._left(project, compact is not False)
            right = self._right(spark, clock, gap=" " if compact is None else "   ")
            spare = width - left.cell_len - right.cell_len
            if spare >= 0:
                return left + Text(" " * spare) + right
        left.truncate(max(width - right.cell_len, 0), overflow="ellipsis")
        return left + right

    def _left(self, project: str, compact: bool) -> Text:
        left = Text(" dagtop ", style="bold")
        left.append("  ")
        left.append(project, "dim")
        left.append("  " if compact else "  engine: ")
        left.append(self.mode, "bold red" if self.mode in ("offline", "stopped") else "bold")
        if self.condition:
            left.append("  ! " + self.condition, "bold red")
        if self.warning:
            left.append("  ⚠ " + self.warning, "bold yellow")
        running, queued = (f" {self.running}", f" {self.queued}")
        if not compact:
            running, queued = running + " running", queued + " queued"
        left.append("  ")
        left.append(glyph(RunStatus.RUNNING) + running, STYLES[RunStatus.RUNNING])
        left.append("  ")
        left.append(glyph(RunStatus.QUEUED) + queued, STYLES[RunStatus.QUEUED])
        return left

    def _right(self, spark: bool, clock: str, gap: str = "   ") -> Text:
        right = Text("  ")  # never let the two halves touch
        if self.cpu:
            right.append("CPU ", "bold")
            if spark:
                right.append(sparkline(self.cpu) + " ", "green")
            right.append(f"{self.cpu[-1]:3.0f}%{gap}")
        if self.memory is not None:
            used, total = self.memory
            right.append("MEM ", "bold")
            right.append(f"{gib(used)}/{gib(total)} GiB{gap}")
        right.append(clock + " ")
        return right


def _squeeze(path: str, keep: int) -> str:
    """`path` cut from the left to `keep` cells: its end says the most."""
    return path if len(path) <= keep else "…" + path[-(keep - 1) :]


__all__ = ["StatusBar", "gib", "sparkline", "tilde"]
