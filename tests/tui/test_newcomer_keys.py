"""A newcomer's first minutes with the keys, the filter, a small terminal and the dialogs,
through the real app over `FakeClient`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.widgets import Checkbox, RadioButton, Static
from textual.widgets._footer import FooterKey

from tests.tui.fakes import FakeClient, Host
from tests.tui.reading import plain
from tests.tui.test_home import ready
from tests.tui.waits import until
from tui.app import DagtopApp
from tui.screens.backfill import BackfillDialog
from tui.screens.help import HelpScreen
from tui.widgets.pipelines_tree import NodeRef


@pytest.fixture
def app(fake_client: FakeClient, clock: Callable[[], float]) -> DagtopApp:
    return DagtopApp(fake_client, mode="offline", clock=clock)


async def test_enter_on_a_group_opens_its_graph_and_keeps_it_open(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        tree = home.pipelines
        node = tree.find(NodeRef("group", "training", "ml_training.py", "training"))
        assert node is not None
        tree.move_cursor(node)
        await pilot.pause()
        await pilot.press("enter")
        await until(lambda: home.dag.has_focus, pilot)
        assert node.is_expanded  # "⏎ Open" opened it: nothing collapsed
        assert home.graph_shown == ("group", "training")
        assert home.dag.selected is not None
        tree.focus()
        await pilot.press("space")  # what folds a node, listed in the help
        assert not node.is_expanded


async def test_ctrl_c_quits_and_the_help_says_so(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(app, pilot)
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot)
        text = plain(app.screen.query_one("#help-table", Static).content)
        assert "help quit" not in text
        assert "q/^q/^c Quit" in text.replace("  ", " ") or "^c" in text
        assert "Expand/collapse" in text
        await pilot.press("escape")
        await pilot.press("ctrl+c")
        await until(lambda: not app.is_running, pilot)
    assert not any("ctrl+q" in str(n.message) for n in app._notifications)


async def test_a_filter_that_matches_nothing_says_so_and_esc_is_hinted(app: DagtopApp) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        await pilot.press("slash")
        await until(lambda: home.filter_input.has_focus, pilot)
        footer = " ".join(f"{k.key_display} {k.description}" for k in app.screen.query(FooterKey))
        assert "esc Clear filter" in footer, footer
        await pilot.press(*"zzzz")
        pane = home.query_one("#runs-pane")
        await until(lambda: "zzzz" in str(pane.border_subtitle or ""), pilot)
        assert "no run matches zzzz" in str(pane.border_subtitle), pane.border_subtitle
        await pilot.press("escape")
        await until(lambda: home.runs_table.row_count > 0, pilot)
        assert "no run matches" not in str(pane.border_subtitle or "")


async def test_80x24_fits_the_header_and_the_footer_cleanly(app: DagtopApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        home = await ready(app, pilot)
        home.status_bar.running, home.status_bar.queued = 2, 1
        await pilot.pause()
        header = home.status_bar.render().plain
        assert len(header) <= 80
        assert "◐ 2" in header and "… 1" in header and "CPU" in header
        assert header.rstrip().endswith("15:42:07")
        palette = next(k for k in app.screen.query(FooterKey) if "palette" in k.description)
        assert palette.region.right == 80  # covers the line's end: no key shows past it
        cut = [
            k for k in app.screen.query(FooterKey)
            if k is not palette and k.region.width and k.region.right > palette.region.x
        ]  # fmt: skip
        assert not cut, [k.description for k in cut]  # a key fits whole, or is not shown


async def test_ticks_and_choices_read_without_colour(fake_client: FakeClient) -> None:
    host = Host(fake_client, lambda: BackfillDialog(["revenue"], None, None))
    async with host.run_test(size=(100, 30)) as pilot:
        await until(lambda: isinstance(host.screen, BackfillDialog), pilot)
        dialog = host.screen
        radios = [plain(r.render()) for r in dialog.query(RadioButton)]
        assert radios[0].startswith("(•)") and radios[1].startswith("( )"), radios
        box = dialog.query_one(Checkbox)
        assert plain(box.render()).startswith("[ ]")
        box.value = True
        assert plain(box.render()).startswith("[x]")
