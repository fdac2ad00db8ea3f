"""The timeline's layout: pure functions from attempts, a "now" and a width to text rows."""

from __future__ import annotations

import time

from engine.status import StepStatus
from tui.widgets.timeline import (
    EIGHTHS,
    FULL,
    RUNNING_TIP,
    Lane,
    Segment,
    axis_line,
    bar_cells,
    render_chart,
    tick_step,
)

T0 = 1_750_000_000.0  # a round minute: 2025-06-15 15:06:40 UTC


def utc(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def cells_with_bars(row: str) -> set[int]:
    return {i for i, ch in enumerate(row) if ch != " "}


def test_bar_cells_use_eighth_blocks_for_the_end() -> None:
    assert bar_cells(0, 3, 10) == (0, FULL * 3)
    assert bar_cells(0, 2.5, 10) == (0, FULL * 2 + "▌")
    assert bar_cells(2, 2.125, 10) == (2, "▏")
    assert bar_cells(4, 4.0, 10) == (4, "▏")  # an instant is still one eighth wide
    assert bar_cells(8, 20, 10) == (8, FULL * 2)  # clipped at the width
    assert EIGHTHS[8 // 2] == "▌"


def test_each_row_is_exactly_the_width() -> None:
    lanes = [Lane("a", (Segment(T0, T0 + 3, StepStatus.SUCCESS),)), Lane("b")]
    chart = render_chart(lanes, T0 + 10, 37, label=utc)
    assert [len(r) for r in chart.rows] == [37, 37]
    assert len(chart.axis) == 37
    assert chart.rows[1] == " " * 37  # a step that never ran is blank


def test_two_overlapping_steps_overlap_in_the_rows() -> None:
    lanes = [
        Lane("a", (Segment(T0, T0 + 6, StepStatus.SUCCESS),)),
        Lane("b", (Segment(T0 + 2, T0 + 8, StepStatus.SUCCESS),)),
    ]
    chart = render_chart(lanes, T0 + 10, 40, label=utc)
    a, b = (cells_with_bars(r) for r in chart.rows)
    assert a & b, chart.rows  # they ran at the same time: shared columns
    assert min(a) < min(b) and max(a) < max(b)
    assert len(a) == len(b) == 30  # 6 s of 8 s over 40 cells each


def test_a_waiting_step_starts_later_and_its_wait_is_blank() -> None:
    lanes = [
        Lane("first", (Segment(T0, T0 + 4, StepStatus.SUCCESS),)),
        Lane("waited", (Segment(T0 + 6, T0 + 8, StepStatus.SUCCESS),)),
    ]
    chart = render_chart(lanes, T0 + 8, 40, label=utc)
    first, waited = chart.rows
    assert waited.startswith(" " * 30)  # queued for 6 s of 8: blank
    assert waited[30:] == FULL * 10
    assert first == FULL * 20 + " " * 20


def test_retries_give_separate_segments() -> None:
    lanes = [
        Lane(
            "flaky",
            (
                Segment(T0, T0 + 2, StepStatus.FAILED),
                Segment(T0 + 4, T0 + 5, StepStatus.FAILED),
                Segment(T0 + 7, T0 + 10, StepStatus.SUCCESS),
            ),
        )
    ]
    chart = render_chart(lanes, T0 + 10, 50, label=utc)
    (row,) = chart.rows
    runs = [part for part in row.split(" ") if part]
    assert len(runs) == 3, row
    assert [b.status for b in chart.bars[0]] == [
        StepStatus.FAILED,
        StepStatus.FAILED,
        StepStatus.SUCCESS,
    ]
    assert [b.col for b in chart.bars[0]] == [0, 20, 35]


def test_a_running_bar_reaches_now_and_grows() -> None:
    lanes = [
        Lane("done", (Segment(T0, T0 + 2, StepStatus.SUCCESS),)),
        Lane("live", (Segment(T0 + 1, None, StepStatus.RUNNING),)),
    ]
    early = render_chart(lanes, T0 + 5, 60, label=utc)
    later = render_chart(lanes, T0 + 9, 60, label=utc)
    bar_early, bar_later = early.bars[1][0], later.bars[1][0]
    assert bar_early.running and bar_early.text.endswith(RUNNING_TIP)
    assert bar_later.col < bar_early.col  # the axis stretched: the same start is further left
    # The running bar ends near the right, with headroom for the tip; the axis covers now.
    assert early.end > T0 + 5 and later.end > T0 + 9
    # The finished bar keeps its length in seconds, so it shrinks on screen as the run goes on.
    assert len(later.bars[0][0].text) < len(early.bars[0][0].text)


def test_axis_labels_at_round_times_without_overlap() -> None:
    axis = axis_line(T0, T0 + 60, 80, label=utc)
    labels = axis.split()
    assert labels[0] == "15:06:40"
    assert all(len(x) == 8 for x in labels)
    seconds = [int(x[-2:]) + 60 * int(x[3:5]) for x in labels]
    steps = {b - a for a, b in zip(seconds, seconds[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (10, 15)  # one nice step
    assert axis.index(labels[1]) >= 10  # never touching


def test_axis_labels_land_on_their_ticks() -> None:
    axis = axis_line(T0, T0 + 100, 100, label=utc)  # one cell per second
    for label in axis.split():
        second = (int(label[3:5]) - 6) * 60 + int(label[-2:]) - 40
        assert axis.index(label) == second


def test_axis_of_a_narrow_chart_keeps_one_label_inside() -> None:
    axis = axis_line(T0 + 0.1, T0 + 8.4, 12, label=utc)
    assert len(axis) == 12
    assert axis.strip() in ("15:06:45", "")
    assert tick_step(8.3, 12) >= 5


def test_tick_step_grows_with_span() -> None:
    assert tick_step(10, 100) == 1
    assert tick_step(600, 100) == 60
    assert tick_step(86_400, 100) == 10800
    assert tick_step(10 * 86_400, 100) >= 86_400


def test_chart_starts_at_the_run_start_when_given() -> None:
    lanes = [Lane("late", (Segment(T0 + 5, T0 + 10, StepStatus.SUCCESS),))]
    chart = render_chart(lanes, T0 + 10, 20, start=T0, label=utc)
    assert chart.start == T0
    assert chart.rows[0] == " " * 10 + FULL * 10
