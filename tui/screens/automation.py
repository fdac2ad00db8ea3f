"""Schedules and sensors: when each fires next, what it did last, and a key to turn it on or off."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from engine.errors import EngineError
from engine.status import RunStatus, TickStatus
from engine.units import GLYPHS, glyph
from tui.feedback import PolledScreen, ask, clock_now, span
from tui.widgets import NEVER, STARTED
from tui.widgets.footer import KeyFooter
from tui.widgets.table import Table, sync_table

if TYPE_CHECKING:
    from engine.client_api import ClientAPI, ScheduleStatus, SensorStatus

RUN_STYLES: dict[str, str] = {
    RunStatus.SUCCESS: "green",
    RunStatus.FAILED: "red",
    RunStatus.RUNNING: "yellow",
    RunStatus.CANCELED: "dim",
}

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


def last_run(tick_status: TickStatus | None, run_id: str | None, run_status: str | None) -> str:
    """What the last tick did: its run's status and id, or why it started nothing."""
    if run_id:
        return f"{run_status or tick_status or STARTED} {run_id[:8]}"
    return tick_status or NEVER


def schedule_row(
    item: ScheduleStatus, now: float, run_status: str | None = None
) -> tuple[str, ...]:
    # `last_status` is the tick's (started | skipped | failed); the run's own status, once
    # known, says more, so it wins.
    run = last_run(item.last_status, item.last_run_id, run_status)
    if item.last_reason:  # a tick says why only when it started nothing (failed or skipped)
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


def sensor_row(item: SensorStatus, now: float, run_status: str | None = None) -> tuple[str, ...]:
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


def _render(column: str, value: str) -> Text:
    if column == "enabled":
        on_ = value == "on"
        return Text(f"{'●' if on_ else '○'} {value}", style="green" if on_ else "dim")
    if column == "run":
        status = value.split(" ", 1)[0].rstrip(":")
        if status in GLYPHS and status != NEVER:  # a run's status, or what a tick did
            return Text(f"{glyph(status)} {value}", style=RUN_STYLES.get(status, ""))
        return Text(f"· {value}", style="dim")
    return Text(value)  # never markup: paths and file names may hold brackets


@dataclass(frozen=True)
class AutomationState:
    schedules: list[ScheduleStatus]
    sensors: list[SensorStatus]
    run_statuses: dict[str, RunStatus]  # run id -> status, for the last runs shown


def read_automation(client: ClientAPI, known: dict[str, RunStatus]) -> AutomationState:
    """Schedules, sensors, and the status of each one's last run.

    Args:
        client: The facade.
        known: Statuses already read; finished runs never change, so they are not read again.
    """
    schedules = client.schedules()
    sensors = client.sensors()
    statuses = {k: v for k, v in known.items() if v.finished}
    items: list[ScheduleStatus | SensorStatus] = [*schedules, *sensors]
    for item in items:
        run_id = item.last_run_id
        if run_id and run_id not in statuses:
            # A run pruned from history (RunNotFound): the tick's own status still shows.
            with contextlib.suppress(EngineError):
                statuses[run_id] = RunStatus(client.run(run_id).status)
    return AutomationState(schedules, sensors, statuses)


class AutomationScreen(PolledScreen[AutomationState]):
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
        self.schedules: dict[str, ScheduleStatus] = {}
        """The latest status of each schedule, by name."""
        self.sensors: dict[str, SensorStatus] = {}
        """The latest status of each sensor, by name."""
        self._cells: dict[str, dict[str, tuple[str, ...]]] = {"schedule": {}, "sensor": {}}
        self._runs: dict[str, RunStatus] = {}  # last runs' statuses

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

    def poll_read(self) -> Callable[[], AutomationState]:
        client, known = self.client, self._runs
        return lambda: read_automation(client, known)

    def poll_apply(self, data: AutomationState) -> None:
        self._runs = runs = data.run_statuses
        now = clock_now(self)
        self.schedules = {item.name: item for item in data.schedules}
        self.sensors = {item.name: item for item in data.sensors}
        schedules = {
            name: schedule_row(item, now, runs.get(item.last_run_id or ""))
            for name, item in self.schedules.items()
        }
        sensors = {
            name: sensor_row(item, now, runs.get(item.last_run_id or ""))
            for name, item in self.sensors.items()
        }
        self._apply("schedule", SCHEDULE_COLUMNS, schedules)
        self._apply("sensor", SENSOR_COLUMNS, sensors)
        self.refresh_bindings()

    def _apply(
        self, kind: str, columns: tuple[tuple[str, str], ...], rows: dict[str, tuple[str, ...]]
    ) -> None:
        table = self.query_one(f"#{kind}s-table", DataTable)
        note = self.query_one(f"#{kind}s-note", Static)
        with self.app.batch_update():
            sync_table(table, [c for c, _ in columns], rows, self._cells[kind], _render)
        self._cells[kind] = rows
        note.update(f" No {kind}s are defined in the pipelines folder.")
        note.display = not rows
        table.display = True

    # --- actions -----------------------------------------------------------------------------

    def _selected(self) -> tuple[str, str, bool] | None:
        """(kind, name, on) of the row under the focused table's cursor."""
        table = self.focused if isinstance(self.focused, DataTable) else None
        if table is None or table.id not in _KIND or not table.row_count:
            return None
        kind = _KIND[table.id]
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        item = (self.schedules if kind == "schedule" else self.sensors).get(name)
        return None if item is None else (kind, item.name, item.enabled)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_enabled":
            return True if self._selected() is not None else None
        return True

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def action_toggle_enabled(self) -> None:
        selected = self._selected()
        if selected is not None:
            kind, name, enabled = selected
            self.toggle(kind, name, not enabled)

    @work(group="automation-toggle", exit_on_error=False)
    async def toggle(self, kind: str, name: str, enabled: bool) -> None:
        client = self.client

        def toggle() -> bool:
            client.set_enabled(kind, name, enabled)
            return True

        if await ask(self, toggle, refused=Exception) is None:
            return
        self.notify(f"{kind} {name} {'on' if enabled else 'off'}")
        self.poll()


__all__ = [
    "AutomationScreen",
    "AutomationState",
    "last_run",
    "read_automation",
    "relative",
    "schedule_row",
    "sensor_row",
]
