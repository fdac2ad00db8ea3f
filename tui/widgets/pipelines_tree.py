"""The left pane: pipeline files → asset groups and task pipelines → assets and tasks, then the
schedules and sensors the files define."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Tree
from textual.widgets.tree import TreeNode

from engine.status import StepStatus
from tui.widgets import PARTITIONED, STYLES, glyph, shorten, status_text

if TYPE_CHECKING:  # types only: at run time the UI reaches the engine through engine.client
    from engine.client_api import ScheduleStatus, SensorStatus
    from engine.loading.manifest import Manifest


@dataclass(frozen=True, slots=True)
class NodeRef:
    """What a tree node stands for.

    `kind` is file | broken (a file that failed to load) | group | pipeline | asset | task;
    `graph` is the group or task pipeline whose graph shows it.
    """

    kind: str
    name: str
    file: str
    graph: str | None = None

    @property
    def graph_kind(self) -> str | None:
        if self.kind in ("group", "asset"):
            return "group"
        if self.kind in ("pipeline", "task"):
            return "pipeline"
        return None


def _asset_label(name: str, status: str | None, partitioned: bool) -> Text:
    label = status_text(status, name)
    if partitioned:
        label.append(" " + PARTITIONED, "cyan")
    return label


class PipelinesTree(Tree[NodeRef]):
    """Every pipeline file and what it defines, each leaf with its latest status glyph."""

    HELP_TITLE = "Pipelines"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", show=True),
        Binding("space", "toggle_node", "Expand/collapse", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(
        self,
        *,
        id: str | None = None,  # noqa: A002 - Textual's name for it
        classes: str | None = None,
    ) -> None:
        super().__init__("pipelines", id=id, classes=classes)
        self.show_root = False
        self.guide_depth = 2
        # Enter opens (the home screen acts on NodeSelected); space folds, as the help says.
        self.auto_expand = False
        self.manifest: Manifest | None = None
        self._leaves: dict[tuple[str, str, str], TreeNode[NodeRef]] = {}
        self._statuses: dict[tuple[str, str, str], str | None] = {}

    # --- building -----------------------------------------------------------------------------

    def show_manifest(self, manifest: Manifest) -> None:
        """Rebuild from a (re)loaded manifest, keeping the cursor and what was collapsed."""
        cursor = self.cursor_node.data if self.cursor_node is not None else None
        collapsed = {
            node.data for node in self._walk(self.root) if node.data and not node.is_expanded
        }
        self.manifest = manifest
        self._leaves.clear()
        self.clear()
        # Broken files last, like the wireframe: the working ones are what people open first.
        files = sorted(
            set(manifest.files) | set(manifest.errors), key=lambda f: (f in manifest.errors, f)
        )
        for file in files:
            self._add_file(manifest, file)
        for node in self._walk(self.root):
            if node.data in collapsed:
                node.collapse()
        for key, status in self._statuses.items():
            self._relabel(key, status)
        self.call_after_refresh(self._restore_cursor, cursor)

    def _add_file(self, manifest: Manifest, file: str) -> None:
        error = manifest.errors.get(file)
        if error is not None:
            failed = StepStatus.FAILED
            label = Text(f"{glyph(failed)} ", STYLES[failed]) + Text(file, "red")
            self.root.add_leaf(label, NodeRef("broken", file, file))
            return
        groups: dict[str, list[str]] = {}
        for spec in manifest.assets.values():
            if spec.file == file:
                groups.setdefault(spec.group, []).append(spec.name)
        pipelines = [p for p in manifest.pipelines.values() if p.file == file]
        node = self.root.add(Text(file, "bold"), NodeRef("file", file, file), expand=True)
        if not groups and not pipelines:
            node.allow_expand = False
            resources = [r.name for r in manifest.resources.values() if r.file == file]
            what = f"resources: {', '.join(resources)}" if resources else "nothing defined"
            node.set_label(Text(file, "bold") + Text(f"  ({what})", "dim"))
        for group, names in groups.items():
            label = Text(group) + Text(" · assets", "dim")
            group_node = node.add(label, NodeRef("group", group, file, group), expand=True)
            for name in names:
                spec = manifest.assets[name]
                ref = NodeRef("asset", name, file, group)
                leaf = group_node.add_leaf(
                    _asset_label(name, None, spec.partitions is not None), ref
                )
                self._leaves[("asset", group, name)] = leaf
        for pipeline in pipelines:
            label = Text(pipeline.name) + Text(" · tasks", "dim")
            pnode = node.add(
                label, NodeRef("pipeline", pipeline.name, file, pipeline.name), expand=True
            )
            for task_id in pipeline.tasks:
                ref = NodeRef("task", task_id, file, pipeline.name)
                leaf = pnode.add_leaf(status_text(None, task_id), ref)
                self._leaves[("task", pipeline.name, task_id)] = leaf

    def _walk(self, node: TreeNode[NodeRef]) -> Iterable[TreeNode[NodeRef]]:
        for child in node.children:
            yield child
            yield from self._walk(child)

    def _restore_cursor(self, ref: NodeRef | None) -> None:
        if self.cursor_node is not None:
            return  # moved since the rebuild (by the user or by the graph): leave it there
        node = self.find(ref) if ref is not None else None
        if node is None and ref is not None:
            # A file that broke or was fixed is listed under its other kind: stay on it.
            node = self.find(NodeRef("file", ref.file, ref.file)) or self.find(
                NodeRef("broken", ref.file, ref.file)
            )
        if node is None:
            node = next(iter(self.root.children), None)
        if node is not None:
            self.move_cursor(node)

    def find(self, ref: NodeRef) -> TreeNode[NodeRef] | None:
        return next((n for n in self._walk(self.root) if n.data == ref), None)

    def select_leaf(self, kind: str, graph: str, name: str) -> None:
        """Move the cursor to an asset or task (expanding its parents), if it is listed."""
        leaf = self._leaves.get((kind, graph, name))
        if leaf is None or leaf is self.cursor_node:
            return
        parent = leaf.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        self.call_after_refresh(self.move_cursor, leaf)

    # --- statuses -----------------------------------------------------------------------------

    def set_statuses(
        self, assets: Mapping[str, str], tasks: Mapping[str, Mapping[str, str]]
    ) -> None:
        """Relabel the leaves whose status changed (the tree is not rebuilt)."""
        wanted: dict[tuple[str, str, str], str | None] = {}
        for kind, graph, name in self._leaves:
            if kind == "asset":
                wanted[(kind, graph, name)] = assets.get(name)
            else:
                wanted[(kind, graph, name)] = tasks.get(graph, {}).get(name)
        for key, status in wanted.items():
            if self._statuses.get(key) != status:
                self._relabel(key, status)
        self._statuses = wanted

    def _relabel(self, key: tuple[str, str, str], status: str | None) -> None:
        leaf = self._leaves.get(key)
        if leaf is None or self.manifest is None:
            return
        kind, _graph, name = key
        if kind == "asset":
            spec = self.manifest.assets.get(name)
            leaf.set_label(_asset_label(name, status, spec is not None and bool(spec.partitions)))
        else:
            leaf.set_label(status_text(status, name))

    def status_of(self, kind: str, graph: str, name: str) -> str | None:
        return self._statuses.get((kind, graph, name))


STATE_WIDTH = 10
"""Cells for "in 11h 17m", "on" or "off"."""


def until(when: datetime | None, now: float) -> str:
    """`in 11h 17m`-style time to a tick."""
    if when is None:
        return "–"
    seconds = int(when.timestamp() - now)
    if seconds < 60:
        return "now" if seconds < 5 else f"in {seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"in {minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"in {hours}h {minutes:02d}m"
    return f"in {hours // 24}d {hours % 24}h"


class AutomationList(DataTable[Text]):
    """Schedules (name, cron, next tick) and sensors (name, pattern, on/off), one per row.

    Rows are keyed `schedule:NAME` / `sensor:NAME`; the full screen belongs to AutomationScreen.
    """

    HELP_TITLE = "Schedules & sensors"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(
        self,
        *,
        id: str | None = None,  # noqa: A002 - Textual's name for it
        classes: str | None = None,
    ) -> None:
        super().__init__(
            id=id, classes=classes, cursor_type="row", show_header=False, cell_padding=0
        )
        self.enabled: dict[tuple[str, str], bool] = {}
        """(kind, name) → on/off. Everything counts as on until told otherwise."""
        self.next_ticks: dict[str, datetime | None] = {}
        self._specs: list[tuple[str, str, str]] = []
        self._manifest: Manifest | None = None
        self._now = 0.0

    def on_mount(self) -> None:
        self.add_column("item", key="item")

    def show(self, manifest: Manifest, now: float) -> None:
        """Rebuild the rows from the manifest (states come separately, see `set_state`)."""
        self._manifest, self._now = manifest, now
        self._specs = [("schedule", s.name, s.cron) for s in manifest.schedules.values()]
        self._specs += [("sensor", s.name, s.pattern) for s in manifest.sensors.values()]
        cursor = self.cursor_row
        self.clear()
        for kind, name, spec in self._specs:
            self.add_row(self.line(kind, name, spec, now), key=f"{kind}:{name}")
        if self.row_count:
            self.move_cursor(row=min(max(cursor, 0), self.row_count - 1))

    def set_state(
        self, schedules: Sequence[ScheduleStatus], sensors: Sequence[SensorStatus], now: float
    ) -> None:
        """On/off and next ticks, as the engine says them."""
        for schedule in schedules:
            self.next_ticks[schedule.name] = schedule.next_tick
            self.enabled[("schedule", schedule.name)] = schedule.enabled
        for sensor in sensors:
            self.enabled[("sensor", sensor.name)] = sensor.enabled
        self._redraw(now)

    def _redraw(self, now: float, only: tuple[str, str] | None = None) -> None:
        self._now = now
        for kind, name, spec in self._specs:
            if only is None or only == (kind, name):
                self.update_cell(f"{kind}:{name}", "item", self.line(kind, name, spec, now))

    def refresh_times(self, now: float) -> None:
        self._redraw(now)

    def set_enabled(self, kind: str, name: str, enabled: bool, now: float) -> None:
        self.enabled[(kind, name)] = enabled
        self._redraw(now, (kind, name))

    def on_resize(self) -> None:
        self._redraw(self._now)

    def line(self, kind: str, name: str, spec: str, now: float) -> Text:
        """` ◷ name   spec   in 8h 17m`, fitted to the pane (the spec goes first when narrow)."""
        on = self.enabled.get((kind, name), True)
        mark = ("◷" if kind == "schedule" else "◉") if on else "○"
        if not on:
            state = Text("off", "dim")
        elif kind == "schedule":
            state = Text(until(self.next_ticks.get(name), now))
        else:
            state = Text("on", "green")
        width = (self.size.width or 40) - 1
        state_width = STATE_WIDTH
        spec_width = min(max((len(s) for _k, _n, s in self._specs), default=0), 10)
        if width - 3 - spec_width - 1 - state_width - 1 < 8:
            spec_width = 0
        name_width = max(width - 3 - (spec_width + 1 if spec_width else 0) - state_width - 1, 4)
        line = Text(f" {mark} ") + Text(shorten(name, name_width).ljust(name_width))
        if spec_width:
            line.append(" " + shorten(spec, spec_width).ljust(spec_width), "dim")
        line.append(" ")
        state.truncate(state_width)
        line.append_text(Text(" " * (state_width - len(state))) + state)
        return line

    @property
    def selected(self) -> tuple[str, str] | None:
        """(kind, name) under the cursor."""
        if not self.row_count or not 0 <= self.cursor_row < len(self._specs):
            return None
        kind, name, _spec = self._specs[self.cursor_row]
        return kind, name

    def is_enabled(self, kind: str, name: str) -> bool:
        return self.enabled.get((kind, name), True)


__all__ = ["AutomationList", "NodeRef", "PipelinesTree", "until"]
