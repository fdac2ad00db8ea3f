"""The ways to an asset's page and anything else: the command palette finds anything by name
(assets, runs by id prefix, task pipelines, schedules and sensors, and the actions on them,
ranked by fuzzy match), and Enter on an asset in the tree opens its page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.command import Command, CommandList, CommandPalette

from tests.tui.fakes import FakeClient
from tests.tui.waits import until
from tui.app import DagtopApp
from tui.screens.asset import AssetScreen
from tui.screens.automation import AutomationScreen
from tui.screens.home import HomeScreen
from tui.screens.run import RunScreen


@pytest.fixture
def app(fake_client: FakeClient, clock: Callable[[], float]) -> DagtopApp:
    return DagtopApp(fake_client, mode="offline", clock=clock)


async def home_ready(app: DagtopApp, pilot: Any) -> HomeScreen:
    await until(lambda: isinstance(app.screen, HomeScreen) and app.screen.manifest is not None,
                pilot)  # fmt: skip
    assert isinstance(app.screen, HomeScreen)
    return app.screen


def hits(app: DagtopApp) -> list[str]:
    """The palette's hits, best first, as their plain titles."""
    if not isinstance(app.screen, CommandPalette):
        return []
    found = app.screen.query_one(CommandList)
    return [
        str(option.hit.text or option.prompt)
        for option in found.options
        if isinstance(option, Command)
    ]


async def search(app: DagtopApp, pilot: Any, query: str, first: str) -> list[str]:
    """Open the palette, type `query`, wait until `first` is the best hit; the hits."""
    await pilot.press("ctrl+p")
    await until(lambda: isinstance(app.screen, CommandPalette), pilot)
    await pilot.press(*query)
    await until(lambda: hits(app)[:1] == [first], pilot)
    return hits(app)


async def test_an_asset_by_name_opens_its_page(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        found = await search(app, pilot, "revenue", "revenue")
        # Its actions too, and the other asset whose name holds the word, lower.
        assert "Materialize revenue" in found and "Backfill revenue" in found
        assert found.index("revenue_report") > 0
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, AssetScreen), pilot)
        assert isinstance(app.screen, AssetScreen) and app.screen.asset == "revenue"


async def test_fuzzy_matches_rank_the_closest_first(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        found = await search(app, pilot, "trnmodl", "trained_model")
        assert "Materialize trained_model" in found


async def test_a_run_by_its_id_prefix_opens_the_run(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        await search(app, pilot, "4f2a", "run 4f2a9c01b2d3  *trained_model")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RunScreen), pilot)
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == "4f2a9c01b2d3"


async def test_a_task_pipeline_shows_its_graph(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await home_ready(app, pilot)
        app.push_screen(AssetScreen("evaluation"))  # jumps work from any screen
        await until(lambda: isinstance(app.screen, AssetScreen), pilot)
        await search(app, pilot, "training_tasks", "training_tasks")
        await pilot.press("enter")
        await until(lambda: app.screen is home, pilot)
        await until(lambda: home.graph_shown == ("pipeline", "training_tasks"), pilot)


async def test_schedules_and_sensors_open_their_screen_and_toggle(
    app: DagtopApp, fake_client: FakeClient
) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        await search(app, pilot, "nightly_sales", "nightly_sales")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, AutomationScreen), pilot)

        found = await search(app, pilot, "turn nightly", "Turn schedule nightly_sales off")
        assert found[0] == "Turn schedule nightly_sales off"
        await pilot.press("enter")
        await until(lambda: fake_client.toggles == [("schedule", "nightly_sales", False)], pilot)
        assert isinstance(app.screen, HomeScreen)


async def test_materialize_by_name(app: DagtopApp, fake_client: FakeClient) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        await search(app, pilot, "materialize deployed", "Materialize deployed")
        await pilot.press("enter")
        await until(lambda: len(fake_client.submitted) == 1, pilot)
        assert fake_client.submitted[0].selection == ("deployed",)


async def test_materialize_by_name_asks_for_a_typed_config_first(
    app: DagtopApp, fake_client: FakeClient
) -> None:
    from tui.screens.config import ConfigForm

    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        await search(app, pilot, "materialize trained_model", "Materialize trained_model")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ConfigForm), pilot)  # as `m` on it does
        assert fake_client.submitted == []


async def test_a_word_is_not_read_as_a_run_id(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        found = await search(app, pilot, "deployed", "deployed")
        assert not any(title.startswith("run ") for title in found)


async def test_enter_on_an_asset_in_the_tree_opens_its_page(app: DagtopApp) -> None:
    from tui.widgets.pipelines_tree import NodeRef

    async with app.run_test(size=(160, 48)) as pilot:
        home = await home_ready(app, pilot)
        tree = home.pipelines
        tree.focus()
        tree.move_cursor(tree.find(NodeRef("asset", "revenue", "daily_sales.py", "sales")))
        await pilot.pause()
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, AssetScreen), pilot)
        assert isinstance(app.screen, AssetScreen) and app.screen.asset == "revenue"
        # A task still opens its latest step.
        await pilot.press("escape")
        await until(lambda: app.screen is home, pilot)
        tree.move_cursor(
            tree.find(NodeRef("task", "extract", "ml_training_tasks.py", "training_tasks"))
        )
        await pilot.pause()
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RunScreen), pilot)
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == "a0b1c2d3e4f5"


async def test_backfill_by_name_opens_the_dialog(app: DagtopApp) -> None:
    from tui.screens.backfill import BackfillDialog

    async with app.run_test(size=(160, 48)) as pilot:
        await home_ready(app, pilot)
        await search(app, pilot, "backfill orders", "Backfill orders")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
