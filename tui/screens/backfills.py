"""The backfills list: every backfill with a progress bar, live; cancel, resume, open its matrix."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from engine.status import BackfillStatus, RunStatus
from engine.units import format_duration, glyph
from tui.feedback import PolledScreen, ask, clock_now, span
from tui.widgets.footer import KeyFooter
from tui.widgets.table import Table, sync_table

STATUS_STYLES: dict[str, str] = {
    BackfillStatus.RUNNING: "yellow",
    BackfillStatus.SUCCESS: "green",
    BackfillStatus.FAILED: "red",
    BackfillStatus.CANCELED: "dim",
}
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

    `counts` are keys by the status of the run that covers them. The bar covers every
    finished run (success, failed, canceled); the numbers say which.
    """
    done = counts.get(RunStatus.SUCCESS, 0)
    ended = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED)
    finished = sum(counts.get(status, 0) for status in ended)
    eighths = round(finished / total * width * 8) if total else 0
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_PARTIAL[part] if part else "")
    bar += "·" * (width - len(bar))
    parts = [f"{bar}  {done}/{total}"]
    shown = (RunStatus.FAILED, RunStatus.CANCELED, RunStatus.RUNNING, RunStatus.QUEUED)
    tail = [f"{glyph(status)}{counts[status]}" for status in shown if counts.get(status)]
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


class BackfillsScreen(PolledScreen[list[dict[str, Any]]]):
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
        self._cells: dict[str, tuple[str, ...]] = {}

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

    def poll_read(self) -> Callable[[], list[dict[str, Any]]]:
        # Without key lists: a year of hourly keys is 8,760 of them per backfill.
        return partial(self.client.backfills, self.LIMIT, with_keys=False)

    def poll_apply(self, data: list[dict[str, Any]]) -> None:
        now = clock_now(self)
        table = self.table
        rows = {str(info["id"]): self._row(info, now) for info in data}
        self.backfills = {str(info["id"]): info for info in data}
        with self.app.batch_update():
            sync_table(table, [c for c, _ in COLUMNS], rows, self._cells, self._render_cell)
        self._cells = rows
        self.query_one("#backfills-empty").display = not rows
        self.refresh_bindings()

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

    def _render_cell(self, column: str, value: str) -> Text:
        if column == "status":
            return Text(f"{glyph(value)} {value}", style=STATUS_STYLES.get(value, ""))
        if column == "progress":
            bar, _, rest = value.partition("  ")
            failed = glyph(RunStatus.FAILED) in rest
            canceled = glyph(RunStatus.CANCELED) in rest
            colour = "red" if failed else "dim" if canceled else "green"
            return Text.assemble((bar, colour), "  ", rest)
        return Text(value)  # never markup: keys and asset names may hold brackets

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()

    # --- actions -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        info = self.selected()
        status = None if info is None else info.get("status")
        if action == "cancel_backfill":
            return True if status == BackfillStatus.RUNNING else None
        if action == "resume_backfill":
            return True if status in (BackfillStatus.FAILED, BackfillStatus.CANCELED) else None
        if action == "open_matrix":
            return True if info is not None else None
        return True

    def action_cancel_backfill(self) -> None:
        info = self.selected()
        if info is None:
            return
        backfill_id = str(info["id"])
        counts: dict[str, int] = dict(info.get("counts", {}))
        ended = counts.get(RunStatus.SUCCESS, 0) + counts.get(RunStatus.FAILED, 0)
        left = int(info.get("total", 0)) - ended

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
        command = partial(self.client.backfill_action, action, backfill_id)
        if await ask(self, command, refused=Exception) is None:
            return
        self.notify(f"backfill {backfill_id}: {'canceling' if action == 'cancel' else 'resumed'}")
        self.poll()

    def action_open_matrix(self) -> None:
        from tui.screens.partitions import PartitionsScreen

        info = self.selected()
        selection = [] if info is None else list(info.get("selection", []))
        if selection:
            self.app.push_screen(PartitionsScreen(selection[0]))


__all__ = ["BackfillsScreen", "key_range", "progress_bar", "span_of"]
