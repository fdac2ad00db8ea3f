"""The home screen: pipelines on the left, the selected graph and the recent runs on the right.

State lives here (the manifest, the latest node statuses); widgets get it pushed in. Every
client call runs in a worker off the event loop, and engine changes arrive as `EngineChanged`
messages that are coalesced into one incremental refresh at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import DescendantFocus
from textual.reactive import Reactive
from textual.widget import Widget
from textual.widgets import ContentSwitcher, DataTable, Input, Label, Static, Tree
from textual.worker import Worker

from engine.client import NodeStatus, RunView
from engine.errors import NO_PIPELINES, EngineError
from engine.status import RunStatus, StepStatus
from tui.feedback import report_worker_failure
from tui.messages import EngineChanged
from tui.screens.home_actions import HomeActions
from tui.widgets import glyph
from tui.widgets.dag import DagLayout, DagNode, DagView, layout_dag
from tui.widgets.footer import KeyFooter
from tui.widgets.pipelines_tree import AutomationList, NodeRef, PipelinesTree
from tui.widgets.runs_table import PAGE, RunsTable
from tui.widgets.status_bar import StatusBar, tilde

if TYPE_CHECKING:
    # Types only: at run time the UI reaches the engine through engine.client alone.
    from engine.client_api import ClientAPI, ScheduleStatus, SensorStatus
    from engine.loading.manifest import FileError, Manifest

log = logging.getLogger(__name__)

OVERLAP = 2.0
"""Seconds re-read before the last refresh: a write committed just after a read is not lost."""
FIRST_PAINT_WAIT = 2.0
"""Seconds the second reads wait for the first frame's paint, at most."""
SYNC_LAYOUT = 40
"""Graphs up to this many nodes are laid out on the event loop; bigger ones in a thread."""
ERROR_KINDS = {
    "syntax": "Syntax error",
    "import": "Import error",
    "timeout": "Import timed out",
    "definition": "Invalid definition",
    "unknown-input": "Unknown input",
    "cycle": "Dependency cycle",
    "duplicate": "Duplicate name",
}


def graph_nodes(manifest: Manifest, kind: str, name: str) -> list[DagNode]:
    """The nodes of an asset group or a task pipeline."""
    if kind == "pipeline":
        pipeline = manifest.pipelines.get(name)
        if pipeline is None:
            return []
        return [
            DagNode(t.id, t.upstream, mapped=t.expand is not None) for t in pipeline.tasks.values()
        ]
    return [
        DagNode(
            a.name,
            a.upstream,
            tuple((c.name, c.blocking) for c in manifest.checks.get(a.name, [])),
            a.partitions is not None,
        )
        for a in manifest.assets.values()
        if a.group == name
    ]


def error_renderable(error: FileError, source: str | None = None) -> RenderableType:
    """A broken file's error: kind, message, the traceback with the user's lines marked, and
    the source around the failing line."""
    kind = ERROR_KINDS.get(error.kind, error.kind.replace("-", " ").capitalize())
    where = f", line {error.line}" if error.line else ""
    head = Text.assemble(
        (f"{glyph(StepStatus.FAILED)} {kind}", "bold red"), f" in {error.file}{where}"
    )
    parts: list[RenderableType] = [head, Text(error.message, "bold"), Text("")]
    if error.traceback:
        trace = Text()
        mark_next = False
        for line in error.traceback.rstrip().splitlines():
            mine = line.lstrip().startswith("File ") and error.file in line
            if mine or mark_next:
                # Marked twice over: colour, and an arrow for terminals without colour.
                trace.append("▶ " + line + "\n", "bold yellow on grey23")
            else:
                trace.append("  " + line + "\n", "dim" if line.startswith("  ") else "")
            mark_next = mine
        parts += [Text("Traceback", "underline"), trace]
    if source is not None and error.line:
        first = max(error.line - 5, 1)
        parts.append(Text(f"{error.file}", "underline"))
        parts.append(
            Syntax(
                source,
                "python",
                line_numbers=True,
                line_range=(first, error.line + 5),
                highlight_lines={error.line},
                theme="ansi_dark",
                word_wrap=False,
            )
        )
    parts.append(Text("\nFix the file and save it: it loads again (ctrl+r reloads now).", "dim"))
    return Group(*parts)


def automation_state(client: ClientAPI) -> tuple[list[ScheduleStatus], list[SensorStatus]]:
    """On/off and next ticks of the schedules and sensors (runs in a thread)."""
    return client.schedules(), client.sensors()


_heap_settled = False


def settle_heap() -> None:
    """Once per process, after the home screen first shows its data: collect, then exempt
    everything alive now (imported code, the engine, the UI) from later collections.

    Python's full collections scan every tracked object, ~0.1-0.15 s once the UI is up, and
    came at random in the middle of key presses; afterwards they scan only newer objects.
    """
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.collect()
        gc.freeze()


def _file_graph(manifest: Manifest, file: str) -> tuple[str, str] | None:
    """The first graph a loaded file defines: ("group", name) or ("pipeline", name)."""
    if file in manifest.errors:
        return None
    group = next((a.group for a in manifest.assets.values() if a.file == file), None)
    if group is not None:
        return ("group", group)
    pipeline = next((p.name for p in manifest.pipelines.values() if p.file == file), None)
    return ("pipeline", pipeline) if pipeline is not None else None


def _read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class HomeScreen(HomeActions):
    """Pipelines tree, graph (or a broken file's error), schedules and sensors, recent runs."""

    CSS_PATH = "home.tcss"
    HELP_TITLE = "Home"
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
    """Textual's, except that a focus change does not repaint the whole screen: the widgets
    whose style depends on the focus repaint themselves, and `tab` is answered sooner."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "materialize", "Materialize", show=True),
        Binding("M", "materialize_group", "Materialize group", show=False),
        Binding("b", "backfill", "Backfill", show=True),
        Binding("r", "rerun", "Re-run failed", show=True),
        Binding("c", "cancel_run", "Cancel", show=True),
        Binding("l", "logs", "Logs", show=True),
        # Priority: handled as the app reads the key, so the keys typed right after it in the
        # same burst (a fast typist, a paste) already go to the filter, never to the bindings
        # of the widget that had the focus (t, r, i act on the selection).
        Binding("slash", "filter", "Filter", show=True, key_display="/", priority=True),
        Binding("t", "toggle_enabled", "Toggle", show=True),
        Binding("p", "partitions", "Partitions", show=True),
        Binding("i", "lineage", "Lineage", show=True),
        Binding("escape", "clear_filter", "Clear filter", show=True, key_display="esc"),
        Binding("ctrl+r", "reload", "Reload pipelines", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.manifest: Manifest | None = None
        self.asset_statuses: dict[str, NodeStatus] = {}
        self.task_statuses: dict[str, dict[str, NodeStatus]] = {}
        self._last_ref: NodeRef | None = None
        """The highlighted node of whichever of the tree and the graph had the keys last."""
        self.graph_shown: tuple[str, str] | None = None
        self._layouts: dict[tuple[str, str, tuple[DagNode, ...]], DagLayout] = {}
        self._since: float | None = None
        self._refreshing = False
        self._refresh_pending = False
        self._broken: set[str] = set()
        self._ticks = 0
        self._first_frame = False
        self._manifest_failed = False
        self._first_paint = asyncio.Event()
        self._stopped_why = ""
        """Why the embedded engine stopped itself, once it has (kept in the status bar)."""

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        clock = self.dagtop.clock
        self.status_bar = StatusBar(clock=clock, id="status")
        self.pipelines = PipelinesTree(id="tree")
        self.automation = AutomationList(id="automation")
        self.dag = DagView(id="dag")
        self.runs_table = RunsTable(clock=clock, id="runs")
        self.filter_input = Input(
            placeholder="filter runs: id, target, status, trigger", id="filter"
        )
        yield self.status_bar
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield self.pipelines
                yield Label("Schedules & sensors", id="automation-title")
                yield self.automation
            with Vertical(id="right"):
                with ContentSwitcher(id="graph-pane", initial="dag"):
                    yield self.dag
                    with VerticalScroll(id="error-view"):
                        yield Static(id="error-text")
                with Vertical(id="runs-pane"):
                    yield self.filter_input
                    yield self.runs_table
        yield KeyFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one("#left").border_title = "Pipelines"
        self.query_one("#graph-pane").border_title = "Graph"
        self.query_one("#runs-pane").border_title = "Runs"
        self.status_bar.project = tilde(self.dagtop.client.paths.project)
        self.status_bar.mode = self.dagtop.mode
        self.status_bar.warning = "; ".join(self.dagtop.client.warnings())
        self.dag.empty_message = "loading pipelines…"
        self.pipelines.focus()
        self.load_manifest()
        self.request_refresh()
        self.sample_machine()
        self.set_interval(2.0, self.sample_machine)
        self.set_interval(1.0, self._tick)
        if self.dagtop.mode != "embedded":
            # No engine here to watch the files: the loader's cache makes an unchanged folder
            # cheap to load again.
            self.set_interval(5.0, lambda: self.load_manifest(force=True))

    def _tick(self) -> None:
        self._ticks += 1
        self.runs_table.tick()
        if self._ticks % 60 == 0 and self.manifest is not None:
            self.load_automation()  # a tick may have passed: read the next one
        elif self._ticks % 20 == 0:
            self.automation.refresh_times(self.dagtop.clock())

    # --- loading ------------------------------------------------------------------------------

    @work(exclusive=True, group="manifest", exit_on_error=False)
    async def load_manifest(self, force: bool = False) -> None:
        try:
            manifest = await asyncio.to_thread(self.dagtop.client.load, force)
        except EngineError as exc:
            self.status_bar.condition = exc.msg
            self.dag.empty_message = exc.msg
            self.dag.refresh()
            if self.manifest is None:
                self.notify(exc.msg, title=exc.title, severity="error")
                self._manifest_failed = True
                self._after_first_frame()  # the frame that says so
            return
        self.apply_manifest(manifest)

    @work(exclusive=True, group="automation", exit_on_error=False)
    async def load_automation(self) -> None:
        schedules, sensors = await asyncio.to_thread(automation_state, self.dagtop.client)
        self.automation.set_state(schedules, sensors, self.dagtop.clock())

    def apply_manifest(self, manifest: Manifest) -> None:
        first = self.manifest is None
        self.manifest = manifest
        self.dag.empty_message = "nothing defined here"
        self.pipelines.show_manifest(manifest)
        self.automation.show(manifest, self.dagtop.clock())
        if self._first_paint.is_set():
            self.load_automation()  # else once the first frame is drawn: it reads storage
        broken = set(manifest.errors)
        if broken - self._broken:
            names = ", ".join(sorted(broken - self._broken))
            self.notify(f"{names}: see the red entries in the tree", title="Pipeline load error",
                        severity="warning")  # fmt: skip
        self._broken = broken
        shown = self.graph_shown
        if shown is not None:
            self.graph_shown = None  # force a redraw: definitions may have changed
            self.show_graph(*shown)
        elif first:
            self._show_first_graph(manifest)
        self.request_refresh()  # statuses of pipelines that were not known yet
        self._after_first_frame()

    def _after_first_frame(self) -> None:
        """Once the definitions (or why there are none) and the first reads are both shown:
        after the next paint, read the rest and tell the app (its engine starts then, not
        while the first frame is being drawn)."""
        if self._first_frame or self._since is None:
            return
        if self.manifest is None and not self._manifest_failed:
            return
        self._first_frame = True
        self.call_after_refresh(self._first_frame_painted)

    def _first_frame_painted(self) -> None:
        self._first_paint.set()
        if self.manifest is not None:
            self.load_automation()
        self.dagtop.first_frame_drawn()

    def _show_first_graph(self, manifest: Manifest) -> None:
        for file in sorted(set(manifest.files) | set(manifest.errors)):
            graph = _file_graph(manifest, file)
            if graph is not None:
                self.show_graph(*graph)
                return
        if manifest.errors:
            self.show_graph("broken", sorted(manifest.errors)[0])

    def request_refresh(self) -> None:
        """Read what changed; while a read is in flight, ask for one more and no more."""
        if self._refreshing:
            self._refresh_pending = True
            return
        self._refreshing = True
        self._refresh()

    async def _apply_first_reads(self) -> None:
        """The first reads, from the process the app started for them (see
        engine.client.first_frame), if it answers; else the refresh reads them here."""
        first, self.dagtop.first_reads = self.dagtop.first_reads, None
        if first is None:
            return
        frame = await asyncio.to_thread(first.result)
        if frame is None:
            return
        self._since = frame.since
        self._apply_changes(frame.runs, frame.assets, frame.tasks)
        # The next reads import storage in this process: not while the first frame is drawn.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_paint.wait(), FIRST_PAINT_WAIT)

    @work(group="refresh", exit_on_error=False)
    async def _refresh(self) -> None:
        try:
            if self._since is None:
                await self._apply_first_reads()
            while True:
                self._refresh_pending = False
                started = time.time()
                known = set(self.manifest.pipelines) if self.manifest else set()
                unread = known - set(self.task_statuses)
                try:
                    changes = await asyncio.to_thread(
                        self._read_changes, self._since, known, unread
                    )
                except Exception as exc:  # noqa: BLE001 - e.g. the database locked for a moment
                    log.warning("refresh failed, retrying: %s", exc)
                    message = exc.msg if isinstance(exc, EngineError) else str(exc).splitlines()[0]
                    self.status_bar.condition = f"storage: {message[:60]} (retrying)"
                    await asyncio.sleep(1.0)
                    self._refresh_pending = True
                    continue
                self._since = started
                self.status_bar.condition = self._stopped_why  # else nothing is wrong
                self._apply_changes(*changes)
                if not self._refresh_pending:
                    break
                await asyncio.sleep(0.1)  # under a burst of events, at most ~10 refreshes/s
        finally:
            self._refreshing = False

    def _read_changes(
        self, since: float | None, known: set[str], unread: set[str]
    ) -> tuple[list[RunView], dict[str, NodeStatus] | None, dict[str, dict[str, NodeStatus]]]:
        """(runs changed, asset statuses or None if unchanged, task statuses by pipeline).

        Runs in a thread. `known` are the task pipelines of the manifest, `unread` those whose
        statuses were never read; only the pipelines and assets that changed are read again.
        """
        client = self.dagtop.client
        if since is None:
            runs = client.runs(limit=PAGE)
            wanted = set(known)
            assets = True
        else:
            runs = client.runs_since(since - OVERLAP)
            wanted = {r.target for r in runs if r.kind == "pipeline"} & known | unread
            assets = any(r.kind != "pipeline" for r in runs)
        try:
            asset_statuses = client.node_statuses() if assets else None
            tasks = {name: client.node_statuses(pipeline=name) for name in sorted(wanted)}
        except EngineError as exc:
            if exc.title != NO_PIPELINES:
                raise
            return runs, None, {}  # the manifest's load says so; the runs still show
        return runs, asset_statuses, tasks

    def _apply_changes(
        self,
        runs: list[RunView],
        assets: dict[str, NodeStatus] | None,
        tasks: dict[str, dict[str, NodeStatus]],
    ) -> None:
        self.runs_table.update_runs(runs)
        if assets is not None:
            self.asset_statuses = assets
        self.task_statuses.update(tasks)
        self.pipelines.set_statuses(
            {k: s.status for k, s in self.asset_statuses.items()},
            {p: {k: s.status for k, s in st.items()} for p, st in self.task_statuses.items()},
        )
        self._color_graph()
        self._runs_subtitle()
        statuses = [r.status for r in self.runs_table.runs.values()]
        self.status_bar.running = statuses.count(RunStatus.RUNNING)
        self.status_bar.queued = statuses.count(RunStatus.QUEUED)
        self.refresh_bindings()
        if not _heap_settled:
            self.call_after_refresh(settle_heap)
        self._after_first_frame()

    @work(group="older", exit_on_error=False)
    async def load_older(self, offset: int, limit: int) -> None:
        runs = await asyncio.to_thread(self.dagtop.client.runs, limit, offset)
        self.runs_table.exhausted = len(runs) < limit
        self.runs_table.update_runs(runs)

    @work(exclusive=True, group="machine", exit_on_error=False)
    async def sample_machine(self) -> None:
        try:
            view = await asyncio.to_thread(self.dagtop.client.machine)
        except Exception as exc:  # noqa: BLE001 - a header stat is never worth a toast
            log.debug("machine stats unavailable: %s", exc)
            return
        self.status_bar.add_cpu_sample(view.cpu_percent)
        self.status_bar.memory = (view.memory_used, view.memory_total)

    def on_engine_changed(self, message: EngineChanged) -> None:
        if message.kind == "mode":  # the app's engine mode changed (`ref`: why, if it stopped)
            self._stopped_why = message.ref or ""
            self.status_bar.mode = self.dagtop.mode
            self.status_bar.condition = self._stopped_why
        elif message.kind == "reload":
            self.load_manifest()
        elif message.kind in ("schedule", "sensor"):
            self.load_automation()  # turned on or off (here or on the automation screen)
        else:
            self.request_refresh()

    def on_screen_resume(self) -> None:
        if self.manifest is not None:
            self.request_refresh()

    # --- the graph pane -----------------------------------------------------------------------

    def show_graph(self, kind: str, name: str) -> None:
        """Show the graph of a group or task pipeline, or a broken file's error."""
        if self.manifest is None or self.graph_shown == (kind, name):
            return
        self.graph_shown = (kind, name)
        pane = self.query_one("#graph-pane", ContentSwitcher)
        if kind == "broken" and name not in self.manifest.errors:
            # Fixed since it was shown: its graph replaces the old traceback.
            self.graph_shown = None
            graph = _file_graph(self.manifest, name)
            if graph is not None:
                self.show_graph(*graph)
            else:
                pane.current = "dag"
                self.dag.set_layout(layout_dag([]))
            return
        if kind == "broken":
            pane.border_title = f"{name} · failed to load"
            pane.current = "error-view"
            error = self.manifest.errors.get(name)
            if error is not None:
                self.query_one("#error-text", Static).update(error_renderable(error))
                self.load_error_source(error)
            return
        pane.border_title = f"{name} · {'tasks' if kind == 'pipeline' else 'assets'}"
        pane.current = "dag"
        nodes = tuple(graph_nodes(self.manifest, kind, name))
        cached = self._layouts.get((kind, name, nodes))
        if cached is not None:
            self.dag.set_layout(cached)
        elif len(nodes) <= SYNC_LAYOUT:
            self._layouts[(kind, name, nodes)] = layout = layout_dag(nodes)
            self.dag.set_layout(layout)
        else:
            self.layout_graph(kind, name, nodes)
        self._color_graph()

    @work(exclusive=True, group="layout", exit_on_error=False)
    async def layout_graph(self, kind: str, name: str, nodes: tuple[DagNode, ...]) -> None:
        layout = await asyncio.to_thread(layout_dag, nodes)
        self._layouts[(kind, name, nodes)] = layout
        if self.graph_shown == (kind, name):
            self.dag.set_layout(layout)
            self._color_graph()

    @work(exclusive=True, group="source", exit_on_error=False)
    async def load_error_source(self, error: FileError) -> None:
        if self.manifest is None:
            return
        source = await asyncio.to_thread(_read_source, Path(self.manifest.root) / error.file)
        if self.graph_shown == ("broken", error.file):
            self.query_one("#error-text", Static).update(error_renderable(error, source))

    def _color_graph(self) -> None:
        if self.graph_shown is None:
            return
        kind, name = self.graph_shown
        if kind == "pipeline":
            statuses = self.task_statuses.get(name, {})
        elif kind == "group":
            statuses = self.asset_statuses
        else:
            return
        self.dag.set_statuses({k: s.status for k, s in statuses.items()})
        if kind == "group" and self.manifest is not None:
            self.dag.set_check_results(self._check_results(name))

    def _check_results(self, group: str) -> dict[tuple[str, str], bool]:
        """Results of each asset's checks in its latest run, when that run is loaded."""
        assert self.manifest is not None
        out: dict[tuple[str, str], bool] = {}
        for asset, checks in self.manifest.checks.items():
            spec = self.manifest.assets.get(asset)
            status = self.asset_statuses.get(asset)
            if spec is None or spec.group != group or status is None:
                continue
            run = self.runs_table.runs.get(status.run_id)
            for check in run.checks if run is not None else ():
                if check.asset == asset and any(c.name == check.name for c in checks):
                    out[(asset, check.name)] = check.passed
        return out

    # --- selection ----------------------------------------------------------------------------

    @on(Tree.NodeHighlighted, "#tree")
    def _tree_highlighted(self, event: Tree.NodeHighlighted[NodeRef]) -> None:
        ref = event.node.data
        if ref is None:
            return
        if self.pipelines.has_focus or self._last_ref is None:
            self._last_ref = ref
        if ref.kind == "broken":
            self.show_graph("broken", ref.file)
        elif ref.graph_kind is not None and ref.graph is not None:
            self.show_graph(ref.graph_kind, ref.graph)
            if ref.kind in ("asset", "task"):
                self.dag.select(ref.name)
        elif ref.kind == "file" and event.node.children:
            child = event.node.children[0].data
            if child is not None and child.graph_kind and child.graph:
                self.show_graph(child.graph_kind, child.graph)
        self.refresh_bindings()

    @on(Tree.NodeSelected, "#tree")
    def _tree_selected(self, event: Tree.NodeSelected[NodeRef]) -> None:
        ref = event.node.data
        if ref is not None and ref.kind in ("asset", "task"):
            self.open_node(ref)
        elif ref is not None and ref.kind == "broken":
            self.query_one("#error-view").focus()
        elif ref is not None and self.graph_shown is not None and self.graph_shown[0] != "broken":
            # A file, group or pipeline: its graph, with the keys, to walk its nodes.
            self.dag.focus()

    @on(DagView.NodeHighlighted)
    def _dag_highlighted(self, event: DagView.NodeHighlighted) -> None:
        if event.key is None or not self.dag.has_focus:
            return
        ref = self._last_ref = self._node_ref(event.key)
        if ref is not None and ref.graph:
            self.pipelines.select_leaf(ref.kind, ref.graph, event.key)
        self._describe_node(ref)
        self.refresh_bindings()

    def _describe_node(self, ref: NodeRef | None) -> None:
        """The selected node's latest state under the graph, with why it is stale if it is."""
        status = self.node_status(ref)
        text = ""
        if ref is not None and status is not None:
            where = f" [{status.partition}]" if status.partition else ""
            text = f"{glyph(status.status)} {ref.name}{where} {status.status}"
            if status.reason:
                text += f": {status.reason}"
        self.query_one("#graph-pane").border_subtitle = text

    @on(DagView.NodeActivated)
    def _dag_activated(self, event: DagView.NodeActivated) -> None:
        ref = self._node_ref(event.key)
        if ref is not None:
            self.open_node(ref)

    def _node_ref(self, key: str) -> NodeRef | None:
        if self.manifest is None or self.graph_shown is None:
            return None
        kind, name = self.graph_shown
        if kind == "group" and key in self.manifest.assets:
            return NodeRef("asset", key, self.manifest.assets[key].file, name)
        if kind == "pipeline" and name in self.manifest.pipelines:
            return NodeRef("task", key, self.manifest.pipelines[name].file, name)
        return None

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        if event.widget is self.dag and self.dag.selected is not None:
            self._last_ref = self._node_ref(self.dag.selected)
        elif event.widget is self.pipelines and self.pipelines.cursor_node is not None:
            self._last_ref = self.pipelines.cursor_node.data
        self.refresh_bindings()

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#runs")
    def _run_selected(self, event: DataTable.RowSelected) -> None:
        self.open_run(str(event.row_key.value))

    @on(RunsTable.OlderWanted)
    def _older_wanted(self, event: RunsTable.OlderWanted) -> None:
        self.load_older(event.offset, event.limit)

    @property
    def selected_ref(self) -> NodeRef | None:
        """What `m`, `p`, `b` and `l` act on: the highlighted node of the focused pane (or of
        the tree or graph, whichever had the keys last)."""
        if self.dag.has_focus and self.dag.selected is not None:
            return self._node_ref(self.dag.selected)
        if self.pipelines.has_focus and self.pipelines.cursor_node is not None:
            return self.pipelines.cursor_node.data
        return self._last_ref

    def node_status(self, ref: NodeRef | None) -> NodeStatus | None:
        if ref is None:
            return None
        if ref.kind == "asset":
            return self.asset_statuses.get(ref.name)
        if ref.kind == "task" and ref.graph is not None:
            return self.task_statuses.get(ref.graph, {}).get(ref.name)
        return None

    def _partitioned(self, ref: NodeRef | None) -> bool:
        if ref is None or ref.kind != "asset" or self.manifest is None:
            return False
        spec = self.manifest.assets.get(ref.name)
        return spec is not None and spec.partitions is not None

    # --- the runs filter ------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.filter_input.add_class("shown")
        self.set_focus(self.filter_input)  # now, not after the keys already queued
        self.refresh_bindings()  # "esc Clear filter" in the footer

    def action_clear_filter(self) -> None:
        if not self.filter_input.has_class("shown"):
            return
        self.filter_input.value = ""
        self.filter_input.remove_class("shown")
        self.runs_table.focus()
        self.refresh_bindings()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.runs_table.set_filter(event.value)
        self._runs_subtitle()

    def _runs_subtitle(self) -> None:
        table = self.runs_table
        if table.filter_text and not table.row_count:
            text = f"no run matches {table.filter_text} · esc clears the filter"
        elif table.filter_text:
            text = f"filter: {table.filter_text} · {table.row_count} shown"
        elif not table.runs and self.manifest is not None and self.manifest.assets:
            text = "no runs yet: select an asset and press m"
        elif not table.runs and self.manifest is not None and self.manifest.pipelines:
            text = "no runs yet: select a task pipeline and press m"
        else:
            text = ""
        self.query_one("#runs-pane").border_subtitle = text

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.runs_table.focus()

    def action_reload(self) -> None:
        self.load_manifest(force=True)
        self.notify("reloading pipelines…", title="Reload")

    # --- errors -------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a worker's unexpected failure is reported (never a crash)."""
        report_worker_failure(self, event)


__all__ = ["HomeScreen", "error_renderable", "graph_nodes"]
