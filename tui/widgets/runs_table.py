"""Recent runs, newest first, kept live by diffing on run id (never rebuilt on a change)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets.data_table import RowDoesNotExist

from engine.client import RunView
from engine.status import RunStatus, StepStatus
from engine.units import format_duration
from tui.widgets import STYLES, glyph, shorten
from tui.widgets.table import Table

PAGE = 200
"""Rows shown at first, and added each time the cursor reaches the bottom."""
KEEP = 2_000
"""Runs kept in memory for filtering, beyond the rows shown."""
TARGET_WIDTH = 48
"""Widest target (+ partition) cell; narrower panes get less (see `_fit`)."""
OTHER_COLUMNS = 56
"""Cells the other columns take, padding included, when a run is running."""
COLUMNS = (
    ("status", " "),
    ("id", "id"),
    ("target", "target"),
    ("trigger", "trigger"),
    ("start", "start"),
    ("duration", "time"),
    ("steps", "steps"),
)


def progress_bar(done: int, total: int, width: int = 6) -> str:
    """`███▌░░` with eighths, for a running run's steps."""
    if total <= 0:
        return "░" * width
    eighths = round(done / total * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    return bar.ljust(width, "░")[:width]


class _RunId(str):
    """A short id cell that remembers its run's creation time (DataTable sorts by cell values)."""

    created_at: float

    def __new__(cls, text: str, created_at: float) -> _RunId:
        cell = super().__new__(cls, text)
        cell.created_at = created_at
        return cell


class RunsTable(Table):
    """The runs pane: glyph, id, target (+ partition), trigger, start, duration, steps."""

    HELP_TITLE = "Runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open run", show=True),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "First run", show=False),
        Binding("G", "scroll_bottom", "Last run", show=False),
    ]

    class OlderWanted(Message):
        """The cursor reached the last row: load `limit` runs older than the `offset` newest."""

        def __init__(self, offset: int, limit: int) -> None:
            super().__init__()
            self.offset = offset
            self.limit = limit

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        *,
        id: str | None = None,  # noqa: A002 - Textual's name for it
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self.clock = clock or time.time
        self.runs: dict[str, RunView] = {}
        self.filter_text = ""
        self.limit = PAGE
        self.exhausted = False
        """True once a page of older runs came back short: there is nothing older."""
        self._shown: dict[str, tuple[object, ...]] = {}
        self.target_width = TARGET_WIDTH

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    # --- data ---------------------------------------------------------------------------------

    @property
    def selected_run(self) -> RunView | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except RowDoesNotExist:
            return None
        return self.runs.get(str(key.value))

    def update_runs(self, runs: Iterable[RunView]) -> None:
        """Add or update `runs` (newer versions replace older ones) and redraw what changed."""
        for run in runs:
            self.runs[run.id] = run
        if len(self.runs) > max(KEEP, self.limit + PAGE):
            self._forget_oldest()
        self._sync()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self.limit = PAGE
        self._sync()
        if self.row_count:
            self.move_cursor(row=0)

    def on_resize(self) -> None:
        width = max(min(self.size.width - OTHER_COLUMNS, TARGET_WIDTH), 12)
        if width != self.target_width:
            self.target_width = width
            with self.app.batch_update():
                for run_id in self._shown:
                    self._update(self.runs[run_id])

    def tick(self) -> None:
        """Redraw the durations of running runs (called every second)."""
        for run_id in self._shown:
            run = self.runs[run_id]
            if not run.finished:
                self._update(run)

    def _forget_oldest(self) -> None:
        ordered = sorted(self.runs.values(), key=lambda r: r.created_at, reverse=True)
        keep = max(KEEP, self.limit + PAGE)
        for run in ordered[keep:]:
            if run.finished:
                del self.runs[run.id]

    def matches(self, run: RunView) -> bool:
        if not self.filter_text:
            return True
        hay = " ".join(
            (run.id, run.target, run.partition or "", run.status, run.trigger, glyph(run.status))
        ).lower()
        return all(word in hay for word in self.filter_text.split())

    def visible_runs(self) -> list[RunView]:
        ordered = sorted(self.runs.values(), key=lambda r: (r.created_at, r.id), reverse=True)
        return [run for run in ordered if self.matches(run)][: self.limit]

    def _sync(self) -> None:
        wanted = self.visible_runs()
        wanted_ids = {run.id for run in wanted}
        selected = self.selected_run
        at_top = self.cursor_row <= 0
        added = False
        with self.app.batch_update():
            for run_id in [k for k in self._shown if k not in wanted_ids]:
                self.remove_row(run_id)
                del self._shown[run_id]
            for run in wanted:
                if run.id in self._shown:
                    self._update(run)
                else:
                    cells = self._cells(run)
                    self.add_row(*cells, key=run.id)
                    self._shown[run.id] = cells
                    added = True
            if added:
                self.sort("id", key=lambda cell: cell.created_at, reverse=True)
                # Keep the cursor on the run it was on, unless it sat on the newest run.
                if selected is not None and selected.id in self._shown and not at_top:
                    self.move_cursor(row=self.get_row_index(selected.id), scroll=False)

    def _update(self, run: RunView) -> None:
        cells = self._cells(run)
        old = self._shown[run.id]
        for (key, _label), new, before in zip(COLUMNS, cells, old, strict=True):
            if new != before:
                self.update_cell(run.id, key, new)
        self._shown[run.id] = cells

    def _cells(self, run: RunView) -> tuple[object, ...]:
        room = self.target_width
        if run.partition:
            # The partition says which run this is more than the end of a long target does.
            part = shorten(run.partition, max(room // 2, 10))
            target = Text(shorten(run.target, max(room - len(part) - 1, 4)))
            target.append(" " + part, "dim")
        else:
            target = Text(shorten(run.target, room))
        start = run.started_at or run.created_at
        end = run.ended_at if run.finished else None
        took = None
        if run.started_at is not None:
            took = (end if end is not None else self.clock()) - run.started_at
        total = len(run.steps)
        # While it runs: how far along it is; once finished: how much of it succeeded (as
        # `dagtop runs` counts), so a failed run never reads "1/1".
        if run.finished:
            done = sum(1 for st in run.steps if st.status == StepStatus.SUCCESS)
        else:
            done = sum(1 for st in run.steps if StepStatus(st.status).finished)
        steps = Text(f"{done}/{total}")
        if run.status == RunStatus.RUNNING:
            steps = Text(progress_bar(done, total), STYLES[RunStatus.RUNNING]) + " " + steps
        return (
            Text(glyph(run.status), STYLES.get(run.status, "")),
            _RunId(run.id[:6], run.created_at),
            target,
            Text(run.trigger),
            Text(time.strftime("%H:%M:%S", time.localtime(start))),
            Text(format_duration(took)),
            steps,
        )

    # --- paging -------------------------------------------------------------------------------

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        if self.row_count and self.cursor_row == self.row_count - 1:
            self._more()

    def _more(self) -> None:
        matching = sum(1 for run in self.runs.values() if self.matches(run))
        if matching > self.limit:
            self.limit += PAGE
            self._sync()
        elif not self.exhausted and self.row_count >= PAGE:
            self.limit += PAGE
            self.post_message(self.OlderWanted(offset=len(self.runs), limit=PAGE))


__all__ = ["RunsTable", "progress_bar"]
