"""A Gantt chart of a run: one lane per step, one bar per attempt, on one shared time axis.

The layout (`render_chart`) is pure: lanes of attempts, a "now" for bars still running, and a
width in, rows of bar characters and an axis line out. The `Timeline` widget only colours it.
Bar ends use eighth blocks (▏▎▍▌▋▊▉█), so a 0.2 s step in a 60 s run is still visible and two
bars that end an eighth of a cell apart look different. A bar starts on a whole cell: Unicode
has no left-open eighth blocks, so the start is rounded to the nearest cell.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from engine.status import StepStatus
from tui.widgets import STYLES

EIGHTHS = " ▏▎▍▌▋▊▉"
FULL = "█"
RUNNING_TIP = "▸"
LABEL_GAP = 2  # blank cells between two axis labels
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
MIN_SPAN = 1.0  # seconds: a run shorter than this still spreads over the width
HEADROOM = 0.05  # of the span, left free after `now` while something runs


@dataclass(frozen=True, slots=True)
class Segment:
    """One attempt of a step."""

    start: float
    end: float | None
    """None while the attempt runs: the bar reaches `now`."""
    status: str


@dataclass(frozen=True, slots=True)
class Lane:
    """One step's row: its attempts in the order they started."""

    label: str
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True, slots=True)
class Bar:
    """Where one segment landed in its row: `text` starts at cell `col`."""

    col: int
    text: str
    status: str
    running: bool


@dataclass(frozen=True, slots=True)
class Chart:
    rows: tuple[str, ...]
    """One string per lane, exactly `width` cells each."""
    bars: tuple[tuple[Bar, ...], ...]
    """The bars of each row, for styling."""
    axis: str
    """Tick labels under the bars, `width` cells."""
    start: float
    end: float


def clock_label(ts: float) -> str:
    """HH:MM:SS in local time."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def time_span(lanes: Sequence[Lane], now: float, start: float | None = None) -> tuple[float, float]:
    """The time range the chart covers: first start to last end (or `now` while running)."""
    starts = [seg.start for lane in lanes for seg in lane.segments]
    ends = [now if seg.end is None else seg.end for lane in lanes for seg in lane.segments]
    t0 = min([*starts, *([start] if start is not None else [])], default=now)
    t1 = max([*ends, t0])
    if any(seg.end is None for lane in lanes for seg in lane.segments):
        # Leave room ahead of running bars, so they visibly grow instead of the axis shrinking.
        t1 = max(t1, now) + max(MIN_SPAN, (max(t1, now) - t0) * HEADROOM)
    return t0, max(t1, t0 + MIN_SPAN)


def bar_cells(x0: float, x1: float, width: int) -> tuple[int, str]:
    """The cells of a bar from x0 to x1 (in cells): whole blocks, then an eighth block.

    The bar starts at the nearest whole cell and is at least one eighth wide.
    """
    col = min(max(0, round(x0)), max(0, width - 1))
    eighths = max(1, round((x1 - col) * 8))
    full, rest = divmod(eighths, 8)
    text = FULL * full + (EIGHTHS[rest] if rest else "")
    return col, text[: max(0, width - col)]


def render_chart(
    lanes: Sequence[Lane],
    now: float,
    width: int,
    *,
    start: float | None = None,
    label: Callable[[float], str] = clock_label,
) -> Chart:
    """Lay out every lane's attempts on one time axis `width` cells wide.

    Args:
        lanes: One per step, in display order.
        now: The time that running attempts reach.
        width: Cells for the bars (labels of the lanes are not included).
        start: Start the axis here (the run's start) if it is earlier than every attempt.
        label: Formats a tick's time.
    """
    width = max(1, width)
    t0, t1 = time_span(lanes, now, start)
    scale = width / (t1 - t0)
    rows: list[str] = []
    all_bars: list[tuple[Bar, ...]] = []
    for lane in lanes:
        cells = [" "] * width
        bars: list[Bar] = []
        for seg in lane.segments:
            running = seg.end is None
            end = now if running else seg.end
            assert end is not None
            col, text = bar_cells((seg.start - t0) * scale, (end - t0) * scale, width)
            if running:
                tip = col + len(text)
                if tip < width and cells[tip] == " ":
                    text += RUNNING_TIP
            cells[col : col + len(text)] = list(text)
            bars.append(Bar(col, text, seg.status, running))
        rows.append("".join(cells))
        all_bars.append(tuple(bars))
    return Chart(tuple(rows), tuple(all_bars), axis_line(t0, t1, width, label), t0, t1)


def tick_step(span: float, width: int, label_width: int = 8) -> int:
    """The smallest "nice" tick interval (seconds) whose labels fit side by side."""
    cells_per_second = width / span
    for step in NICE_STEPS:
        if step * cells_per_second >= label_width + LABEL_GAP:
            return step
    room = (label_width + LABEL_GAP) / cells_per_second
    return math.ceil(room / 86400) * 86400


def axis_line(t0: float, t1: float, width: int, label: Callable[[float], str] = clock_label) -> str:
    """Tick labels at round times between t0 and t1; a label starts at its tick's cell."""
    width = max(1, width)
    label_width = len(label(t0))
    step = tick_step(t1 - t0, width, label_width)
    scale = width / (t1 - t0)
    cells = [" "] * width
    free_from = 0
    tick = math.ceil(t0 / step) * step
    while tick <= t1:
        text = label(tick)
        col = round((tick - t0) * scale)
        col = min(col, width - len(text))  # the last label may lean left to fit
        if col >= free_from and col >= 0:
            cells[col : col + len(text)] = list(text)
            free_from = col + len(text) + LABEL_GAP
        tick += step
    return "".join(cells)[:width]


STATUS_STYLES = {**STYLES, StepStatus.FAILED: "red", StepStatus.RUNNING: "yellow"}


class Timeline(Widget):
    """The run's Gantt chart: a label column, then bars, then the axis."""

    DEFAULT_CSS = """
    Timeline {
        height: auto;
        min-height: 2;
    }
    """

    LABEL_MAX = 22

    def __init__(
        self,
        *,
        label: Callable[[float], str] = clock_label,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's own keyword
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lanes: tuple[Lane, ...] = ()
        self._now = 0.0
        self._start: float | None = None
        self._label = label
        self.selected: str | None = None
        """The lane drawn in bold (the step whose log is shown)."""

    def update_lanes(
        self,
        lanes: Sequence[Lane],
        now: float,
        start: float | None = None,
        selected: str | None = None,
    ) -> None:
        self._lanes, self._now, self._start, self.selected = tuple(lanes), now, start, selected
        self.refresh(layout=len(lanes) + 1 != self.size.height)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lanes) + 1

    def render(self) -> Text:
        if not self._lanes:
            return Text("no steps", style="dim")
        label_w = min(
            self.LABEL_MAX,
            max(4, self.size.width * 2 // 5),
            max(len(lane.label) for lane in self._lanes),
        )
        bar_w = max(1, self.size.width - label_w - 1)
        chart = render_chart(self._lanes, self._now, bar_w, start=self._start, label=self._label)
        out = Text(no_wrap=True, overflow="crop")
        for lane, row, bars in zip(self._lanes, chart.rows, chart.bars, strict=True):
            name = lane.label if len(lane.label) <= label_w else lane.label[: label_w - 1] + "…"
            style = Style(bold=True) if lane.label == self.selected else Style(dim=False)
            out.append(name.ljust(label_w) + " ", style)
            line = Text(row)
            for bar in bars:
                line.stylize(STATUS_STYLES.get(bar.status, ""), bar.col, bar.col + len(bar.text))
            out.append_text(line)
            out.append("\n")
        out.append(" " * (label_w + 1) + chart.axis, "dim")
        return out


__all__ = [
    "Bar",
    "Chart",
    "Lane",
    "Segment",
    "Timeline",
    "axis_line",
    "bar_cells",
    "clock_label",
    "render_chart",
    "tick_step",
]
