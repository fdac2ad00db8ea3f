"""Schedules and sensors: when each fires next, what it did last, and a key to turn it on or off.

Sensors of every kind share one table: a file sensor shows its folder and the files it saw, a
custom or built-in sensor its interval and its last tick; the ticks of the sensor under the
cursor are listed below it."""

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
from engine.status import RunStatus, StepStatus, TickStatus
from engine.units import GLYPHS, glyph
from tui.feedback import PolledScreen, ask, clock_now, span
from tui.widgets import NEVER, STARTED
from tui.widgets.footer import KeyFooter
from tui.widgets.table import Table, sync_table

if TYPE_CHECKING:
    from engine.client_api import ClientAPI, ScheduleStatus, SensorStatus, SensorTickView

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
    ("watch", "watches / every"),
    ("target", "target"),
    ("seen", "files seen"),
    ("file", "last file / tick"),
    ("at", "last"),
    ("next", "next tick"),
    ("run", "last run"),
)
TICK_COLUMNS = (
    ("at", "tick"),
    ("took", "took"),
    ("result", "result"),
    ("runs", "runs"),
)
TICK_HISTORY = 30  # ticks listed for the selected sensor
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


def tick_result(tick: SensorTickView) -> str:
    """What a tick did, in a few words: its runs, why it skipped, or its error."""
    return tick.summary(_one_line)


def last_sensor_run(item: SensorStatus) -> str | None:
    """The run a sensor started last: its last file's, or its last tick's last."""
    if item.kind == "file" or item.last_tick is None:
        return item.last_run_id
    return item.last_tick.run_ids[-1] if item.last_tick.run_ids else None


def sensor_row(item: SensorStatus, now: float, run_status: str | None = None) -> tuple[str, ...]:
    on = "on" if item.enabled else "off"
    if item.kind == "file":
        return (
            on,
            item.name,
            f"{item.path}  {item.pattern}",
            item.target,
            f"{item.files_seen:,}",
            item.last_file or "–",
            relative(item.last_seen_at, now),
            "–",
            last_run(None, item.last_run_id, run_status),
        )
    tick = item.last_tick
    every = f"every {span(item.interval)}" if item.interval else "–"
    if item.kind == "builtin":
        every += " (built-in)"
    run_id = last_sensor_run(item)
    tick_status = None if tick is None or run_id else tick.status
    return (
        on,
        item.name,
        every,
        item.target,
        "–",
        tick_result(tick) if tick is not None else "–",
        relative(tick.started_at if tick else None, now),
        relative(item.next_tick_at, now) if item.enabled else "– (off)",
        last_run(tick_status, run_id, run_status),
    )


def tick_row(tick: SensorTickView, now: float) -> tuple[str, ...]:
    runs = ", ".join(run_id[:8] for run_id in tick.run_ids[:3])
    if len(tick.run_ids) > 3:
        runs += f" +{len(tick.run_ids) - 3}"
    return (relative(tick.started_at, now), f"{tick.duration:.1f}s", tick_result(tick), runs)


def _render(column: str, value: str) -> Text:
    if column == "enabled":
        on_ = value == "on"
        return Text(f"{'●' if on_ else '○'} {value}", style="green" if on_ else "dim")
    if column == "result":
        status = value.split(" ", 1)[0].rstrip(":")
        # The first word of `tick_result`, as the status its glyph shows.
        tick = {
            "requested": StepStatus.SUCCESS,
            "skipped": StepStatus.SKIPPED,
            "failed": StepStatus.FAILED,
        }.get(status)
        if tick is not None:
            return Text(f"{glyph(tick)} {value}", style=RUN_STYLES.get(tick, "dim"))
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
    ticks: tuple[str, list[SensorTickView]] | None = None  # the selected sensor's ticks


def read_automation(
    client: ClientAPI, known: dict[str, RunStatus], selected: str | None = None
) -> AutomationState:
    """Schedules, sensors, the status of each one's last run, and the ticks of the sensor
    `selected` (if it has ticks: a custom or built-in sensor).

    Args:
        client: The facade.
        known: Statuses already read; finished runs never change, so they are not read again.
        selected: The sensor under the cursor.
    """
    schedules = client.schedules()
    sensors = client.sensors()
    statuses = {k: v for k, v in known.items() if v.finished}
    run_ids = [item.last_run_id for item in schedules] + [last_sensor_run(s) for s in sensors]
    for run_id in run_ids:
        if run_id and run_id not in statuses:
            # A run pruned from history (RunNotFound): the tick's own status still shows.
            with contextlib.suppress(EngineError):
                statuses[run_id] = RunStatus(client.run(run_id).status)
    ticks = None
    chosen = next((s for s in sensors if s.name == selected), None)
    if chosen is not None and chosen.kind != "file":
        with contextlib.suppress(EngineError):
            ticks = (chosen.name, client.sensor_ticks(chosen.name, TICK_HISTORY))
    return AutomationState(schedules, sensors, statuses, ticks)


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
        self._tick_cells: dict[str, tuple[str, ...]] = {}
        self._read_for: str | None = None
        """The sensor under the cursor when the last read began (whose ticks it reads)."""
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
        ticks: DataTable[Any] = Table(id="ticks-table", cursor_type="none")
        for key, label in TICK_COLUMNS:
            ticks.add_column(label, key=key)
        yield ticks
        yield KeyFooter()

    def on_mount(self) -> None:
        for note in self.query(".automation-note"):
            note.display = False
        self.query_one("#ticks-table", DataTable).display = False
        self.poll()

    # --- refreshing --------------------------------------------------------------------------

    def poll_read(self) -> Callable[[], AutomationState]:
        client, known, selected = self.client, self._runs, self._selected_sensor()
        self._read_for = selected
        return lambda: read_automation(client, known, selected)

    def _selected_sensor(self) -> str | None:
        table = self.query_one("#sensors-table", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

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
            name: sensor_row(item, now, runs.get(last_sensor_run(item) or ""))
            for name, item in self.sensors.items()
        }
        self._apply("schedule", SCHEDULE_COLUMNS, schedules)
        self._apply("sensor", SENSOR_COLUMNS, sensors)
        self._apply_ticks(data.ticks, now)
        self.refresh_bindings()

    def _apply_ticks(self, ticks: tuple[str, list[SensorTickView]] | None, now: float) -> None:
        table = self.query_one("#ticks-table", DataTable)
        table.display = ticks is not None
        if ticks is None:
            return
        name, items = ticks
        table.border_title = f"Ticks of {name}" + ("" if items else ": none yet")
        rows = {str(i): tick_row(tick, now) for i, tick in enumerate(items)}
        with self.app.batch_update():
            sync_table(table, [c for c, _ in TICK_COLUMNS], rows, self._tick_cells, _render)
        self._tick_cells = rows

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
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()
        if event.data_table.id == "sensors-table" and self._selected_sensor() != self._read_for:
            self.poll()  # the ticks of the sensor now under the cursor

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
    "tick_result",
    "tick_row",
]
