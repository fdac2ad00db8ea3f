"""The real app on a temp home with the example pipelines and an embedded real engine.

The seams between the UI and the engine are where users get hurt: these press the keys a user
would and watch the real engine's results arrive through the real event path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import ContentSwitcher, Static

from engine.client import Client
from engine.status import BackfillStatus, PartitionStatus, RunStatus, StepStatus
from tests.tui.fakes import copy_examples
from tests.tui.reading import labels, plain
from tests.tui.waits import until
from tui.app import DagtopApp
from tui.screens.confirm import PromptScreen
from tui.screens.home import HomeScreen
from tui.widgets.pipelines_tree import NodeRef

pytestmark = pytest.mark.serial


def _embedded(tmp_path: Path) -> Iterator[Client]:
    client = Client(home=tmp_path / "home", pipelines=copy_examples(tmp_path))
    engine = client.start_engine(kind="tui")
    yield client
    engine.stop(grace=1.0)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    yield from _embedded(tmp_path)


@pytest.fixture
def pg_client(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """The same, with its history in a PostgreSQL database of its own."""
    monkeypatch.setenv("DAGTOP_DATABASE_URL", pg_url)
    yield from _embedded(tmp_path)


def succeeded(backfills: list[dict[str, Any]]) -> bool:
    """Whether the newest backfill has succeeded."""
    return bool(backfills) and backfills[0]["status"] == BackfillStatus.SUCCESS


async def home_with_graph(app: DagtopApp, pilot: Pilot[None]) -> HomeScreen:
    """The home screen, once it has loaded the pipelines and shows a graph."""
    await until(lambda: isinstance(app.screen, HomeScreen), pilot)
    home = app.screen
    assert isinstance(home, HomeScreen)
    await until(lambda: home.manifest is not None and home.graph_shown is not None, pilot, 30)
    return home


async def show_orders(home: HomeScreen, pilot: Pilot[None]) -> None:
    """Put the tree's cursor on the orders asset and wait for the sales graph."""
    tree = home.pipelines
    tree.move_cursor(tree.find(NodeRef("asset", "orders", "daily_sales.py", "sales")))
    await until(lambda: home.graph_shown == ("group", "sales"), pilot)


async def test_m_on_an_asset_runs_it_and_its_node_turns_green(client: Client) -> None:
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        home = await home_with_graph(app, pilot)
        await show_orders(home, pilot)
        home.dag.focus()
        home.dag.select("orders")
        await pilot.pause()
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, PromptScreen), pilot)
        await pilot.press("enter")  # the prefilled key: the last day of the partitions
        await until(
            lambda: home.dag.statuses.get("orders") == StepStatus.SUCCESS, pilot, timeout=60
        )
        assert "✓ orders ▦" in labels(home)
        # (the engine's scheduler may start its own runs beside ours)
        run = next(r for r in home.runs_table.runs.values() if r.target == "orders")
        assert run.partition == "2025-01-31"
        await until(lambda: home.runs_table.get_cell(run.id, "status").plain == "✓", pilot)
        await until(lambda: bool(home.status_bar.cpu), pilot)  # the real machine's load


async def test_a_broken_file_shows_its_error_and_edits_reload(client: Client) -> None:
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: isinstance(app.screen, HomeScreen), pilot)
        home = app.screen
        assert isinstance(home, HomeScreen)
        await until(lambda: home.manifest is not None, pilot, 30)
        assert labels(home)[-1] == "✗ broken_feature.py"
        tree = home.pipelines
        tree.move_cursor(tree.find(NodeRef("broken", "broken_feature.py", "broken_feature.py")))
        pane = home.query_one("#graph-pane", ContentSwitcher)
        await until(lambda: pane.current == "error-view", pilot)
        error = home.query_one("#error-text", Static)
        await until(lambda: "def features_v2" in plain(error.content), pilot)
        assert "names no asset" in plain(error.content)

        # Breaking another file while the UI runs: the engine reloads, the tree follows.
        (client.paths.pipelines / "typo.py").write_text("def oops(:\n    pass\n")
        await until(lambda: "✗ typo.py" in labels(home), pilot, 60)
        await pilot.pause(0.2)  # the rebuilt tree lays its lines out on the next refresh
        tree.move_cursor(tree.find(NodeRef("broken", "typo.py", "typo.py")))
        await until(lambda: "Syntax error in typo.py" in plain(error.content), pilot)


async def test_a_failure_rings_the_bell_and_is_one_key_away(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.client import RunRequest
    from tui.screens.run import RunScreen

    app = DagtopApp(client, mode="embedded")
    rings: list[bool] = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(True))
    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: isinstance(app.screen, HomeScreen), pilot)
        # The report needs days of revenue that do not exist yet: it fails, with a reason.
        run_id = client.submit(RunRequest(selection=("revenue_report",)))
        await until(lambda: app.last_failure is not None, pilot, timeout=60)
        assert app.last_failure == (run_id, "revenue_report")
        assert rings == [True]
        await pilot.press("exclamation_mark")
        await until(lambda: isinstance(app.screen, RunScreen), pilot)


async def test_a_stale_node_says_why_under_the_graph(client: Client) -> None:
    # revenue for a day, then orders for that day again: revenue is now older than its input.
    client.materialize(["orders", "revenue"], partition="2025-01-30")
    client.materialize(["orders"], partition="2025-01-30")
    assert client.node_statuses()["revenue"].status == PartitionStatus.STALE
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        home = await home_with_graph(app, pilot)
        await show_orders(home, pilot)
        await until(
            lambda: home.dag.statuses.get("revenue") == PartitionStatus.STALE, pilot, timeout=30
        )
        home.dag.focus()
        await until(lambda: home.dag.has_focus, pilot)
        home.dag.select("revenue")
        pane = home.query_one("#graph-pane")
        expected = "◧ revenue [2025-01-30] stale: upstream orders newer"
        await until(lambda: expected in str(pane.border_subtitle), pilot)


async def test_c_on_a_running_run_cancels_it_for_real(client: Client) -> None:
    from engine.client import RunRequest
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.run import RunScreen

    (client.paths.pipelines / "slow.py").write_text(
        "import time\n\nfrom engine import asset\n\n\n@asset\ndef slow():\n"
        "    time.sleep(60)\n    return 1\n"
    )
    assert client.engine is not None
    client.engine.reload()
    run_id = client.submit(RunRequest(selection=("slow",)))
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: isinstance(app.screen, HomeScreen), pilot)
        await until(
            lambda: client.run(run_id).steps[0].status == StepStatus.RUNNING, pilot, timeout=30
        )
        app.push_screen(RunScreen(run_id))
        await until(lambda: isinstance(app.screen, RunScreen), pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await until(lambda: screen.run is not None, pilot)
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: client.run(run_id).status == RunStatus.CANCELED, pilot, timeout=15)
        assert client.run(run_id).steps[0].status == StepStatus.CANCELED


async def test_i_shows_the_lineage_of_the_selected_asset(client: Client) -> None:
    from tui.screens.lineage import LineageScreen

    client.materialize(["orders", "revenue"], partition="2025-01-29")
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        home = await home_with_graph(app, pilot)
        tree = home.pipelines
        tree.move_cursor(tree.find(NodeRef("asset", "revenue", "daily_sales.py", "sales")))
        await until(lambda: home.asset_statuses.get("revenue") is not None, pilot, 30)
        tree.focus()
        await pilot.press("i")
        await until(lambda: isinstance(app.screen, LineageScreen), pilot)
        text = app.screen.query_one("#lineage-text", Static)
        await until(lambda: "└── orders [2025-01-29]" in plain(text.content), pilot)
        assert plain(text.content).startswith("revenue [2025-01-29]")
        await pilot.press("d")
        await until(lambda: "revenue_report" in plain(text.content), pilot)


async def test_the_ui_works_unchanged_on_a_postgresql_home_and_says_where_steps_ran(
    pg_client: Client,
) -> None:
    import os

    from engine.client import RunRequest
    from tui.screens.run import RunScreen

    client = pg_client
    assert client.db.dialect.name == "postgresql"
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        home = await home_with_graph(app, pilot)
        run_id = client.submit(RunRequest(selection=("orders",), partition="2025-01-15"))
        await until(lambda: run_id in home.runs_table.runs, pilot, 30)
        await until(lambda: home.runs_table.get_cell(run_id, "status").plain == "✓", pilot, 60)
        app.push_screen(RunScreen(run_id))
        await until(lambda: isinstance(app.screen, RunScreen), pilot)
        shown = f"ran on {os.uname().nodename} (local)"

        def says_where() -> bool:
            found = app.screen.query("#log-info")
            return bool(found) and shown in plain(found.first(Static).content)

        await until(says_where, pilot, 30)


RANGED = """
from engine import BackfillPolicy, DailyPartitions, asset

days = DailyPartitions(start="2025-01-01", end="2025-02-01")


@asset(group="ranged", partitions=days, backfill_policy=BackfillPolicy.single_run())
def monthly_load(context):
    return {day: day for day in context.partition_keys}
"""


async def test_the_backfill_dialog_counts_runs_by_the_assets_backfill_policy(
    client: Client,
) -> None:
    from tui.screens.backfill import BackfillDialog

    (client.paths.pipelines / "ranged.py").write_text(RANGED)
    assert client.engine is not None
    client.engine.reload()
    app = DagtopApp(client, mode="embedded")
    async with app.run_test(size=(160, 48)) as pilot:
        await home_with_graph(app, pilot)

        def summary() -> str:
            found = app.screen.query("#backfill-summary")
            return plain(found.first(Static).render()) if found else ""

        # A policy of one run: 31 days are one run of one step.
        app.push_screen(BackfillDialog(["monthly_load"], "2025-01-01", "2025-01-31"))
        await until(lambda: "→ 1 runs, 1 steps" in summary(), pilot, 20)
        await pilot.click("#backfill-start")
        await until(lambda: succeeded(client.backfills()), pilot, 60)
        assert client.backfills()[0]["total"] == 31
        assert [r.partition for r in client.runs() if r.target == "monthly_load"] == [
            "2025-01-01...2025-01-31"
        ]

        # Mixed with an asset that runs a partition at a time: said in the dialog, no Start.
        app.push_screen(BackfillDialog(["monthly_load", "orders"], "2025-01-01", "2025-01-03"))
        await until(lambda: "'orders' one partition per run" in summary(), pilot, 20)
        assert app.screen.query_one("#backfill-start").disabled
