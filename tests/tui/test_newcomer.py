"""What a new user runs into first, tried on the real app over a real client and engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import ContentSwitcher, Static

from engine.client import Client
from tests.tui.reading import plain
from tests.tui.waits import until
from tui.app import DagtopApp
from tui.screens.home import HomeScreen
from tui.widgets.pipelines_tree import NodeRef

pytestmark = pytest.mark.serial

HELLO = '''"""A first asset."""

from engine import asset


@asset
def hello():
    return "hello"
'''


async def test_no_pipelines_folder_is_said_at_once(tmp_path: Path) -> None:
    client = Client(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    engine = client.start_engine(kind="tui")
    try:
        app = DagtopApp(client, mode="embedded")
        async with app.run_test(size=(120, 36)) as pilot:
            await until(lambda: isinstance(app.screen, HomeScreen), pilot)
            home = app.screen
            assert isinstance(home, HomeScreen)
            started = time.monotonic()
            await until(lambda: "no pipelines folder" in home.dag.empty_message, pilot, 5)
            assert time.monotonic() - started < 1.0
            assert str(tmp_path / "pipelines") in home.dag.empty_message
            await until(lambda: home._since is not None, pilot)  # the runs were read
            # Nothing to select, so no advice to select something.
            subtitle = str(home.query_one("#runs-pane").border_subtitle or "")
            assert "select an asset" not in subtitle
    finally:
        engine.stop(grace=1.0)


async def test_a_fixed_file_replaces_its_traceback_on_screen(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "my_first.py").write_text(HELLO.replace("def hello():", "def hello(:"))
    client = Client(home=tmp_path / "home", pipelines=pipelines)
    engine = client.start_engine(kind="tui")
    try:
        app = DagtopApp(client, mode="embedded")
        async with app.run_test(size=(120, 36)) as pilot:
            await until(lambda: isinstance(app.screen, HomeScreen), pilot)
            home = app.screen
            assert isinstance(home, HomeScreen)
            await until(lambda: home.manifest is not None, pilot, 30)
            pane = home.query_one("#graph-pane", ContentSwitcher)
            await until(lambda: pane.current == "error-view", pilot)
            error = home.query_one("#error-text", Static)
            await until(lambda: "Syntax error" in plain(error.content), pilot)

            (pipelines / "my_first.py").write_text(HELLO)  # fixed; the cursor stays put
            await until(lambda: pane.current == "dag", pilot, 30)
            assert home.graph_shown == ("group", "default")
            assert home.pipelines.cursor_node is not None
            ref = home.pipelines.cursor_node.data
            assert ref is not None and ref.file == "my_first.py"
            assert ref != NodeRef("broken", "my_first.py", "my_first.py")
    finally:
        engine.stop(grace=1.0)
