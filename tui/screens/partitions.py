"""The partitions screen: the matrix of a group's partitioned assets, live, with backfills.

Rows are the assets of the asset's group that share its partitions definition; columns are the
keys. Unpartitioned assets that read every key are listed below the matrix. The screen polls
`client.partition_changes` off the event loop: the first poll reads every state, each later one
only the states that changed since its cursor (nothing, while nothing runs), and the matrix
repaints only the cells that changed, so a running backfill fills in as it goes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import Static

from engine.authoring.backfill_policy import covers
from engine.authoring.multi_partitions import MultiPartitions
from engine.client import RunRequest
from engine.errors import EngineError
from engine.status import PartitionStatus
from tui.feedback import PolledScreen, ask, clock_now, error_text, report_error, span
from tui.screens.backfill import BackfillDialog
from tui.screens.partition_grid import Grid, worst
from tui.widgets import CHECK_FAILED
from tui.widgets.footer import KeyFooter
from tui.widgets.partition_matrix import GLYPHS, PartitionMatrix, status_glyph

if TYPE_CHECKING:
    from engine.client_api import ClientAPI, PartitionChanges, PartitionCursor, PartitionState

_NOUN = {"daily": "day", "hourly": "hour", "static": "key"}
_RUN_SEARCH = 200  # recent runs searched for a cell's latest run
_COLOURS: dict[str, str] = {
    PartitionStatus.MATERIALIZED: "$success",
    PartitionStatus.STALE: "$warning",
    CHECK_FAILED: "$error",
    PartitionStatus.FAILED: "$error",
    PartitionStatus.RUNNING: "$accent",
    PartitionStatus.MISSING: "dim",
}
_UNKNOWN = "unknown"  # a cell not read yet, in the count under a grouped cursor


@dataclass(frozen=True)
class MatrixLayout:
    """What the matrix shows, read once from the manifest."""

    group: str
    rows: list[str]
    keys: list[str]
    kind: str
    description: str
    downstream: list[str] = field(default_factory=list)
    grid: Grid | None = None
    """How the keys of MultiPartitions assets map to columns and rows (None otherwise)."""

    @property
    def assets(self) -> list[str]:
        """The partitioned assets shown (`rows` are these for one-dimensional partitions)."""
        return list(self.grid.assets) if self.grid is not None else self.rows


def _asset_name(term: str) -> str:
    """`orders*`, `+orders` and `*orders*` all mean the asset `orders` here."""
    return term.strip().strip("*+")


def read_layout(client: ClientAPI, target: str) -> MatrixLayout:
    """Resolve `target` (an asset, or `group:NAME`) to the matrix's rows and keys.

    Raises:
        EngineError: the asset does not exist or is not partitioned.
    """
    manifest = client.load()
    name = _asset_name(target)
    if name.startswith("group:"):
        group = name[len("group:") :]
        members = [n for n, s in manifest.assets.items() if s.group == group and s.partitions]
        if not members:
            raise EngineError(f"group {group!r} has no partitioned asset", title="Not partitioned")
        name = members[0]
    spec = manifest.assets.get(name)
    if spec is None:
        raise EngineError(f"unknown asset {name!r}", title="Unknown asset")
    pdef = spec.partitions_def
    if pdef is None or spec.partitions is None:
        raise EngineError(f"asset {name!r} is not partitioned", title="Not partitioned")
    rows = [
        n
        for n, s in manifest.assets.items()
        if s.group == spec.group and s.partitions == spec.partitions
    ]
    below = manifest.downstream()
    downstream = list(
        dict.fromkeys(
            d for row in rows for d in below.get(row, ()) if manifest.assets[d].partitions is None
        )
    )
    if isinstance(pdef, MultiPartitions):
        grid = Grid.of(pdef, rows)
        return MatrixLayout(
            group=spec.group,
            rows=grid.rows,
            keys=list(grid.columns),
            kind=grid.kind,
            description=pdef.describe(),
            downstream=downstream,
            grid=grid,
        )
    return MatrixLayout(
        group=spec.group,
        rows=rows,
        keys=list(pdef.keys()),
        kind=str(spec.partitions.get("kind", "static")),
        description=pdef.describe(),
        downstream=downstream,
    )


def latest_run_of(
    client: ClientAPI, asset: str, key: str, fallback: str | None, keys: Sequence[str] = ()
) -> str | None:
    """The newest run that had a step for `asset` at partition `key` (alone, or in a range
    of `keys`, the asset's keys in order).

    The cell's state only names the run of its newest materialization; a failed or running key
    has a newer run than that, so recent runs are searched first.
    """
    position = {k: i for i, k in enumerate(keys)}
    for run in client.runs(limit=_RUN_SEARCH):
        if covers(run.partition, key, position) and any(step.key == asset for step in run.steps):
            return str(run.id)
    return fallback


class PartitionsScreen(PolledScreen[tuple["MatrixLayout", "PartitionChanges"]]):
    """One group's partition matrix: select keys, backfill them, watch them fill in."""

    CSS_PATH = "partitions.tcss"
    AUTO_FOCUS = "PartitionMatrix"
    BINDINGS = [
        Binding("b", "backfill", "Backfill", tooltip="Backfill the selected keys"),
        Binding("m", "materialize", "Materialize", tooltip="Materialize the cursor's key"),
        Binding("enter", "open_run", "Open run", tooltip="Open the cell's latest run"),
        Binding("escape", "back", "Back"),
    ]
    POLL_SECONDS = 0.75
    """How often the statuses are re-read."""

    def __init__(self, asset: str) -> None:
        """
        Args:
            asset: The asset whose group is shown (or `group:NAME`); the cursor starts on it.
        """
        super().__init__()
        self.asset = asset
        self.layout_info: MatrixLayout | None = None
        """The rows and keys, once read from the manifest."""
        self._downstream: dict[str, PartitionState | None] = {}
        self._cursor: PartitionCursor | None = None  # where the last poll's changes ended

    def compose(self) -> ComposeResult:
        yield Static(f" Partitions  {escape(self.asset)}", id="partitions-title")
        yield PartitionMatrix(id="partitions-matrix")
        yield Static("", id="partitions-downstream")
        yield Static("", id="partitions-cursor")
        yield Static("", id="partitions-selection")
        legend = "  ".join(f"[{_COLOURS[s]}]{g}[/] {s}" for s, g in GLYPHS.items())
        yield Static(f" {legend}  · not loaded", id="partitions-legend")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.load_layout()

    @property
    def matrix(self) -> PartitionMatrix:
        return self.query_one(PartitionMatrix)

    # --- loading and polling -----------------------------------------------------------------

    @work(exclusive=True, group="partitions-layout", exit_on_error=False)
    async def load_layout(self) -> None:
        try:
            info = await asyncio.to_thread(read_layout, self.client, self.asset)
        except Exception as exc:  # noqa: BLE001 - every failure is shown, none crashes the UI
            report_error(self, exc)
            self.query_one("#partitions-title", Static).update(
                f" Partitions  {escape(self.asset)}  [$error]{escape(error_text(exc))}[/]"
            )
            return
        self._apply_layout(info)
        self.matrix.move_to_row(_asset_name(self.asset))
        self.refresh_bindings()
        self.poll()

    def _apply_layout(self, info: MatrixLayout) -> None:
        self.layout_info = info
        grid = info.grid
        self.matrix.set_layout(info.rows, info.keys, info.kind, grid.labels if grid else None)
        count = f"{len(info.keys):,} {_NOUN.get(info.kind, 'key')}s"
        title = f" [b]Partitions[/]  group [b]{escape(info.group)}[/]  {escape(info.description)}"
        if grid is not None:
            # The shape first: the two definitions' description runs past most terminals.
            total = len(info.keys) * len(grid.row_keys)
            count = (
                f"{escape(grid.column_dimension)} × {escape(grid.row_dimension)}: {count} × "
                f"{len(grid.row_keys):,} = {total:,} keys"
            )
            title = f" [b]Partitions[/]  group [b]{escape(info.group)}[/]  {count}"
            count = f"[dim]{escape(info.description)}[/]"
        self.query_one("#partitions-title", Static).update(f"{title}  {count}")

    def poll_read(self) -> Callable[[], tuple[MatrixLayout, PartitionChanges]] | None:
        info, cursor, client = self.layout_info, self._cursor, self.client
        if info is None:
            return None
        assets = [*info.assets, *info.downstream]
        return lambda: (info, client.partition_changes(assets, cursor))

    def poll_apply(self, data: tuple[MatrixLayout, PartitionChanges]) -> None:
        info, changes = data
        self._cursor = changes.cursor
        if changes.full:
            self._apply_states(info, changes.states)
        else:
            self._apply_changes(info, changes.states)

    def _apply_states(self, info: MatrixLayout, states: dict[str, list[PartitionState]]) -> None:
        if info.grid is not None:
            self._apply_grid_states(info, info.grid, states)
            return
        matrix = self.matrix
        first_row = states.get(info.rows[0], []) if info.rows else []
        keys = [s.key for s in first_row if s.key is not None]
        if keys and keys != matrix.keys:
            # An open-ended definition gained a key (a new day ended): widen the matrix.
            info = MatrixLayout(
                info.group, info.rows, keys, info.kind, info.description, info.downstream
            )
            self._apply_layout(info)
        for row in info.rows:
            matrix.set_states(row, states.get(row, []))
        self._downstream = {
            name: next(iter(states.get(name) or []), None) for name in info.downstream
        }
        self._show_downstream(info)
        self._show_cursor()
        self._show_selection()

    def _apply_grid_states(
        self, info: MatrixLayout, grid: Grid, states: dict[str, list[PartitionState]]
    ) -> None:
        matrix = self.matrix
        first = states.get(grid.assets[0], []) if grid.assets else []
        columns = list(
            dict.fromkeys(p[0] for s in first if s.key and (p := grid.parts(s.key)) is not None)
        )
        if columns and columns != matrix.keys:
            # An open-ended time dimension gained a key (a new day ended): widen the matrix.
            grid = replace(grid, columns=tuple(columns))
            info = replace(info, keys=columns, grid=grid)
            self._apply_layout(info)
        for asset in grid.assets:
            for row, row_states in grid.full_rows(asset, states.get(asset, [])).items():
                matrix.set_states(row, row_states)
        self._downstream = {
            name: next(iter(states.get(name) or []), None) for name in info.downstream
        }
        self._show_downstream(info)
        self._show_cursor()
        self._show_selection()

    def _apply_grid_changes(self, grid: Grid, states: dict[str, list[PartitionState]]) -> None:
        matrix = self.matrix
        for asset in grid.assets:
            changed = grid.changed_rows(asset, states.get(asset, []))
            columns: set[str] = set()
            for row, row_states in changed.items():
                matrix.update_states(row, row_states)
                columns.update(s.key for s in row_states if s.key is not None)
            # The asset's own row shows the worst of its rows: redo the columns that changed.
            sub_rows = grid.sub_rows(asset)
            heads = []
            for column in columns:
                state = worst(matrix.state_at(row, column) for row in sub_rows)
                if state is not None:
                    heads.append(state)
            matrix.update_states(asset, heads)

    def _apply_changes(self, info: MatrixLayout, states: dict[str, list[PartitionState]]) -> None:
        """Apply the states of the keys that changed since the last poll (often none)."""
        if info.grid is not None:
            self._apply_grid_changes(info.grid, states)
        for row in info.rows if info.grid is None else ():
            if states.get(row):
                self.matrix.update_states(row, states[row])
        for name in info.downstream:
            if states.get(name):
                self._downstream[name] = states[name][0]
        if states:
            self._show_downstream(info)
            self._show_cursor()
            self._show_selection()

    # --- info lines --------------------------------------------------------------------------

    def _show_downstream(self, info: MatrixLayout) -> None:
        noun = _NOUN.get(info.kind, "key")
        lines = []
        for name in info.downstream:
            state = self._downstream.get(name)
            status = None if state is None else state.status
            lines.append(
                f" {name}  {_coloured(status)} {status or '…'}"
                f"  [dim](unpartitioned, depends on every {noun})[/]"
            )
        widget = self.query_one("#partitions-downstream", Static)
        widget.update("\n".join(lines))
        widget.display = bool(lines)

    def _show_cursor(self) -> None:
        matrix = self.matrix
        asset, keys = matrix.cursor_asset, matrix.cursor_keys
        if asset is None or not keys:
            return
        now = clock_now(self)
        # Static keys are user strings: escape them, and asset names, before adding markup.
        name, first, last = escape(asset), escape(keys[0]), escape(keys[-1])
        grid = self.layout_info.grid if self.layout_info is not None else None
        cells = [(asset, k) for k in keys]
        if grid is not None:
            owner, row_key = grid.split_row(asset)
            name = escape(owner)
            if row_key is None:  # the asset's own row stands for each of its rows
                name += f"  [dim]every {escape(grid.row_dimension)}[/]"
                cells = [(row, k) for row in grid.sub_rows(owner) for k in keys]
            elif len(keys) == 1:
                first = escape(grid.key(keys[0], row_key))
            else:
                name += f"  {escape(row_key)}"
        if len(cells) == 1:
            state = matrix.state_at(asset, keys[0])
            if state is None:
                text = f" {name}  {first}  {_coloured(None)} loading…"
            else:
                text = f" {name}  {first}  {_coloured(state.status)} {state.status}"
                if state.materialized_at is not None:
                    text += f"  [dim]last materialized {span(now - state.materialized_at)} ago[/]"
                if state.run_id:
                    text += f"  [dim]run {escape(state.run_id)}[/]"
                if state.reason:
                    text += f"  ({escape(state.reason)})"
                for check in state.failed_checks:
                    text += f"  [$error]✗ check {escape(check)}[/]"
        else:
            counts = Counter(matrix.status_of(row, k) or _UNKNOWN for row, k in cells)
            parts = "  ".join(
                f"{status_glyph(s)} {counts[s]}" for s in [*GLYPHS, _UNKNOWN] if counts[s]
            )
            where = first if len(keys) == 1 else f"{first} … {last}"
            text = f" {name}  {where} ({len(cells)} keys)  {parts}"
        self.query_one("#partitions-cursor", Static).update(text)

    def _show_selection(self) -> None:
        matrix = self.matrix
        first, last = matrix.key_window
        window = f"keys {first + 1:,}–{last + 1:,} of {len(matrix.keys):,}"
        top, bottom = matrix.row_window
        if bottom - top + 1 < len(matrix.rows):
            window += f" · rows {top + 1}–{bottom + 1} of {len(matrix.rows)}"
        window = f"[dim]{window}  by {matrix.grouping}[/]"
        rows = escape(", ".join(self._row_names(matrix.selected_rows)))
        ranged = [escape(k) for k in matrix.range_keys]
        marked = [escape(k) for k in matrix.marked_keys]
        if ranged and not marked:
            text = f"selected {ranged[0]} … {ranged[-1]} ({len(ranged)} keys) of {rows}"
        elif marked:
            keys = [escape(k) for k in matrix.selected_keys]
            shown = ", ".join(keys[:4]) + (f", … +{len(keys) - 4}" if len(keys) > 4 else "")
            text = f"selected {len(keys)} keys ({shown}) of {rows}"
        else:
            text = "[dim]⇧←/→ range · space mark · ⇧↑/↓ rows · g group[/]"
        self.query_one("#partitions-selection", Static).update(f" {text}   {window}")

    def _row_names(self, rows: list[str]) -> list[str]:
        grid = self.layout_info.grid if self.layout_info is not None else None
        if grid is None:
            return rows
        names = []
        for row in rows:
            asset, key = grid.split_row(row)
            names.append(asset if key is None else f"{asset} {key}")
        return names

    @on(PartitionMatrix.SelectionChanged)
    def _selection_changed(self, _event: PartitionMatrix.SelectionChanged) -> None:
        self._show_cursor()
        self._show_selection()
        self.refresh_bindings()

    # --- actions -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("backfill", "materialize", "open_run"):
            return True if self.layout_info is not None else None
        return True

    def action_back(self) -> None:
        # The first escape drops a selection; the next one leaves.
        if self.layout_info is not None and self.matrix.has_selection:
            self.matrix.clear_selection()
        else:
            self.dismiss()

    def action_backfill(self) -> None:
        matrix = self.matrix
        keys = matrix.selected_keys
        if not keys:
            return
        grid = self.layout_info.grid if self.layout_info is not None else None
        if grid is not None:
            # Rows pick assets and keys of the row dimension; columns, keys of the other.
            assets, chosen = grid.keys_of(matrix.selected_rows, keys)
            dialog = BackfillDialog(assets, chosen[0], chosen[-1], keys=chosen)
        else:
            dialog = self._backfill_dialog(keys)

        def started(backfill_id: str | None) -> None:
            if backfill_id:
                matrix.clear_selection()
                self.poll()

        self.app.push_screen(dialog, started)

    def _backfill_dialog(self, keys: list[str]) -> BackfillDialog:
        matrix = self.matrix
        contiguous = matrix.keys.index(keys[-1]) - matrix.keys.index(keys[0]) + 1 == len(keys)
        return BackfillDialog(
            list(matrix.selected_rows),
            keys[0],
            keys[-1],
            keys=None if contiguous else keys,
        )

    def action_materialize(self) -> None:
        matrix = self.matrix
        asset, keys = matrix.cursor_asset, matrix.cursor_keys
        if asset is None or not keys:
            return
        if len(keys) != 1:
            self.notify(
                f"this cell groups {len(keys)} keys: press g to ungroup, or b to backfill them",
                severity="warning",
            )
            return
        cell = self._cell(asset, keys[0])
        if cell is None:
            return
        self.materialize(*cell)

    @work(exclusive=True, group="partitions-materialize", exit_on_error=False)
    async def materialize(self, asset: str, key: str) -> None:
        params: dict[str, str] = {}
        manifest = await asyncio.to_thread(self.client.load)
        spec = manifest.assets.get(asset)
        if spec is not None and spec.config is not None:  # its typed config's form first
            from tui.screens.config import ConfigForm

            chosen = await self.app.push_screen_wait(ConfigForm(asset, spec.config))
            if chosen is None:
                return
            params = chosen
        request = RunRequest(selection=(asset,), partition=key, params=params)
        run_id = await ask(self, partial(self.client.submit, request), refused=Exception)
        if run_id is None:
            return
        self.notify(f"materializing {asset} {key}: run {run_id}")
        self.poll()

    def _cell(self, row: str, column: str) -> tuple[str, str] | None:
        """The asset and partition key of a cell; None (said) on a MultiPartitions asset's own
        row, which stands for several keys."""
        grid = self.layout_info.grid if self.layout_info is not None else None
        if grid is None:
            return row, column
        asset, row_key = grid.split_row(row)
        if row_key is None:
            self.notify(
                f"this row is every {grid.row_dimension} of {asset}: move down to one, "
                "or b to backfill them all",
                severity="warning",
            )
            return None
        return asset, grid.key(column, row_key)

    def action_open_run(self) -> None:
        matrix = self.matrix
        row, column = matrix.cursor_asset, matrix.cursor_key
        if row is None or column is None:
            self.notify("put the cursor on a single key (g to ungroup)", severity="warning")
            return
        cell = self._cell(row, column)
        if cell is None:
            return
        state = matrix.state_at(row, column)
        self.open_run(*cell, None if state is None else state.run_id)

    @work(exclusive=True, group="partitions-open-run", exit_on_error=False)
    async def open_run(self, asset: str, key: str, fallback: str | None) -> None:
        try:
            info = self.layout_info
            # Ranges (FIRST...LAST) are runs of one-dimensional keys only.
            keys = info.keys if info is not None and info.grid is None else []
            run_id = await asyncio.to_thread(latest_run_of, self.client, asset, key, fallback, keys)
        except Exception as exc:  # noqa: BLE001
            report_error(self, exc)
            return
        if run_id is None:
            self.notify(f"{asset} {key} has never run", severity="warning")
            return
        from tui.screens.run import RunScreen

        self.app.push_screen(RunScreen(run_id, step=asset))


def _coloured(status: str | None) -> str:
    """The status's glyph in its colour (the glyph alone still says it)."""
    return f"[{_COLOURS.get(status or '', 'dim')}]{status_glyph(status)}[/]"


__all__ = ["MatrixLayout", "PartitionsScreen", "latest_run_of", "read_layout"]
