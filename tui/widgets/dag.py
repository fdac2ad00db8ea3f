"""A left-to-right layered graph of assets or tasks, drawn with box-drawing characters.

The layout is computed once per graph, as plain data (`layout_dag`, testable without a UI):
grandalf's SugiyamaLayout ranks the nodes (longest path from the roots), inserts a dummy vertex
in every layer a long edge crosses and orders each layer to reduce crossings. Its coordinates are
floats for a canvas and its edges are splines, so the placement on a character grid is ours:
columns per layer, rows aligned with the upstream nodes, and one vertical channel per fan-out in
each gap between two layers, ordered so that two different edges never share a horizontal run.

The widget is a `ScrollView` that renders only the visible lines from the precomputed grid; a
status change re-styles the rows of the boxes that changed and never lays the graph out again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.status import StepStatus
from tui.widgets import NEVER, PARTITIONED, STYLES, glyph, shorten


def _import_grandalf() -> None:
    """Import grandalf without numpy. Its geometry module imports numpy when it can, for the
    force-directed layout only; the layered (Sugiyama) one we use is pure Python, and numpy's
    import would be a tenth of a second of the first frame. This runs as the module is
    imported (the UI imports it before its engine or any step thread starts), and numpy, if
    it is not imported yet, is hidden for the length of that one import only."""
    if "numpy" in sys.modules:
        import grandalf.layouts  # noqa: F401 - already paid for

        return
    sys.modules["numpy"] = None  # type: ignore[assignment]  # "not importable", to importlib
    try:
        import grandalf.layouts  # noqa: F401
    finally:
        del sys.modules["numpy"]


_import_grandalf()

MAX_LABEL = 28
"""Longest node name drawn in full; longer ones end with an ellipsis."""
ORDER_ROUNDS = 3
"""Crossing-reduction sweeps (each one down and up the layers)."""
_U, _D, _L, _R = 1, 2, 4, 8
_JOINS = {
    _L | _R: "─", _L: "─", _R: "─", _U | _D: "│", _U: "│", _D: "│",
    _R | _D: "┌", _L | _D: "┐", _R | _U: "└", _L | _U: "┘",
    _L | _R | _D: "┬", _L | _R | _U: "┴", _U | _D | _R: "├", _U | _D | _L: "┤",
    _U | _D | _L | _R: "┼",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DagNode:
    """One node to draw: an asset or a task."""

    key: str
    upstream: tuple[str, ...] = ()
    checks: tuple[tuple[str, bool], ...] = ()
    """(check name, blocking) drawn under the box."""
    partitioned: bool = False
    mapped: bool = False
    """A task mapped over a list: its node stands for all its instances (`process[0]`, ...)."""


@dataclass(frozen=True, slots=True)
class Box:
    """Where one node sits on the grid."""

    key: str
    x: int
    y: int
    width: int
    layer: int
    checks: tuple[tuple[str, bool], ...] = ()
    check_widths: tuple[int, ...] = ()
    """Cells each check line takes (cut short where an edge passes)."""

    @property
    def height(self) -> int:
        return 3 + len(self.checks)

    @property
    def mid(self) -> int:
        return self.y + 1

    @property
    def region(self) -> Region:
        """The bounding rectangle of the box and its check lines (for scrolling into view)."""
        return Region(self.x, self.y, max((self.width, *self.check_widths)), self.height)

    @property
    def regions(self) -> list[Region]:
        """The cells really drawn: the box, then one region per check line."""
        lines = [Region(self.x, self.y + 3 + i, w, 1) for i, w in enumerate(self.check_widths)]
        return [Region(self.x, self.y, self.width, 3), *lines]


@dataclass
class DagLayout:
    """A graph placed on a character grid; everything the widget needs to draw and navigate."""

    boxes: dict[str, Box] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    """The static picture, one string per row, one character per cell (glyph slots blank)."""
    masks: list[bytes] = field(default_factory=list)
    """Per row and cell, the edge directions drawn there (0: no edge)."""
    row_boxes: list[list[str]] = field(default_factory=list)
    """Keys of the boxes (or their check lines) crossing each row, left to right."""
    layers: list[list[str]] = field(default_factory=list)
    """Real nodes of every layer, top to bottom (for up/down navigation)."""
    upstream: dict[str, tuple[str, ...]] = field(default_factory=dict)
    downstream: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return max((len(row) for row in self.lines), default=0)

    @property
    def height(self) -> int:
        return len(self.lines)

    def is_edge(self, x: int, y: int) -> bool:
        return 0 <= y < len(self.masks) and 0 <= x < len(self.masks[y]) and self.masks[y][x] > 0

    @property
    def edge_cells(self) -> set[tuple[int, int]]:
        """Every cell an edge or arrow is drawn in (for tests: a big graph has many)."""
        return {(x, y) for y, row in enumerate(self.masks) for x, m in enumerate(row) if m}

    def text(self) -> str:
        """The whole picture as plain text, status glyphs left blank (for tests and debugging)."""
        return "\n".join(line.rstrip() for line in self.lines)


def _single_cells(text: str) -> str:
    """`text` with every character wider than one cell replaced: the grid is one char a cell."""
    return "".join(ch if cell_len(ch) == 1 else "?" for ch in text)


def _label(node: DagNode) -> str:
    name = _single_cells(shorten(node.key, MAX_LABEL))
    if node.mapped:
        return f"{name}[*]"
    return f"{name} {PARTITIONED}" if node.partitioned else name


def _check_line(name: str, blocking: bool) -> str:
    """A check under its box; the second cell is the slot for the check's result glyph."""
    return _single_cells(f" · check {name}" + (" (blocking)" if blocking else ""))


# An item of a layer: a real node (its key), or the lane that carries every long edge of one
# source through one layer (source, layer). Bundling a source's long edges into one lane keeps
# big graphs from growing a row per edge per layer.
_Item = str | tuple[str, int]
_ARROW = 16
"""A mask bit that is not a direction: the cell holds the ▶ of an edge's end."""
_TRANSLATE = {i: "▶" if i & _ARROW else _JOINS.get(i, " ") for i in range(32)}


def _rank_and_order(
    keys: list[str], edges: list[tuple[str, str]], heights: dict[str, int]
) -> list[list[list[_Item]]]:
    """Layers (lists of items, in order) of every connected component, via grandalf."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import DummyVertex, SugiyamaLayout, VertexViewer

    vertices = {key: Vertex(key) for key in keys}
    for key, vertex in vertices.items():
        vertex.view = VertexViewer(w=10, h=heights[key])
    graph_edges = [Edge(vertices[u], vertices[v]) for u, v in edges]
    position = {key: i for i, key in enumerate(keys)}
    components = sorted(
        Graph(list(vertices.values()), graph_edges).C,
        key=lambda comp: min(position[v.data] for v in comp.sV),
    )
    out: list[list[list[_Item]]] = []
    for comp in components:
        if len(comp.sV) == 1:
            out.append([[comp.sV[0].data]])
            continue
        sug = SugiyamaLayout(comp)
        # The loader refuses cycles, so there is nothing to invert: passing the roots and no
        # inverted edges also skips grandalf's recursive cycle search (deep chains overflow it).
        # `optimize` moves nodes next to their first consumer, which cuts long edges by ~4x.
        roots = [v for v in comp.sV if not v.e_in()]
        sug.init_all(roots=roots, inverted_edges=[], optimize=True)
        for _ in range(ORDER_ROUNDS if len(comp.sV) < 150 else 1):
            for _layer in sug.ordering_step():
                pass
        lanes: dict[Any, _Item] = {}
        for edge, ctrl in sug.ctrls.items():
            for rank, vertex in ctrl.items():
                if isinstance(vertex, DummyVertex):
                    lanes[vertex] = (edge.v[0].data, rank)
        layers: list[list[_Item]] = []
        for layer in sug.layers:
            items = [lanes[v] if isinstance(v, DummyVertex) else v.data for v in layer]
            if items:  # ranking can leave the first layers empty
                layers.append(list(dict.fromkeys(items)))
        out.append(layers)
    return out


def layout_dag(nodes: Sequence[DagNode]) -> DagLayout:
    """Place `nodes` (edges from `upstream`, unknown names ignored) on a character grid."""
    if not nodes:
        return DagLayout()
    by_key = {n.key: n for n in nodes}
    keys = list(by_key)
    edges = list(
        dict.fromkeys((u, n.key) for n in nodes for u in n.upstream if u in by_key and u != n.key)
    )
    labels = {k: _label(by_key[k]) for k in keys}
    widths = {k: len(labels[k]) + 6 for k in keys}  # "│ ✓ name │"
    heights = {k: 3 + len(by_key[k].checks) for k in keys}

    def height(item: _Item) -> int:
        return heights[item] if isinstance(item, str) else 1

    def port(item: _Item) -> int:
        return 1 if isinstance(item, str) else 0

    components = _rank_and_order(keys, edges, heights)

    # Segments between consecutive layers: every edge becomes a chain through its lanes.
    rank: dict[_Item, int] = {}
    for layers in components:
        for r, layer in enumerate(layers):
            for item in layer:
                rank[item] = r
    succ_sets: dict[_Item, dict[_Item, None]] = {}
    pred_sets: dict[_Item, dict[_Item, None]] = {}
    for u, v in edges:
        chain: list[_Item] = [u, *((u, r) for r in range(rank[u] + 1, rank[v])), v]
        for a, b in zip(chain, chain[1:], strict=False):
            succ_sets.setdefault(a, {})[b] = None
            pred_sets.setdefault(b, {})[a] = None
    succs = {k: list(v) for k, v in succ_sets.items()}
    preds = {k: list(v) for k, v in pred_sets.items()}

    # Rows: each item aligns its port with the median of its predecessors' ports, never
    # above the item before it in its layer; then roots move down towards their successors.
    ys: dict[_Item, int] = {}
    top = 1

    def place(layer: list[_Item]) -> None:
        bottom: int | None = None
        before: _Item | None = None
        for item in layer:
            want = top
            if item in preds:
                # Line up with real upstream nodes rather than with lanes of long edges:
                # chains stay straight and the long edges bend instead.
                anchors = [p for p in preds[item] if isinstance(p, str)] or preds[item]
                want = round(median(ys[p] + port(p) for p in anchors)) - port(item)
            if bottom is None:
                y = max(want, top)
            else:
                # Two lanes may touch (parallel lines read fine); a box keeps a blank row.
                gap = 0 if not isinstance(item, str) and not isinstance(before, str) else 1
                y = max(want, bottom + gap)
            ys[item] = y
            bottom, before = y + height(item), item

    for layers in components:
        for layer in layers:
            place(layer)
        first = layers[0]
        for i in range(len(first) - 1, -1, -1):
            item = first[i]
            if item in succs:
                want = round(median(ys[s] + port(s) for s in succs[item])) - port(item)
                high = ys[first[i + 1]] - 1 - height(item) if i + 1 < len(first) else want
                ys[item] = max(ys[item], min(want, high))
        for layer in layers[1:]:  # again, now that the roots have moved
            place(layer)
        lift = min(ys[item] for layer in layers for item in layer) - top
        for layer in layers:
            for item in layer:
                ys[item] -= lift
        top = max(ys[item] + height(item) for layer in layers for item in layer) + 1

    # Columns: layer widths, then per gap the channels that carry fan-outs and bends.
    n_layers = max(len(layers) for layers in components)
    layer_width = [1] * n_layers
    for key in keys:
        layer_width[rank[key]] = max(layer_width[rank[key]], widths[key])
    ports = {item: ys[item] + port(item) for item in rank}
    by_layer: list[list[_Item]] = [[] for _ in range(n_layers)]
    for item, r in rank.items():
        by_layer[r].append(item)
    gap_channels = [_assign_channels(by_layer[r], succs, ports) for r in range(n_layers - 1)]
    xs = [1]
    for r in range(n_layers - 1):
        n_cols = max(gap_channels[r].values(), default=-1) + 1
        xs.append(xs[r] + layer_width[r] + max(4, 2 * n_cols + 2))
    width = xs[-1] + layer_width[-1] + 1
    for item in by_layer[-1]:
        if isinstance(item, str):
            for check in by_key[item].checks:
                width = max(width, xs[-1] + len(_check_line(*check)) + 1)

    masks = [bytearray(width) for _ in range(top)]
    for item, r in rank.items():
        if not isinstance(item, str):  # a lane through its layer's column
            _hline(masks, xs[r], xs[r] + layer_width[r] - 1, ys[item])
    for r in range(n_layers - 1):
        end = xs[r] + layer_width[r]
        for src in by_layer[r]:
            if src not in succs:
                continue
            sy = ports[src]
            start = xs[r] + widths[src] if isinstance(src, str) else end
            channel = gap_channels[r].get(src)
            cx = end + 1 + 2 * channel if channel is not None else end
            # A lane ends at its column's last cell; a box's run starts after its border.
            _hline(masks, start if isinstance(src, str) else start - 1, cx, sy)
            masks[sy][start] |= _R
            rows = [ports[t] for t in succs[src]]
            if channel is not None:
                _vline(masks, cx, min([sy, *rows]), max([sy, *rows]))
            tx = xs[r + 1]
            for tgt, ty in zip(succs[src], rows, strict=True):
                if isinstance(tgt, str):
                    _hline(masks, cx, tx - 1, ty)
                    masks[ty][tx - 1] = _ARROW
                else:
                    _hline(masks, cx, tx, ty)

    layout = DagLayout()
    # Boxes last: a check line may run on to the right, up to the first edge or other node.
    taken: dict[int, list[tuple[int, int, str]]] = {}
    for key in keys:
        for row in range(ys[key], ys[key] + heights[key]):
            taken.setdefault(row, []).append((xs[rank[key]] - 1, xs[rank[key]] + widths[key], key))
    drawn: list[tuple[Box, list[str]]] = []
    for key in keys:
        r, x, y = rank[key], xs[rank[key]], ys[key]
        check_lines = []
        for i, check in enumerate(by_key[key].checks):
            row = y + 3 + i
            room = width - x
            for cx in range(x, x + min(len(_check_line(*check)), room)):
                if masks[row][cx] or any(
                    a <= cx < b and other != key for a, b, other in taken.get(row, ())
                ):
                    room = cx - x - 1
                    break
            check_lines.append(shorten(_check_line(*check), room))
        box = Box(
            key=key, x=x, y=y, width=widths[key], layer=r, checks=by_key[key].checks,
            check_widths=tuple(len(line) for line in check_lines),
        )  # fmt: skip
        layout.boxes[key] = box
        drawn.append((box, check_lines))

    lines = [row.decode("latin-1").translate(_TRANSLATE) for row in masks]
    for box, check_lines in drawn:
        inner = box.width - 2
        label = labels[box.key]
        frame = ["┌" + "─" * inner + "┐", "│   " + label + " │", "└" + "─" * inner + "┘"]
        for dy, text in enumerate([*frame, *check_lines]):
            line = lines[box.y + dy]
            lines[box.y + dy] = line[: box.x] + text + line[box.x + len(text) :]
    layout.lines = lines
    layout.masks = [bytes(row) for row in masks]
    layout.row_boxes = [[] for _ in range(top)]
    for box in sorted(layout.boxes.values(), key=lambda b: b.x):
        for y in range(box.y, box.y + box.height):
            layout.row_boxes[y].append(box.key)
    layout.layers = [
        sorted((k for k in by_layer[r] if isinstance(k, str)), key=lambda k: ys[k])
        for r in range(n_layers)
    ]
    ups: dict[str, list[str]] = {k: [] for k in keys}
    downs: dict[str, list[str]] = {k: [] for k in keys}
    for u, v in edges:
        ups[v].append(u)
        downs[u].append(v)
    layout.upstream = {k: tuple(v) for k, v in ups.items()}
    layout.downstream = {k: tuple(v) for k, v in downs.items()}
    return layout


def _assign_channels(
    layer: list[_Item], succs: Mapping[_Item, list[_Item]], ports: Mapping[_Item, int]
) -> dict[_Item, int]:
    """Vertical channel (column index in the gap after `layer`) of each source that bends.

    A source whose horizontal run shares a row with the incoming run of another source's target
    must sit left of that source's channel, or the two runs would merge into one line; sources
    whose vertical spans do not overlap share a column.
    """
    spans: dict[_Item, tuple[int, int]] = {}
    for src in layer:
        if src not in succs:
            continue
        rows = [ports[t] for t in succs[src]]
        if all(row == ports[src] for row in rows):
            continue  # straight: no channel
        spans[src] = (min([ports[src], *rows]), max([ports[src], *rows]))
    if not spans:
        return {}
    # before[s]: the sources that must be left of s (s's targets share a row with them).
    by_row: dict[int, list[_Item]] = {}
    for s in spans:
        by_row.setdefault(ports[s], []).append(s)
    before: dict[_Item, set[_Item]] = {s: set() for s in spans}
    for other in spans:
        for row in {ports[t] for t in succs[other]}:
            for s in by_row.get(row, ()):
                if s != other and other not in before[s]:
                    before[other].add(s)
    order: list[_Item] = []
    placed: set[_Item] = set()
    pending = sorted(spans, key=lambda s: ports[s])
    while pending:
        ready = next((s for s in pending if before[s] <= placed), pending[0])  # cycle: cross
        pending.remove(ready)
        placed.add(ready)
        order.append(ready)
    columns: dict[_Item, int] = {}
    used: list[list[tuple[int, int]]] = []
    for s in order:
        lo, hi = spans[s]
        col = max((columns[b] + 1 for b in before[s] if b in columns), default=0)
        while col < len(used) and any(hi >= a and lo <= b for a, b in used[col]):
            col += 1
        if col == len(used):
            used.append([])
        used[col].append((lo - 1, hi + 1))  # keep a blank row between two edges
        columns[s] = col
    return columns


def _hline(masks: list[bytearray], x1: int, x2: int, y: int) -> None:
    lo, hi = min(x1, x2), max(x1, x2)
    row = masks[y]
    for x in range(lo, hi):
        row[x] |= _R
        row[x + 1] |= _L


def _vline(masks: list[bytearray], x: int, y1: int, y2: int) -> None:
    for y in range(y1, y2):
        masks[y][x] |= _D
        masks[y + 1][x] |= _U


class _NodeMessage(Message):
    """Something happened to a node of a `DagView`."""

    def __init__(self, dag: DagView, key: str | None) -> None:
        super().__init__()
        self.dag = dag
        self.key = key

    @property
    def control(self) -> DagView:
        return self.dag


class DagView(ScrollView, can_focus=True):
    """The graph of one asset group or task pipeline, coloured by each node's latest status."""

    HELP_TITLE = "Graph"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "activate", "Open", show=True),
        Binding("left", "move('left')", "Upstream", show=False),
        Binding("right", "move('right')", "Downstream", show=False),
        Binding("up,k", "move('up')", "Up", show=False),
        Binding("down,j", "move('down')", "Down", show=False),
        Binding("home", "first", "First node", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "dag--edge",
        "dag--selected",
        "dag--check",
        *(f"dag--{status}" for status in STYLES),
    }

    selected: reactive[str | None] = reactive(None, init=False)
    """Key of the highlighted node."""

    class NodeHighlighted(_NodeMessage):
        """The highlighted node changed (`key` is None in an empty graph)."""

        key: str | None

    class NodeActivated(_NodeMessage):
        """Enter (or a double click) on a node."""

        key: str

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's name for it
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.layout_data = DagLayout()
        self.statuses: dict[str, str] = {}
        self.check_results: dict[tuple[str, str], bool] = {}
        self.empty_message = "nothing to draw"
        self._strips: dict[int, Strip] = {}
        self._rich_styles: dict[str, Style] = {}

    # --- data ---------------------------------------------------------------------------------

    def set_nodes(self, nodes: Sequence[DagNode]) -> None:
        """Lay out and show a new graph (synchronously: fine for a few dozen nodes)."""
        self.set_layout(layout_dag(nodes))

    def set_layout(self, layout: DagLayout) -> None:
        """Show a graph laid out elsewhere (e.g. in a worker thread)."""
        self.layout_data = layout
        self._strips.clear()
        self.virtual_size = Size(layout.width, layout.height)
        keep = self.selected if self.selected in layout.boxes else None
        if keep is None:
            keep = next((layer[0] for layer in layout.layers if layer), None)
        self.set_reactive(DagView.selected, keep)
        self.post_message(self.NodeHighlighted(self, keep))
        self.scroll_to(0, 0, animate=False)
        if keep is not None:
            self.call_after_refresh(self._scroll_to_selected)
        self.refresh()

    def set_statuses(self, statuses: Mapping[str, str]) -> None:
        """Recolour the nodes whose status changed (no new layout)."""
        changed = {
            k for k in set(statuses) | set(self.statuses) if statuses.get(k) != self.statuses.get(k)
        }
        self.statuses = dict(statuses)
        self._invalidate(changed)

    def set_check_results(self, results: Mapping[tuple[str, str], bool]) -> None:
        """(asset, check) → passed, for the glyph in front of each check line."""
        changed = {a for a, _ in set(results) ^ set(self.check_results)}
        changed |= {a for (a, c), ok in results.items() if self.check_results.get((a, c)) != ok}
        self.check_results = dict(results)
        self._invalidate(changed)

    def _invalidate(self, keys: Iterable[str]) -> None:
        dirty = False
        for key in keys:
            box = self.layout_data.boxes.get(key)
            if box is None:
                continue
            for y in range(box.y, box.y + box.height):
                self._strips.pop(y, None)
            dirty = True
        if dirty:
            self.refresh()

    # --- drawing ------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._rich_styles.clear()
        self._strips.clear()

    def _style(self, name: str) -> Style:
        style = self._rich_styles.get(name)
        if style is None:
            style = self._rich_styles[name] = self.get_component_rich_style(f"dag--{name}")
        return style

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if not self.layout_data.boxes:
            text = f" {self.empty_message}" if y == 1 else ""
            return Strip([Segment(text, self._style(NEVER))]).crop_extend(0, width, base)
        if row >= self.layout_data.height:
            return Strip.blank(width, base)
        strip = self._strips.get(row)
        if strip is None:
            strip = self._strips[row] = self._build_row(row)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_offsets(scroll_x, row)

    def _build_row(self, row: int) -> Strip:
        layout = self.layout_data
        line = layout.lines[row]
        edge = self._style("edge")
        segments: list[Segment] = []
        x = 0
        for key in layout.row_boxes[row]:
            box = layout.boxes[key]
            if box.x > x:
                segments.append(Segment(line[x : box.x], edge))
            status = self.statuses.get(key) or NEVER
            rel = row - box.y
            if rel < 3:
                style = self._style(status if status in STYLES else StepStatus.FAILED)
                if key == self.selected:
                    # Reverse when focused; only bold when another pane has the keys.
                    style += self._style("selected") if self.has_focus else Style(bold=True)
                part = line[box.x : box.x + box.width]
                if rel == 1:
                    part = part[:2] + glyph(status) + part[3:]
                segments.append(Segment(part, style))
                x = box.x + box.width
            else:
                name, _blocking = box.checks[rel - 3]
                end = box.x + box.check_widths[rel - 3]
                if end - box.x < 3:
                    x = box.x
                    continue
                passed = self.check_results.get((key, name))
                check_status = (
                    NEVER if passed is None else StepStatus.SUCCESS if passed else StepStatus.FAILED
                )
                segments.append(Segment(line[box.x], edge))
                segments.append(Segment(glyph(check_status), self._style(check_status)))
                segments.append(Segment(line[box.x + 2 : end], self._style("check")))
                x = end
        if x < len(line):
            segments.append(Segment(line[x:], edge))
        return Strip(segments)

    # --- navigation ---------------------------------------------------------------------------

    def watch_selected(self, old: str | None, new: str | None) -> None:
        self._invalidate([k for k in (old, new) if k is not None])
        self._scroll_to_selected()
        self.post_message(self.NodeHighlighted(self, new))

    def on_focus(self) -> None:
        self._invalidate([self.selected] if self.selected else [])

    def on_blur(self) -> None:
        self._invalidate([self.selected] if self.selected else [])

    def _scroll_to_selected(self) -> None:
        box = self.layout_data.boxes.get(self.selected or "")
        if box is not None:
            self.scroll_to_region(box.region, spacing=None, animate=False, force=True)

    def select(self, key: str) -> None:
        if key in self.layout_data.boxes:
            self.selected = key

    def action_first(self) -> None:
        first = next((layer[0] for layer in self.layout_data.layers if layer), None)
        if first is not None:
            self.selected = first

    def action_move(self, direction: str) -> None:
        target = self.neighbour(self.selected, direction)
        if target is not None:
            self.selected = target

    def neighbour(self, key: str | None, direction: str) -> str | None:
        """The node reached from `key` by an arrow key (None when there is nowhere to go).

        Left and right follow edges (to the connected node nearest in height), falling back to
        the nearest node of the next layer; up and down move within the layer.
        """
        layout = self.layout_data
        if key is None or key not in layout.boxes:
            return next((layer[0] for layer in layout.layers if layer), None)
        box = layout.boxes[key]
        if direction in ("up", "down"):
            layer = layout.layers[box.layer]
            i = layer.index(key) + (1 if direction == "down" else -1)
            return layer[i] if 0 <= i < len(layer) else None
        linked = layout.downstream[key] if direction == "right" else layout.upstream[key]
        if not linked:
            r = box.layer + (1 if direction == "right" else -1)
            linked = tuple(layout.layers[r]) if 0 <= r < len(layout.layers) else ()
        if not linked:
            return None
        return min(linked, key=lambda k: (abs(layout.boxes[k].mid - box.mid), layout.boxes[k].x))

    def box_at(self, x: int, y: int) -> str | None:
        for key in self.layout_data.row_boxes[y] if 0 <= y < self.layout_data.height else ():
            if any(r.contains(x, y) for r in self.layout_data.boxes[key].regions):
                return key
        return None

    def action_activate(self) -> None:
        if self.selected is not None:
            self.post_message(self.NodeActivated(self, self.selected))

    def on_click(self, event: events.Click) -> None:
        scroll_x, scroll_y = self.scroll_offset
        key = self.box_at(event.x + scroll_x, event.y + scroll_y)
        if key is None:
            return
        self.selected = key
        if event.chain >= 2:
            self.post_message(self.NodeActivated(self, key))


__all__ = ["Box", "DagLayout", "DagNode", "DagView", "layout_dag"]
