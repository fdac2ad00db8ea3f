"""The backfills list: every backfill with a progress bar, live; cancel, resume, open its matrix."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from engine.units import GLYPHS, format_duration, glyph
from tui.screens.backfill import clock_now, report_error, span
from tui.widgets.footer import KeyFooter
from tui.widgets.table import Table

STATUS_STYLES = {"running": "yellow", "success": "green", "failed": "red", "canceled": "dim"}
_PARTIAL = " ▏▎▍▌▋▊▉"
# What matters most comes first, so a narrow terminal scrolls only the details off screen.
COLUMNS = (
    ("status", "status"),
    ("id", "id"),
    ("progress", "progress"),
    ("range", "keys"),
    ("selection", "selection"),
    ("started", "started"),
    ("took", "took"),
    ("parallel", "at once"),
)


def progress_bar(counts: dict[str, int], total: int, width: int = 10) -> str:
    """A text bar of finished runs, then counts: `███▌······  12/31  ✗1 ◐4 …14`.

    The bar covers every finished run (success, failed, canceled); the numbers say which.
    """
    done = counts.get("success", 0)
    failed = counts.get("failed", 0)
    canceled = counts.get("canceled", 0)
    running = counts.get("running", 0)
    queued = counts.get("queued", 0)
    finished = done + failed + canceled
    eighths = round(finished / total * width * 8) if total else 0
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_PARTIAL[part] if part else "")
    bar += "·" * (width - len(bar))
    parts = [f"{bar}  {done}/{total}"]
    counted = {"failed": failed, "canceled": canceled, "running": running, "queued": queued}
    tail = [f"{GLYPHS[status]}{n}" for status, n in counted.items() if n]
    if tail:
        parts.append(" ".join(tail))
    return "  ".join(parts)


def key_range(keys: list[str]) -> str:
    if not keys:
        return "–"
    return span_of(keys[0], keys[-1], len(keys))


def span_of(first: str | None, last: str | None, total: int) -> str:
    """`first … last (total)`, or the one key, or a dash."""
    if not total or first is None:
        return "–"
    if total == 1:
        return first
    return f"{first} … {last} ({total})"


def _info_range(info: dict[str, Any]) -> str:
    keys = info.get("partitions")
    if keys is not None:
        return key_range(list(keys))
    return span_of(info.get("first"), info.get("last"), int(info.get("total", 0)))


def sync_table(
    table: DataTable[Any],
    columns: list[str],
    rows: dict[str, tuple[str, ...]],
    previous: dict[str, tuple[str, ...]],
    render: Callable[[str, str], Any],
) -> None:
    """Make `table` show `rows` (by key), touching only the cells that changed since `previous`.

    When rows appear, vanish or change order the table is rebuilt, keeping the cursor's row.
    """
    if list(rows) != list(previous):
        current = None
        if table.row_count:
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for row_key, cells in rows.items():
            table.add_row(*(render(c, v) for c, v in zip(columns, cells, strict=True)), key=row_key)
        if current in rows:
            table.move_cursor(row=table.get_row_index(str(current)))
        return
    for row_key, cells in rows.items():
        for column, before, after in zip(columns, previous[row_key], cells, strict=True):
            if before != after:
                table.update_cell(row_key, column, render(column, after))


class BackfillsScreen(Screen[None]):
    """Every recent backfill, refreshed live."""

    CSS_PATH = "backfills.tcss"
    BINDINGS = [
        Binding("c", "cancel_backfill", "Cancel"),
        Binding("r", "resume_backfill", "Resume"),
        # A priority binding, so the table's own (hidden) Enter neither wins nor hides it.
        Binding("enter", "open_matrix", "Open matrix", priority=True),
        Binding("escape", "back", "Back"),
    ]
    POLL_SECONDS = 1.0
    LIMIT = 50

    def __init__(self) -> None:
        super().__init__()
        self.backfills: dict[str, dict[str, Any]] = {}
        """The latest progress of each listed backfill, by id."""
        self.polls = 0
        self._cells: dict[str, tuple[str, ...]] = {}
        self._last_error: str | None = None
        self._poll_timer: Timer | None = None

    @property
    def client(self) -> Any:
        return self.app.client  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Static(" [b]Backfills[/]", id="backfills-title")
        table: DataTable[Any] = Table(id="backfills-table", cursor_type="row")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static(
            " No backfills yet: open a partition matrix, select keys, press b.",
            id="backfills-empty",
        )
        yield KeyFooter()

    def on_mount(self) -> None:
        self.poll()

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#backfills-table", DataTable)

    def selected(self) -> dict[str, Any] | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.backfills.get(str(key))

    def row_statuses(self) -> list[str]:
        """The status of each row, top to bottom (what tests check)."""
        table = self.table
        return [
            self.backfills[str(row.key.value)]["status"]
            for row in table.ordered_rows
            if str(row.key.value) in self.backfills
        ]

    # --- refreshing --------------------------------------------------------------------------

    @work(exclusive=True, group="backfills-poll", exit_on_error=False)
    async def poll(self) -> None:
        """Re-read the backfills; re-arms itself so reads never pile up."""
        try:
            top = self.app.screen
            if top is self or isinstance(top, ModalScreen):
                # Without key lists: a year of hourly keys is 8,760 of them per backfill.
                items = await asyncio.to_thread(self.client.backfills, self.LIMIT, False)
                self._apply(items)
                self._last_error = None
        except Exception as exc:  # noqa: BLE001 - a failed read is shown once, then retried
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                report_error(self, exc)
        finally:
            # One timer at a time, however often poll() is also called directly.
            if self._poll_timer is not None:
                self._poll_timer.stop()
            if self.is_attached:
                self._poll_timer = self.set_timer(self.POLL_SECONDS, self.poll)

    def _row(self, info: dict[str, Any], now: float) -> tuple[str, ...]:
        status = str(info.get("status", "?"))
        created = info.get("created_at") or now
        ended = info.get("ended_at")
        return (
            status,
            str(info["id"]),
            progress_bar(dict(info.get("counts", {})), int(info.get("total", 0))),
            _info_range(info),
            ", ".join(info.get("selection", [])),
            f"{span(now - created)} ago",
            format_duration((ended or now) - created),
            str(info.get("max_parallel", "")),
        )

    def _render_cell(self, column: str, value: str) -> Any:
        if column == "status":
            return Text(f"{glyph(value)} {value}", style=STATUS_STYLES.get(value, ""))
        if column == "progress":
            bar, _, rest = value.partition("  ")
            failed, canceled = GLYPHS["failed"] in rest, GLYPHS["canceled"] in rest
            colour = "red" if failed else "dim" if canceled else "green"
            return Text.assemble((bar, colour), "  ", rest)
        return Text(value)  # never markup: keys and asset names may hold brackets

    def _apply(self, items: list[dict[str, Any]]) -> None:
        now = clock_now(self)
        table = self.table
        rows = {str(info["id"]): self._row(info, now) for info in items}
        self.backfills = {str(info["id"]): info for info in items}
        with self.app.batch_update():
            sync_table(table, [c for c, _ in COLUMNS], rows, self._cells, self._render_cell)
        self._cells = rows
        self.query_one("#backfills-empty").display = not rows
        self.polls += 1
        self.refresh_bindings()

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()

    # --- actions -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        info = self.selected()
        status = None if info is None else info.get("status")
        if action == "cancel_backfill":
            return True if status == "running" else None
        if action == "resume_backfill":
            return True if status in ("failed", "canceled") else None
        if action == "open_matrix":
            return True if info is not None else None
        return True

    def action_back(self) -> None:
        self.dismiss()

    def action_cancel_backfill(self) -> None:
        info = self.selected()
        if info is None:
            return
        backfill_id = str(info["id"])
        left = int(info.get("total", 0)) - sum(
            n for s, n in dict(info.get("counts", {})).items() if s in ("success", "failed")
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.act("cancel", backfill_id)

        from tui.screens.confirm import ConfirmScreen  # the app's shared yes/no dialog

        question = f"Cancel backfill {backfill_id}? Its {left} unfinished runs stop."
        self.app.push_screen(
            ConfirmScreen("Cancel backfill", question, yes="Cancel it", no="Keep"), answered
        )

    def action_resume_backfill(self) -> None:
        info = self.selected()
        if info is not None:
            self.act("resume", str(info["id"]))

    @work(group="backfills-act", exit_on_error=False)
    async def act(self, action: str, backfill_id: str) -> None:
        try:
            await asyncio.to_thread(self.client.backfill_action, action, backfill_id)
        except Exception as exc:  # noqa: BLE001
            report_error(self, exc)
            return
        self.notify(f"backfill {backfill_id}: {'canceling' if action == 'cancel' else 'resumed'}")
        self.poll()

    def action_open_matrix(self) -> None:
        from tui.screens.partitions import PartitionsScreen

        info = self.selected()
        selection = [] if info is None else list(info.get("selection", []))
        if selection:
            self.app.push_screen(PartitionsScreen(selection[0]))

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            report_error(self, event.worker.error)


__all__ = ["BackfillsScreen", "key_range", "progress_bar", "sync_table"]
