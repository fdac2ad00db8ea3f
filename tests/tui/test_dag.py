"""The DAG widget: a layout without overlaps, navigation along edges, recolouring in place."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from textual.app import App, ComposeResult

from engine.loading.manifest import Manifest
from engine.status import StepStatus
from tui.screens.home import graph_nodes
from tui.widgets.dag import DagLayout, DagNode, DagView, layout_dag


def random_dag(n: int, seed: int = 7, max_up: int = 3) -> list[DagNode]:
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        window = list(range(max(0, i - 12), i))
        ups = rng.sample(window, k=min(len(window), rng.randint(0, max_up)))
        checks = (("not_empty", True),) if i % 9 == 0 else ()
        nodes.append(DagNode(f"asset_{i:03d}", tuple(f"asset_{u:03d}" for u in ups), checks))
    return nodes


def assert_clean(layout: DagLayout, nodes: list[DagNode]) -> None:
    """No two boxes overlap, no edge crosses a box, and every edge ends in an arrow."""
    assert set(layout.boxes) == {n.key for n in nodes}
    owner: dict[tuple[int, int], str] = {}
    for key, box in layout.boxes.items():
        for region in box.regions:
            for y in range(region.y, region.bottom):
                for x in range(region.x, region.right):
                    assert (x, y) not in owner, f"{key} overlaps {owner[(x, y)]} at {x},{y}"
                    owner[(x, y)] = key
    crossed = layout.edge_cells & owner.keys()
    assert not crossed, f"edges cross boxes at {sorted(crossed)[:5]}"
    for node in nodes:
        box = layout.boxes[node.key]
        if any(u in layout.boxes for u in node.upstream):
            assert layout.lines[box.mid][box.x - 1] == "▶", f"no arrow into {node.key}"
        assert layout.lines[box.mid][box.x + 4 :].startswith(node.key[:20])


def example_graphs(manifest: Manifest) -> list[tuple[str, list[DagNode]]]:
    graphs = [(f"group {g}", graph_nodes(manifest, "group", g)) for g in manifest.groups()]
    graphs += [(f"pipeline {p}", graph_nodes(manifest, "pipeline", p)) for p in manifest.pipelines]
    return graphs


def test_example_pipelines_lay_out_without_overlaps(examples_manifest: Manifest) -> None:
    graphs = example_graphs(examples_manifest)
    assert len(graphs) >= 4
    for name, nodes in graphs:
        layout = layout_dag(nodes)
        assert_clean(layout, nodes)
        assert layout.height < 30, name


def test_the_training_chain_is_one_straight_row(examples_manifest: Manifest) -> None:
    layout = layout_dag(graph_nodes(examples_manifest, "group", "training"))
    text = layout.text()
    row = next(line for line in text.splitlines() if "raw_digits" in line)
    for name in ("raw_digits", "features", "trained_model", "evaluation", "deployed"):
        assert name in row
    assert "check no_nulls (blocking)" in text
    assert "check accuracy_above_90pct" in text


@pytest.mark.parametrize("n", [120])
def test_a_big_generated_graph_lays_out_without_overlaps(n: int) -> None:
    nodes = random_dag(n)
    layout = layout_dag(nodes)
    assert_clean(layout, nodes)
    assert len([k for layer in layout.layers for k in layer]) == n


class DagApp(App[None]):
    def __init__(self, nodes: list[DagNode]) -> None:
        super().__init__()
        self.nodes = nodes
        self.seen: list[Any] = []

    def compose(self) -> ComposeResult:
        yield DagView()

    def on_mount(self) -> None:
        dag = self.query_one(DagView)
        dag.set_nodes(self.nodes)
        dag.focus()

    def on_dag_view_node_activated(self, event: DagView.NodeActivated) -> None:
        self.seen.append(event.key)


DIAMOND = [
    DagNode("extract"),
    DagNode("clean", ("extract",)),
    DagNode("train", ("clean",)),
    DagNode("baseline", ("clean",)),
    DagNode("evaluate", ("train", "baseline")),
]


async def test_arrows_move_along_edges_and_within_layers() -> None:
    app = DagApp(DIAMOND)
    async with app.run_test(size=(100, 30)) as pilot:
        dag = app.query_one(DagView)
        assert dag.selected == "extract"
        await pilot.press("right")
        assert dag.selected == "clean"
        await pilot.press("right")
        first = dag.selected
        assert first in ("train", "baseline")
        await pilot.press("down" if dag.layout_data.layers[2][0] == first else "up")
        assert dag.selected == ({"train", "baseline"} - {first}).pop()
        await pilot.press("right")
        assert dag.selected == "evaluate"
        await pilot.press("right")  # nowhere further: stays
        assert dag.selected == "evaluate"
        await pilot.press("left", "left")
        assert dag.selected == "clean"
        await pilot.press("enter")
        assert app.seen == ["clean"]


async def test_layout_and_drawing_300_nodes_is_fast() -> None:
    nodes = random_dag(300, seed=3)
    started = time.perf_counter()
    layout = layout_dag(nodes)
    laid_out = time.perf_counter() - started
    assert_clean(layout, nodes)
    app = DagApp([])
    async with app.run_test(size=(160, 48)) as pilot:
        dag = app.query_one(DagView)
        dag.set_layout(layout)
        await pilot.pause()
        started = time.perf_counter()
        for y in range(layout.height):  # every row styled, as if all were on screen at once
            dag._build_row(y)
        drawn = time.perf_counter() - started
        started = time.perf_counter()
        dag._strips.clear()
        for y in range(dag.size.height):  # what one frame really costs: the visible rows
            dag.render_line(y)
        frame = time.perf_counter() - started
    print(
        f"\n300 nodes: layout {laid_out * 1e3:.0f} ms, all {layout.height} rows "
        f"{drawn * 1e3:.0f} ms, one frame {frame * 1e3:.1f} ms"
    )
    assert laid_out + drawn < 2.0  # well under a second on an idle machine


async def test_selection_scrolls_into_view_in_a_big_graph() -> None:
    app = DagApp(random_dag(120))
    async with app.run_test(size=(80, 20)) as pilot:
        dag = app.query_one(DagView)
        last = dag.layout_data.layers[-1][-1]
        dag.select(last)
        await pilot.pause()
        box = dag.layout_data.boxes[last]
        x, y = dag.scroll_offset
        assert x <= box.x and box.x + box.width <= x + dag.size.width
        assert y <= box.y and box.y + 3 <= y + dag.size.height


async def test_recolour_without_relayout() -> None:
    app = DagApp(DIAMOND)
    async with app.run_test(size=(100, 30)) as pilot:
        dag = app.query_one(DagView)
        layout = dag.layout_data
        box = layout.boxes["train"]
        before = dag._build_row(box.mid).text
        assert "· train" in before
        dag.set_statuses({"extract": StepStatus.SUCCESS, "train": StepStatus.RUNNING})
        await pilot.pause()
        assert dag.layout_data is layout
        assert "◐ train" in dag._build_row(box.mid).text
        assert "✓ extract" in dag._build_row(layout.boxes["extract"].mid).text
        dag.set_statuses({"extract": StepStatus.SUCCESS, "train": StepStatus.FAILED})
        assert "✗ train" in dag._build_row(box.mid).text
        assert dag.layout_data is layout


def test_the_layout_module_leaves_numpy_unimported_and_importable() -> None:
    """grandalf is imported without numpy (a tenth of a second of the first frame), and numpy
    is importable afterwards as ever; a numpy imported before is used as it is."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import tui.widgets.dag as dag\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
        "assert dag.layout_dag([dag.DagNode('a', ()), dag.DagNode('b', ('a',))]).boxes\n"
        "import numpy\n"
        "import grandalf.utils.geometry as g\n"
        "print(g.has_numpy, numpy.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "numpy"]
    before = "import numpy\nimport tui.widgets.dag\nimport grandalf.utils.geometry as g\n"
    out = subprocess.run(
        [sys.executable, "-c", before + "print(g.has_numpy)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["True"]
