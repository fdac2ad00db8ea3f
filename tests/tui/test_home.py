"""The home screen, driven through the real DagtopApp against FakeClient (fixed data, no engine)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from textual import events
from textual.binding import Binding
from textual.widgets import ContentSwitcher, Static

from engine.client import RunRequest
from engine.errors import SelectionError
from engine.status import RunStatus, StepStatus
from tests.tui.fakes import NOW, FakeClient, FakeEngine, run, step
from tests.tui.reading import labels, plain
from tests.tui.waits import until
from tui.app import DagtopApp
from tui.commands import DagtopCommands
from tui.messages import EngineChanged
from tui.screens.asset import AssetScreen
from tui.screens.confirm import ConfirmScreen, PromptScreen, QuitScreen
from tui.screens.help import HelpScreen
from tui.screens.home import HomeScreen
from tui.widgets.pipelines_tree import NodeRef


def home_of(app: DagtopApp) -> HomeScreen:
    screen = next(s for s in app.screen_stack if isinstance(s, HomeScreen))
    return screen


def is_ready(app: DagtopApp) -> bool:
    screens = [s for s in app.screen_stack if isinstance(s, HomeScreen)]
    if not screens:
        return False
    home = screens[0]
    return (
        home.manifest is not None
        and bool(home.runs_table.runs)
        and bool(home.status_bar.cpu)
        and home.graph_shown is not None
        and bool(home.dag.layout_data.boxes)
        and home.pipelines.cursor_node is not None  # its first highlight has been handled
        and bool(home.automation.next_ticks)
    )


async def ready(app: DagtopApp, pilot: Any) -> HomeScreen:
    await until(lambda: is_ready(app), pilot)
    await pilot.pause()
    return home_of(app)


@pytest.fixture
def app(fake_client: FakeClient, clock: Callable[[], float]) -> DagtopApp:
    """The real app over the fake client, offline (read-only, no engine to listen to)."""
    return DagtopApp(fake_client, mode="offline", clock=clock)


@pytest.fixture
def embedded_app(fake_client: FakeClient, clock: Callable[[], float]) -> DagtopApp:
    """The real app as it runs beside an engine: the fake's engine is the one it listens to."""
    fake_client.engine = FakeEngine()
    return DagtopApp(fake_client, mode="embedded", clock=clock)


# --- the tree, the graph and the error pane ---------------------------------------------------


async def test_tree_graph_and_broken_file(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        expected = (
            "ml_training.py", "training · assets", "✓ raw_digits", "✓ features",
            "◐ trained_model", "· deployed", "✗ parsed_orders", "✓ orders ▦",
            "training_tasks · tasks", "… extract",
        )  # fmt: skip
        # The statuses arrive with the first reads, a moment after the tree: wait for them.
        await until(lambda: all(label in labels(home) for label in expected), pilot)
        shown = labels(home)
        assert shown[:2] == ["daily_sales.py", "sales · assets"]
        for label in expected:
            assert label in shown, label
        assert shown[-1] == "✗ broken_feature.py"  # broken files last, marked ✗
        expected_rows = [
            ["◷", "nightly_sales", "@daily", "in", "8h", "17m"],
            ["◷", "training_tasks", "0", "3", "*", "*", "*", "in", "11h", "17m"],
            ["○", "inbox", "*.csv", "off"],  # the fake's sensor is off
        ]

        def schedules() -> list[list[str]]:
            return [home.automation.get_row_at(i)[0].plain.split() for i in range(3)]

        # Their state is read once the first frame is drawn: wait for it.
        with contextlib.suppress(AssertionError):
            await until(lambda: schedules() == expected_rows, pilot)
        assert schedules() == expected_rows

        # The graph follows the tree, coloured by the latest statuses and check results.
        tree = home.pipelines
        tree.move_cursor(tree.find(NodeRef("asset", "trained_model", "ml_training.py", "training")))
        await until(lambda: home.graph_shown == ("group", "training"), pilot)
        await until(lambda: home.dag.selected == "trained_model", pilot)
        assert set(home.dag.layout_data.boxes) == {
            "raw_digits", "features", "trained_model", "evaluation", "deployed",
        }  # fmt: skip
        assert home.dag.statuses["trained_model"] == StepStatus.RUNNING
        assert home.dag.check_results == {("raw_digits", "no_nulls"): True}
        assert home.query_one("#graph-pane").border_title == "training · assets"

        # A broken file shows its error and the source around the failing line instead.
        tree.move_cursor(tree.find(NodeRef("broken", "broken_feature.py", "broken_feature.py")))
        pane = home.query_one("#graph-pane", ContentSwitcher)
        await until(lambda: pane.current == "error-view", pilot)
        error = home.query_one("#error-text", Static)
        await until(lambda: "def features_v2" in plain(error.content), pilot)
        text = plain(error.content)
        assert "Unknown input in broken_feature.py, line 6" in text
        assert "'no_such_upstream_asset' that names no asset" in text
        assert pane.border_title == "broken_feature.py · failed to load"
        assert home.check_action("materialize", ()) is None


# --- actions ----------------------------------------------------------------------------------


async def test_m_materializes_the_selection(app: DagtopApp, fake_client: FakeClient) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        # An asset node in the graph, then its whole group with M.
        home.show_graph("group", "training")
        home.dag.focus()
        await pilot.pause()
        home.dag.select("raw_digits")
        await pilot.press("right", "m")
        await until(lambda: len(fake_client.submitted) == 1, pilot)
        assert fake_client.submitted == [RunRequest(selection=("features",))]
        await pilot.press("M")
        await until(lambda: len(fake_client.submitted) == 2, pilot)
        assert fake_client.submitted[1] == RunRequest(selection=("group:training",))

        # A task: the whole task pipeline runs.
        tree = home.pipelines
        tree.focus()
        train = NodeRef("task", "train", "ml_training_tasks.py", "training_tasks")
        tree.move_cursor(tree.find(train))
        await until(lambda: home.graph_shown == ("pipeline", "training_tasks"), pilot)
        await pilot.press("m")
        await until(lambda: len(fake_client.submitted) == 3, pilot)
        assert fake_client.submitted[2] == RunRequest(pipeline="training_tasks")

        # A partitioned asset: a prompt, prefilled with the latest key.
        tree.move_cursor(tree.find(NodeRef("asset", "revenue", "daily_sales.py", "sales")))
        await pilot.pause()
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, PromptScreen), pilot)
        prompt = app.screen
        assert isinstance(prompt, PromptScreen) and prompt.value == "2025-01-30"
        await pilot.press("enter")
        await until(lambda: len(fake_client.submitted) == 4, pilot)
        assert fake_client.submitted[3] == RunRequest(
            selection=("revenue",), partition="2025-01-30"
        )

        # The engine says no: a toast with its title, never a crash.
        fake_client.fail_submit = SelectionError("unknown asset 'x'")
        tree.move_cursor(tree.find(NodeRef("asset", "deployed", "ml_training.py", "training")))
        await pilot.pause()
        await pilot.press("m")
        await until(lambda: any("unknown asset" in n.message for n in app._notifications), pilot)
        note = next(n for n in app._notifications if "unknown asset" in n.message)
        assert note.title == "Unknown selection" and note.severity == "error"


async def test_runs_pane_cancel_rerun_filter_and_open(
    app: DagtopApp, fake_client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, str | None]] = []
    monkeypatch.setattr(
        HomeScreen, "open_run", lambda self, rid, step=None: opened.append((rid, step))
    )
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        table = home.runs_table
        assert [table.get_row_at(i)[1] for i in range(table.row_count)] == [
            "a0b1c2", "4f2a9c", "9c1e77", "77b0c3", "51d8e9",
        ]  # fmt: skip
        table.focus()

        # c and r only apply to runs they make sense for.
        table.move_cursor(row=table.get_row_index("9c1e77aa0b12"))  # a success
        await pilot.pause()
        assert home.check_action("cancel_run", ()) is None
        assert home.check_action("rerun", ()) is None
        table.move_cursor(row=table.get_row_index("77b0c3d4e5f6"))  # a failure
        await pilot.pause()
        await pilot.press("r")
        await until(lambda: fake_client.reruns == ["77b0c3d4e5f6"], pilot)
        await pilot.press("enter")
        assert opened.pop() == ("77b0c3d4e5f6", None)

        # c asks first; no does nothing, yes cancels.
        table.move_cursor(row=table.get_row_index("4f2a9c01b2d3"))
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("n")
        await until(lambda: app.screen is home, pilot)
        assert fake_client.canceled == []
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: fake_client.canceled == ["4f2a9c01b2d3"], pilot)
        # The change is picked up and the row turns canceled (■) in place.
        await until(lambda: table.get_cell("4f2a9c01b2d3", "status").plain == "■", pilot)

        # / filters by text over id, target, status and trigger.
        await pilot.press("slash", *"sensor")
        await until(lambda: table.row_count == 1, pilot)
        assert table.selected_run is not None and table.selected_run.id == "77b0c3d4e5f6"
        await pilot.press("enter")  # back to the table, filter kept
        assert table.has_focus and table.row_count == 1
        await pilot.press("escape")
        await until(lambda: table.row_count == 5, pilot)

        # Enter on a graph node: the asset's page; l: its latest step's log.
        home.show_graph("group", "training")
        home.dag.focus()
        home.dag.select("trained_model")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, AssetScreen), pilot)
        assert isinstance(app.screen, AssetScreen) and app.screen.asset == "trained_model"
        await pilot.press("escape")
        await until(lambda: app.screen is home, pilot)
        home.dag.select("raw_digits")
        await pilot.pause()
        await pilot.press("l")
        assert opened.pop() == ("4f2a9c01b2d3", "raw_digits")

        # t toggles the selected schedule.
        home.automation.focus()
        await pilot.press("t")
        await until(lambda: fake_client.toggles == [("schedule", "nightly_sales", False)], pilot)

        def line() -> list[str]:
            return home.automation.get_row_at(0)[0].plain.split()

        await until(lambda: line()[0] == "○" and line()[-1] == "off", pilot)


async def test_engine_changes_recolour_without_relayout(
    app: DagtopApp, fake_client: FakeClient
) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        home.show_graph("group", "training")
        layout = home.dag.layout_data
        old = fake_client.run("4f2a9c01b2d3")
        done = run(
            old.id, RunStatus.SUCCESS, old.target,
            (*old.steps[:2], step("trained_model", StepStatus.SUCCESS, NOW - 7, NOW - 1)),
            old.created_at, ended=NOW - 1,
        )  # fmt: skip
        fake_client.put(done)
        app.post_message(EngineChanged("run", old.id))
        await until(lambda: "✓ trained_model" in labels(home), pilot)
        assert home.dag.statuses["trained_model"] == StepStatus.SUCCESS
        assert home.dag.layout_data is layout
        assert home.runs_table.get_cell(old.id, "status").plain == "✓"
        assert home.status_bar.running == 0


# --- help, palette, quitting ------------------------------------------------------------------


async def test_help_and_palette(app: DagtopApp, fake_client: FakeClient) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot)
        text = plain(app.screen.query_one("#help-table", Static).content)
        for binding in (*HomeScreen.BINDINGS, *DagtopApp.BINDINGS):
            assert isinstance(binding, Binding) and binding.description in text, binding
        for expected in ("Command palette", "Upstream", "Open run", "Home", "Everywhere"):
            assert expected in text
        await pilot.press("escape")
        await until(lambda: app.screen is home, pilot)

        # The palette offers the actions that apply to the selection, and runs them.
        tree = home.pipelines
        tree.move_cursor(tree.find(NodeRef("asset", "orders", "daily_sales.py", "sales")))
        await pilot.pause()
        titles = [c[0] for c in DagtopCommands(home).commands()]
        for title in ("Materialize", "Backfill", "Partitions", "Reload pipelines", "Quit",
                      "Backfills", "Schedules", "Help"):  # fmt: skip
            assert title in titles, title
        tree.move_cursor(tree.find(NodeRef("asset", "deployed", "ml_training.py", "training")))
        await pilot.pause()
        titles = [c[0] for c in DagtopCommands(home).commands()]
        assert "Partitions" not in titles and "Logs" not in titles
        loads = fake_client.calls.count("load")
        await pilot.press("ctrl+p")
        await pilot.press(*"reload")
        await pilot.press("enter")
        await until(lambda: fake_client.calls.count("load") > loads, pilot)


async def test_an_engine_that_stops_itself_says_so_until_restarted(
    embedded_app: DagtopApp, fake_client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.service.events import EngineEvent

    app = embedded_app
    rings: list[bool] = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(True))
    why = "the disk holding /srv/ml-project/.dagtop/dagtop.db is full"
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        engine = fake_client.engine
        assert engine is not None and engine.listeners
        for listener in list(engine.listeners):  # what the engine's coordinator thread sends
            listener(EngineEvent("stopped", why))
        await until(lambda: app.mode == "stopped", pilot)
        await until(lambda: home.status_bar.mode == "stopped", pilot)
        assert home.status_bar.condition == why and rings == [True]
        assert engine.listeners == []  # nothing more comes from it
        toast = [n for n in app._notifications if n.title == "The engine stopped"]
        assert len(toast) == 1 and why in toast[0].message
        home.request_refresh()  # a refresh that reads fine keeps saying it
        await until(lambda: not home._refreshing, pilot)
        assert home.status_bar.condition == why
        polls: list[float] = []
        read = fake_client.runs_since

        def runs_since(after: float, limit: int = 500) -> list[Any]:
            polls.append(after)
            return read(after, limit)

        monkeypatch.setattr(fake_client, "runs_since", runs_since)
        await until(lambda: len(polls) >= 2, pilot)  # storage is polled, as when attached


async def test_quit_with_runs_in_flight_asks(
    embedded_app: DagtopApp, fake_client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = embedded_app
    exits: list[bool] = []
    monkeypatch.setattr(app, "exit", lambda *args, **kwargs: exits.append(True))
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(app, pilot)
        assert fake_client.engine is not None
        assert fake_client.engine.listeners  # embedded: events come from the engine
        await pilot.press("q")
        await until(lambda: isinstance(app.screen, QuitScreen), pilot)
        assert "2 runs are in flight" in plain(app.screen.query_one(".dialog-text", Static).content)
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, HomeScreen), pilot)
        assert exits == []
        await pilot.press("q")
        await until(lambda: isinstance(app.screen, QuitScreen), pilot)
        await pilot.press("d")
        await until(lambda: exits == [True], pilot)
        assert app.stop_grace < 1 and fake_client.canceled == []
        await pilot.press("q")
        await until(lambda: isinstance(app.screen, QuitScreen), pilot)
        await pilot.press("s")
        await until(lambda: len(exits) == 2, pilot)
        assert sorted(fake_client.canceled) == ["4f2a9c01b2d3", "a0b1c2d3e4f5"]


async def test_quit_with_nothing_in_flight_just_quits(
    embedded_app: DagtopApp, fake_client: FakeClient
) -> None:
    app = embedded_app
    fake_client.runs_list = [r for r in fake_client.runs_list if r.finished]
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(app, pilot)
        await pilot.press("q")
        await until(lambda: not app.is_running, pilot)


async def test_a_narrow_terminal_still_works(app: DagtopApp, fake_client: FakeClient) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        home = await ready(app, pilot)
        assert home.status_bar.render().plain.endswith("15:42:07 ")
        assert len(home.status_bar.render().plain) <= 100
        await pilot.press("tab", "tab")  # tree → schedules → graph
        assert home.dag.has_focus and home.dag.selected == "orders"
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, PromptScreen), pilot)
        await pilot.press("enter")
        await until(lambda: bool(fake_client.submitted), pilot)
        assert fake_client.submitted == [RunRequest(selection=("orders",), partition="2025-01-30")]


# --- snapshots --------------------------------------------------------------------------------


async def _settle(pilot: Any) -> None:
    """Ready, with the load-error toast (notify is deferred) raised and then cleared."""
    app = pilot.app
    await until(lambda: is_ready(app) and bool(app._notifications), pilot)
    app.clear_notifications()
    await pilot.pause()
    assert not app._notifications


@pytest.mark.parametrize("size", [(160, 48), (100, 30)])
def test_snapshot_home(snap_compare: Any, app: DagtopApp, size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await _settle(pilot)
        home = home_of(pilot.app)
        tree = home.pipelines
        tree.move_cursor(tree.find(NodeRef("group", "training", "ml_training.py", "training")))
        await until(lambda: home.graph_shown == ("group", "training"), pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=before)


def test_snapshot_broken_file(snap_compare: Any, app: DagtopApp) -> None:
    async def before(pilot: Any) -> None:
        await _settle(pilot)
        home = home_of(pilot.app)
        tree = home.pipelines
        tree.move_cursor(tree.find(NodeRef("broken", "broken_feature.py", "broken_feature.py")))
        error = home.query_one("#error-text", Static)
        await until(lambda: "def features_v2" in plain(error.content), pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(160, 48), run_before=before)


async def test_keys_typed_in_one_burst_after_slash_go_to_the_filter(
    app: DagtopApp, fake_client: FakeClient
) -> None:
    """A fast typist (or a paste) sends "/train" in one read: the letters after "/" belong to
    the filter, never to the runs table's keys (t toggles, r re-runs, i opens lineage)."""
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        table = home.runs_table
        table.focus()
        table.move_cursor(row=table.get_row_index("77b0c3d4e5f6"))  # a failure: r would act
        await pilot.pause()
        for char in "/train":
            app.post_message(events.Key("slash" if char == "/" else char, char))
        await until(lambda: home.filter_input.value == "train", pilot)
        assert home.filter_input.has_focus
        assert fake_client.reruns == [] and fake_client.toggles == []
        assert app.screen is home
        # "/" typed inside the filter is text, not the binding.
        await pilot.press("slash")
        assert home.filter_input.value == "train/"


async def test_an_open_dask_scheduler_is_a_standing_warning_in_the_status_bar(
    app: DagtopApp, fake_client: FakeClient
) -> None:
    fake_client.setup_warnings = ["Dask scheduler tcp://10.0.0.5:8786 is not TLS"]
    async with app.run_test(size=(200, 48)) as pilot:
        home = await ready(app, pilot)
        assert "⚠ Dask scheduler tcp://10.0.0.5:8786 is not TLS" in home.status_bar.render().plain
