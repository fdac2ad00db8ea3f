"""The asset page: what an asset is, its materializations with their metadata, its checks
over time, and a plot of each number its metadata recorded.

One read (`client.asset`, engine.history.asset_page) fills the whole screen; it is read again
every few seconds while the screen is shown, and the widgets are redrawn only when the page
changed. Enter on a materialization opens its run, `i` its lineage; `n`/`N` switch the plotted
key; for a partitioned asset `v` plots a key across partitions and `p` narrows the history to
the selected materialization's partition.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from engine.status import PartitionStatus, StepStatus
from engine.units import format_duration, format_value
from tui.feedback import PolledScreen
from tui.widgets import STYLES, status_text
from tui.widgets.footer import KeyFooter
from tui.widgets.table import Table

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.client_api import AssetPage

LIMIT = 100
"""Materializations read for the page (and plotted): the newest, of one partition if narrowed."""
METADATA_COLUMNS = 12
"""Metadata keys shown as columns of the materializations table, first seen first."""
CHECK_ROWS = 5
"""Checks shown at once (the table scrolls for more)."""
HISTORY_GLYPHS = 40
"""Check results drawn per check, newest first."""
MAX_BARS = 40
"""Partitions drawn as bars; more are drawn as a line."""
READ_SHARE = 10
"""The page is read again after at least this many times its last read took."""


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _verdict(passed: bool) -> Text:
    return status_text(StepStatus.SUCCESS if passed else StepStatus.FAILED)


class AssetScreen(PolledScreen["AssetPage"]):
    """One asset's page (`dagtop asset NAME`, in the UI)."""

    CSS_PATH = "asset.tcss"
    HELP_TITLE = "Asset page"
    AUTO_FOCUS = "#asset-mats"
    BINDINGS: ClassVar[list[BindingType]] = [
        # Before the tables' own enter, so that the footer shows what Enter does here.
        Binding(
            "enter", "open_run", "Open run", tooltip="Open the materialization's run", priority=True
        ),  # fmt: skip
        Binding("i", "lineage", "Lineage", tooltip="How the materialization's value was made"),
        Binding("n", "metric(1)", "Next plot", tooltip="Plot the next numeric metadata key"),
        Binding("N", "metric(-1)", "Previous plot", show=False),
        Binding("v", "across", "By partition", tooltip="Plot a key over time or by partition"),
        Binding("p", "narrow", "Partition", tooltip="Only this partition / every partition"),
        Binding("escape", "back", "Back"),
    ]
    POLL_SECONDS = 2.0

    def __init__(self, asset: str, partition: str | None = None) -> None:
        """
        Args:
            asset: The asset's name.
            partition: Narrow the history to this partition (a partitioned asset's key).
        """
        super().__init__()
        self.asset = asset
        self.partition = partition
        self.page: AssetPage | None = None
        self.metric: str | None = None
        """The metadata key plotted (kept across reads while it exists)."""
        self.across = False
        """Plot the key across partitions (each one's current value) instead of over time."""
        self._columns: list[str] = []
        self._read_seconds = 0.0

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="asset-title")
        with Horizontal(id="asset-top"):
            yield Static("reading…", id="asset-details")
            with Vertical(id="asset-plot-pane"):
                yield PlotextPlot(id="asset-plot")
                yield Static("", id="asset-plot-empty")
        mats = Table(id="asset-mats", cursor_type="row", zebra_stripes=True)
        mats.border_title = "Materializations, newest first"
        yield mats
        checks = Table(id="asset-checks", cursor_type="row")
        checks.border_title = "Checks"
        yield checks
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#asset-details").border_title = "Details"
        self.poll()

    def _title(self) -> str:
        where = f"  partition {self.partition}" if self.partition else ""
        return f" Asset {self.asset}{where}"

    # --- reading ------------------------------------------------------------------------------

    def poll_read(self) -> Callable[[], AssetPage]:
        read = partial(self.client.asset, self.asset, self.partition, LIMIT)

        def timed() -> AssetPage:
            started = time.perf_counter()
            page = read()
            self._read_seconds = time.perf_counter() - started
            return page

        return timed

    def poll_delay(self) -> float:
        # The partition counts judge every key: a year of hourly keys is ~0.7 s a read, so a
        # slow read is repeated less often (a tenth of the time at most goes to reading).
        return max(self.POLL_SECONDS, self._read_seconds * READ_SHARE)

    def poll_apply(self, data: AssetPage) -> None:
        if data == self.page:
            return
        self.page = data
        self.query_one("#asset-title", Static).update(self._title())
        self._show_details(data)
        self._show_materializations(data)
        self._show_checks(data)
        self._show_plot()
        self.refresh_bindings()

    def _show_details(self, page: AssetPage) -> None:
        text = Text()
        if page.description:
            text.append(page.description.strip().split("\n\n")[0].replace("\n", " ") + "\n\n")

        def row(label: str, value: str | Text) -> None:
            text.append(f"{label:<11}", "bold")
            text.append(value)
            text.append("\n")

        row("group", page.group)
        row("file", f"{page.file}:{page.line}")
        if page.partitions:
            row("partitions", page.partitions)
            counts = Text()
            for status, n in sorted(page.partition_counts.items()):
                counts.append_text(status_text(status, f"{n} {status}  "))
            row("", counts)
        row("code", page.code_version)
        if page.resources:
            row("resources", ", ".join(page.resources))
        row("upstream", ", ".join(page.upstream) or "–")
        row("downstream", ", ".join(page.downstream) or "–")
        if page.stale:
            row(
                "status",
                status_text(PartitionStatus.STALE, "stale: " + "; ".join(page.stale_reasons)),
            )
        elif not page.partitions:
            state = next(iter(page.partition_counts), None)
            row("status", status_text(state, str(state or "never materialized")))
        self.query_one("#asset-details", Static).update(text)

    def _show_materializations(self, page: AssetPage) -> None:
        table = self.query_one("#asset-mats", Table)
        keys = page.metadata_keys[:METADATA_COLUMNS]
        by_partition = page.partitions is not None and page.partition is None
        columns = ["when", "run", *(["partition"] if by_partition else []), "took", "trigger",
                   "checks", *keys]  # fmt: skip
        current = None
        if table.row_count:
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear(columns=columns != self._columns)
        if columns != self._columns:
            fixed = len(columns) - len(keys)
            for i, name in enumerate(columns):
                # A metadata key may be named as a fixed column (`run`, `when`): its own key.
                table.add_column(name, key=name if i < fixed else f"metadata:{name}")
            self._columns = columns
        for m in page.materializations:
            cells: list[str | Text] = [_when(m.created_at), m.run_id[:8]]
            if by_partition:
                cells.append(m.partition or "")
            checks = Text()
            for passed in m.checks.values():
                checks.append_text(_verdict(passed))
            cells += [format_duration(m.duration), m.trigger or "–", checks]
            cells += [format_value(m.metadata[k], 24) if k in m.metadata else "" for k in keys]
            table.add_row(*cells, key=str(m.id))
        if current is not None and any(str(m.id) == current for m in page.materializations):
            table.move_cursor(row=table.get_row_index(current))
        more = " (more: dagtop asset --limit)" if page.more else ""
        where = f" of {page.partition}" if page.partition else ""
        table.border_title = f"Materializations{where}, newest first{more}"
        if not page.materializations:
            table.border_subtitle = "never materialized: press m on it in the home screen"
        else:
            table.border_subtitle = ""

    def _show_checks(self, page: AssetPage) -> None:
        table = self.query_one("#asset-checks", Table)
        table.clear(columns=True)
        for name in ("check", "kind", "passed", "history (newest first)"):
            table.add_column(name, key=name)
        table.add_column("result of the selected materialization", key="result")
        for c in page.checks:
            history = Text()
            for result in c.results[:HISTORY_GLYPHS]:
                history.append_text(_verdict(result.passed))
            if c.pass_rate is None:
                rate = Text("never ran", STYLES["never"])
            else:
                rate = Text(f"{c.passed}/{len(c.results)} {c.pass_rate:.0%}")
            head = _verdict(c.results[0].passed) if c.results else status_text(None)
            head.append(f" {c.name}")
            table.add_row(head, "blocking" if c.blocking else "warn", rate, history, "",
                          key=c.name)  # fmt: skip
        self._show_results()
        table.display = bool(page.checks)
        # Its rows, a header, the border and a line for the horizontal scrollbar (a long
        # result overflows a narrow terminal; the bar would hide the last row): `auto` lost to
        # the materializations' `1fr`.
        table.styles.height = min(len(page.checks), CHECK_ROWS) + 4

    @on(DataTable.RowHighlighted, "#asset-mats")
    def _show_results(self) -> None:
        """Each check's result (verdict, metadata, error) for the selected materialization."""
        if self.page is None:
            return
        table = self.query_one("#asset-checks", Table)
        mat = self._selected()
        for c in self.page.checks:
            found = None
            if mat is not None:
                found = next(
                    (r for r in c.results
                     if (r.run_id, r.partition) == (mat.run_id, mat.partition)),
                    None,
                )  # fmt: skip
            text = Text("–" if mat is not None else "", STYLES["never"])
            if found is not None:
                text = _verdict(found.passed)
                if found.error:
                    text.append(f" {found.error.splitlines()[0][:60]}")
                for k, v in found.metadata.items():
                    text.append(f"  {k}={format_value(v, 20)}")
            table.update_cell(c.name, "result", text)

    # --- the plot -----------------------------------------------------------------------------

    def _series(self) -> dict[str, Any]:
        if self.page is None:
            return {}
        return self.page.by_partition if self.across else self.page.series

    def _show_plot(self) -> None:
        series = self._series()
        if self.metric not in series:
            self.metric = next(iter(series), None)
        plot = self.query_one("#asset-plot", PlotextPlot)
        empty = self.query_one("#asset-plot-empty", Static)
        pane = self.query_one("#asset-plot-pane")
        plot.display = self.metric is not None
        empty.display = self.metric is None
        if self.metric is None:
            pane.border_title = "Metadata"
            empty.update("no numeric metadata yet: `context.add_metadata({...})` in the asset")
            return
        points = series[self.metric]
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        values = [p.value for p in points]
        if self.across:
            labels = [p.partition or "" for p in points]
            shown = "the one key" if len(points) == 1 else f"last {len(points)} keys"
            pane.border_title = f"{self.metric} by partition ({shown})"
            if len(values) <= MAX_BARS:
                plt.bar(list(range(len(values))), values, width=0.6)
            else:  # bars a cell wide or less read as noise: a line
                plt.plot(list(range(len(values))), values, marker="hd")
        else:
            span = points[-1].at - points[0].at
            form = "%H:%M:%S" if span < 3600 else "%H:%M" if span < 86400 else "%m-%d %H:%M"
            labels = [datetime.fromtimestamp(p.at).strftime(form) for p in points]
            where = f" of {self.page.partition}" if self.page and self.page.partition else ""
            made = (
                "its one materialization"
                if len(points) == 1
                else f"the last {len(points)} materializations"
            )
            pane.border_title = f"{self.metric} over {made}{where}"
            # Quadrant blocks, not braille: fonts without braille draw it as boxes.
            plt.plot(list(range(len(values))), values, marker="hd")
            plt.scatter(list(range(len(values))), values, marker="●")
        low, high = min(values), max(values)
        if low == high:  # a flat line in the middle, not on the frame's edge
            pad = abs(low) * 0.05 or 1.0
            plt.ylim(low - pad, high + pad)
        # A few labels along the x axis: every key would overlap.
        step = max(1, len(labels) // 4)
        ticks = [float(i) for i in range(0, len(labels), step)]
        plt.xticks(ticks, [labels[int(i)] for i in ticks])
        keys = list(series)
        pane.border_subtitle = (
            f"{keys.index(self.metric) + 1}/{len(keys)}  n next" if len(keys) > 1 else ""
        )
        plot.refresh()

    def action_metric(self, step: int) -> None:
        keys = list(self._series())
        if not keys:
            return
        at = keys.index(self.metric) if self.metric in keys else 0
        self.metric = keys[(at + step) % len(keys)]
        self._show_plot()

    def action_across(self) -> None:
        self.across = not self.across
        self._show_plot()

    # --- acting on a materialization ----------------------------------------------------------

    def _selected(self) -> Any:
        """The materialization under the table's cursor, or None."""
        table = self.query_one("#asset-mats", Table)
        if self.page is None or not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((m for m in self.page.materializations if str(m.id) == key), None)

    @on(DataTable.RowSelected, "#asset-mats")
    def _row_selected(self) -> None:
        self.action_open_run()

    def action_open_run(self) -> None:
        mat = self._selected()
        if mat is None:
            return
        from tui.screens.run import RunScreen

        self.app.push_screen(RunScreen(mat.run_id, step=self.asset))

    def action_lineage(self) -> None:
        mat = self._selected()
        if mat is None:
            self.notify(f"{self.asset} has never been materialized: no lineage yet")
            return
        from tui.screens.lineage import LineageScreen

        self.app.push_screen(LineageScreen(self.asset, mat.partition, mat.id))

    def action_narrow(self) -> None:
        if self.partition is not None:
            self.partition = None
        else:
            mat = self._selected()
            if mat is None or mat.partition is None:
                return
            self.partition = mat.partition
            self.across = False
        self.query_one("#asset-title", Static).update(self._title())
        self.poll()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        page = self.page
        partitioned = page is not None and page.partitions is not None
        # Hidden (False) where they can never apply, shown disabled (None) where not now.
        if action == "across":
            return (True if self.partition is None else None) if partitioned else False
        if action == "narrow":
            return partitioned
        if action in ("open_run", "lineage"):
            return True if page is not None and page.materializations else None
        if action == "metric":
            return True if len(self._series()) > 1 else None
        return True


__all__ = ["AssetScreen"]
