"""The run screen and the DAG view of task pipelines that map and branch, on real runs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable

from engine.client import Client
from engine.status import RunStatus, StepStatus
from tests.tui import fakes
from tests.tui.test_run_screen import RunApp
from tests.tui.waits import until
from tui.screens.home import graph_nodes
from tui.screens.run import RunScreen
from tui.widgets.dag import layout_dag

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "task_flow.py"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    pipelines = tmp_path / "project" / "pipelines"
    pipelines.mkdir(parents=True)
    shutil.copy(FIXTURE, pipelines / "task_flow.py")
    (tmp_path / "project" / "dagtop.toml").write_text("max_workers = 2\n")
    yield Client(home=tmp_path / "home", pipelines=pipelines)


async def shown(client: Client, run_id: str) -> dict[str, str]:
    """Each row of the run screen's step table: step -> its reason cell."""
    app = RunApp(client, run_id)
    app.clock = time.time
    async with app.run_test(size=(160, 40)) as pilot:
        deadline = time.monotonic() + 10
        screen = app.screen
        while time.monotonic() < deadline:
            await pilot.pause(0.05)
            screen = app.screen
            if isinstance(screen, RunScreen) and screen.run is not None:
                break
        assert isinstance(screen, RunScreen)
        table = screen.query_one("#steps", DataTable)
        return {str(row.value): str(table.get_cell(str(row.value), "reason")) for row in table.rows}


@pytest.mark.serial
@pytest.mark.timeout(60)
async def test_mapped_instances_and_skip_reasons_are_rows_of_the_run_screen(
    client: Client,
) -> None:
    mapped = client.run_pipeline("per_file", params={"files": ["a.csv", "b.csv"]})
    branch = client.run_pipeline("branching", params={"score": 0.1})
    assert (mapped.status, branch.status) == (RunStatus.SUCCESS, RunStatus.SUCCESS)

    rows = await shown(client, mapped.id)
    assert list(rows) == ["list_files", "process[0]", "process[1]", "summarize", "tidy"]
    rows = await shown(client, branch.id)
    assert rows["train"] == "not chosen by choose"
    assert rows["deploy"] == "upstream train skipped"

    # The DAG view: the mapped task is one node, coloured by its instances.
    nodes = graph_nodes(client.load(), "pipeline", "per_file")
    assert "process[*]" in layout_dag(nodes).text()
    status = client.node_statuses(pipeline="per_file")["process"]
    assert (status.status, status.reason) == (StepStatus.SUCCESS, "2 mapped: 2 success")
    empty = client.run_pipeline("per_file", params={"files": []})
    assert empty.status == RunStatus.SUCCESS
    status = client.node_statuses(pipeline="per_file")["process"]
    assert (status.status, status.reason) == (StepStatus.SKIPPED, "mapped to no instance")


async def test_a_mapped_step_before_its_list_says_what_it_will_become() -> None:
    t = 1_750_000_000.0
    steps = (
        fakes.step("list_files", StepStatus.RUNNING, started=t, kind="python"),
        fakes.step("process", StepStatus.QUEUED, upstream=("list_files",), kind="map"),
        fakes.step("summarize", StepStatus.QUEUED, upstream=("process",), kind="python"),
    )
    client = fakes.FakeClient(
        runs=[fakes.run("5a6b7c8d9e0f", RunStatus.RUNNING, "per_file", steps, t, kind="pipeline")]
    )
    app = RunApp(client, "5a6b", now=t + 1)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.run is not None, pilot)
        table = app.screen.query_one("#steps", DataTable)
        reason = str(table.get_cell("process", "reason"))
        assert reason == "mapped: one step per element of list_files's list"
        assert str(table.get_cell("summarize", "reason")) == ""
