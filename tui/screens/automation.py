"""Schedules and sensors: when each fires next, what it did last, and a key to turn it on or off."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from engine.errors import EngineError
from engine.units import glyph
from tui.screens.backfill import clock_now, report_error, span
from tui.screens.backfills import sync_table
from tui.widgets.footer import KeyFooter
from tui.widgets.table import Table

# A tick's run, or "skipped" (a tick that started nothing: its previous run was still going)
# or "started" (a tick that started a run whose status is not known yet).
RUN_STATUSES = frozenset(
    {"success", "failed", "running", "queued", "canceled", "skipped", "started"}
)
RUN_STYLES = {"success": "green", "failed": "red", "running": "yellow", "canceled": "dim"}
_FINISHED = frozenset({"success", "failed", "canceled"})

# On/off leads: it is what `t` changes, and it must stay visible on a narrow terminal.
SCHEDULE_COLUMNS = (
    ("enabled", "on/off"),
    ("name", "schedule"),
    ("cron", "cron"),
    ("target", "target"),
    ("next", "next tick"),
    ("last", "last tick"),
    ("run", "last run"),
)
SENSOR_COLUMNS = (
    ("enabled", "on/off"),
    ("name", "sensor"),
    ("watch", "path / pattern"),
    ("target", "target"),
    ("seen", "files seen"),
    ("file", "last file"),
    ("at", "last seen"),
    ("run", "last run"),
)
_KIND = {"schedules-table": "schedule", "sensors-table": "sensor"}


def _stamp(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    return value.timestamp() if isinstance(value, datetime) else float(value)


def relative(value: datetime | float | None, now: float) -> str:
    """`in 11h 17m`, `5m ago`, or `–`."""
    at = _stamp(value)
    if at is None:
        return "–"
    delta = at - now
    return f"in {span(delta)}" if delta >= 0 else f"{span(-delta)} ago"


def _one_line(text: str, limit: int = 40) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit] + "…" if len(line) > limit else line


def last_run(tick_status: str | None, run_id: str | None, run_status: str | None) -> str:
    """What the last tick did: its run's status and id, or why it started nothing."""
    if run_id:
        return f"{run_status or tick_status or 'started'} {run_id[:8]}"
    return tick_status or "never"


def schedule_row(item: Any, now: float, run_status: str | None = None) -> tuple[str, ...]:
    # `last_status` is the tick's (started | skipped | failed); the run's own status, once
    # known, says more, so it wins.
    run = last_run(item.last_status, item.last_run_id, run_status)
    if item.last_reason and item.last_status in ("failed", "skipped"):
        run += f": {_one_line(item.last_reason)}"
    return (
        "on" if item.enabled else "off",
        item.name,
        item.cron + ("  catchup" if item.catchup else ""),
        item.target,
        relative(item.next_tick, now) if item.enabled else "– (off)",
        relative(item.last_tick, now),
        run,
    )


def sensor_row(item: Any, now: float, run_status: str | None = None) -> tuple[str, ...]:
    return (
        "on" if item.enabled else "off",
        item.name,
        f"{item.path}  {item.pattern}",
        item.target,
        f"{item.files_seen:,}",
        item.last_file or "–",
        relative(item.last_seen_at, now),
        last_run(None, item.last_run_id, run_status),
    )


def _render(column: str, value: str) -> Any:
    if column == "enabled":
        on_ = value == "on"
        return Text(f"{'●' if on_ else '○'} {value}", style="green" if on_ else "dim")
    if column == "run":
        status = value.split(" ", 1)[0].rstrip(":")
        if status in RUN_STATUSES:
            return Text(f"{glyph(status)} {value}", style=RUN_STYLES.get(status, ""))
        return Text(f"· {value}", style="dim")
    return Text(value)  # never markup: paths and file names may hold brackets


@dataclass(frozen=True)
class AutomationState:
    schedules: list[Any] | None  # None: the client cannot list them
    sensors: list[Any] | None
    run_statuses: dict[str, str]  # run id -> status, for the last runs shown


def read_automation(client: Any, known: dict[str, str]) -> AutomationState:
    """Schedules, sensors, and the status of each one's last run.

    Args:
        client: The facade (`schedules`/`sensors` may be missing on an older one).
        known: Statuses already read; finished runs never change, so they are not read again.
    """
    schedules_of = getattr(client, "schedules", None)
    sensors_of = getattr(client, "sensors", None)
    schedules = list(schedules_of()) if callable(schedules_of) else None
    sensors = list(sensors_of()) if callable(sensors_of) else None
    statuses = {k: v for k, v in known.items() if v in _FINISHED}
    read_run = getattr(client, "run", None)
    for item in [*(schedules or []), *(sensors or [])]:
        run_id = getattr(item, "last_run_id", None)
        if run_id and run_id not in statuses and callable(read_run):
            # A run pruned from history (RunNotFound): the tick's own status still shows.
            with contextlib.suppress(EngineError):
                statuses[run_id] = str(read_run(run_id).status)
    return AutomationState(schedules, sensors, statuses)


class AutomationScreen(Screen[None]):
    """Every schedule and sensor, refreshed live; `t` turns the selected one on or off."""

    CSS_PATH = "automation.tcss"
    BINDINGS = [
        Binding("t", "toggle_enabled", "Toggle on/off"),
        Binding("tab", "app.focus_next", "Next table"),
        Binding("escape", "back", "Back"),
    ]
    POLL_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.schedules: dict[str, Any] = {}
        """The latest status of each schedule, by name."""
        self.sensors: dict[str, Any] = {}
        """The latest status of each sensor, by name."""
        self.available = {"schedule": True, "sensor": True}
        self.polls = 0
        self._cells: dict[str, dict[str, tuple[str, ...]]] = {"schedule": {}, "sensor": {}}
        self._last_error: str | None = None
        self._poll_timer: Timer | None = None
        self._runs: dict[str, str] = {}  # last runs' statuses

    @property
    def client(self) -> Any:
        return self.app.client  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Static(" [b]Automation[/]  schedules and sensors", id="automation-heading")
        for kind, columns in (("schedule", SCHEDULE_COLUMNS), ("sensor", SENSOR_COLUMNS)):
            table: DataTable[Any] = Table(id=f"{kind}s-table", cursor_type="row")
            table.border_title = f"{kind.title()}s"
            for key, label in columns:
                table.add_column(label, key=key)
            yield table
            yield Static("", id=f"{kind}s-note", classes="automation-note")
        yield KeyFooter()

    def on_mount(self) -> None:
        for note in self.query(".automation-note"):
            note.display = False
        self.poll()

    # --- refreshing --------------------------------------------------------------------------

    @work(exclusive=True, group="automation-poll", exit_on_error=False)
    async def poll(self) -> None:
        """Re-read schedules and sensors; re-arms itself so reads never pile up."""
        try:
            top = self.app.screen
            if top is self or isinstance(top, ModalScreen):
                state = await asyncio.to_thread(read_automation, self.client, self._runs)
                self._runs = state.run_statuses
                self._apply("schedule", state.schedules)
                self._apply("sensor", state.sensors)
                self.polls += 1
                self._last_error = None
                self.refresh_bindings()
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

    def _apply(self, kind: str, items: list[Any] | None) -> None:
        table = self.query_one(f"#{kind}s-table", DataTable)
        note = self.query_one(f"#{kind}s-note", Static)
        self.available[kind] = items is not None
        if items is None:
            note.update(f" {kind.title()}s: not available from this engine.")
            note.display, table.display = True, False
            return
        now = clock_now(self)
        make_row, columns = (
            (schedule_row, SCHEDULE_COLUMNS) if kind == "schedule" else (sensor_row, SENSOR_COLUMNS)
        )
        by_name = {item.name: item for item in items}
        rows = {
            name: make_row(item, now, self._runs.get(item.last_run_id or ""))
            for name, item in by_name.items()
        }
        if kind == "schedule":
            self.schedules = by_name
        else:
            self.sensors = by_name
        with self.app.batch_update():
            sync_table(table, [c for c, _ in columns], rows, self._cells[kind], _render)
        self._cells[kind] = rows
        note.update(f" No {kind}s are defined in the pipelines folder.")
        note.display = not rows
        table.display = True

    # --- actions -----------------------------------------------------------------------------

    def _selected(self) -> tuple[str, Any] | None:
        table = self.focused if isinstance(self.focused, DataTable) else None
        if table is None or table.id not in _KIND or not table.row_count:
            return None
        kind = _KIND[table.id]
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        item = (self.schedules if kind == "schedule" else self.sensors).get(str(name))
        return None if item is None else (kind, item)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_enabled":
            return True if self._selected() is not None else None
        return True

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_enabled(self) -> None:
        selected = self._selected()
        if selected is not None:
            kind, item = selected
            self.toggle(kind, item.name, not item.enabled)

    @work(group="automation-toggle", exit_on_error=False)
    async def toggle(self, kind: str, name: str, enabled: bool) -> None:
        try:
            await asyncio.to_thread(self.client.set_enabled, kind, name, enabled)
        except Exception as exc:  # noqa: BLE001
            report_error(self, exc)
            return
        self.notify(f"{kind} {name} {'on' if enabled else 'off'}")
        self.poll()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            report_error(self, event.worker.error)


__all__ = [
    "AutomationScreen",
    "AutomationState",
    "last_run",
    "read_automation",
    "relative",
    "schedule_row",
    "sensor_row",
]
