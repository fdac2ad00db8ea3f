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
            broken = NodeRef("broken", "my_first.py", "my_first.py")

            def cursor() -> NodeRef | None:
                node = home.pipelines.cursor_node
                return node.data if node is not None else None

            # The rebuilt tree puts its cursor back after its next refresh: on the same file.
            await until(lambda: cursor() not in (None, broken), pilot)
            ref = cursor()
            assert ref is not None and ref.file == "my_first.py"
    finally:
        engine.stop(grace=1.0)


CHAIN = '''"""Three steps; the last two wait for a file each."""

import pathlib
import time

from engine import asset

GATES = pathlib.Path({gates!r})


def wait_for(name):
    while not (GATES / name).exists():
        time.sleep(0.05)


@asset
def first(context):
    for i in range(300):  # longer than the log pane: it scrolls
        context.log.info("first %d", i)
    return 1


@asset
def second(context, first):
    for i in range(300):
        context.log.info("second %d", i)
    wait_for("second")
    return 2


@asset
def third(context, second):
    context.log.info("third waiting")
    wait_for("third")
    return 3
'''


async def test_the_run_screen_follows_the_running_step(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "chain.py").write_text(CHAIN.format(gates=str(gates)))
    client = Client(home=tmp_path / "home", pipelines=pipelines)
    engine = client.start_engine(kind="tui")
    try:
        from engine.client import RunRequest
        from engine.status import StepStatus
        from tui.screens.run import RunScreen

        run_id = client.submit(RunRequest(selection=("*third",)))

        def status(key: str) -> str:
            return next(s.status for s in client.run(run_id).steps if s.key == key)

        app = DagtopApp(client, mode="embedded")
        async with app.run_test(size=(120, 36)) as pilot:
            await until(lambda: isinstance(app.screen, HomeScreen), pilot)
            app.push_screen(RunScreen(run_id))  # at once: nothing has run yet
            await until(lambda: isinstance(app.screen, RunScreen), pilot)
            screen = app.screen
            assert isinstance(screen, RunScreen)
            await until(lambda: status("second") == StepStatus.RUNNING, pilot, 30)
            await until(lambda: screen.step == "second", pilot, 5)

            (gates / "second").touch()  # second ends, third runs: the log follows it
            await until(lambda: status("third") == StepStatus.RUNNING, pilot, 30)
            await until(lambda: screen.step == "third", pilot, 5)

            await pilot.press("tab")  # to the steps table; the user picks first
            await pilot.press("k", "k")
            await until(lambda: screen.step == "first", pilot, 5)
            assert not screen.auto_step
            (gates / "third").touch()
            await until(lambda: client.run(run_id).finished, pilot, 30)
            await pilot.pause(1.0)
            assert screen.step == "first"  # the user's pick stays
    finally:
        (gates / "second").touch()
        (gates / "third").touch()
        engine.stop(grace=1.0)


async def test_the_engine_starts_once_the_first_frame_is_drawn(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "my_first.py").write_text(HELLO)
    client = Client(home=tmp_path / "home", pipelines=pipelines)
    starting = client.start_engine_soon(kind="tui")  # as `dagtop` does
    app = DagtopApp(client, mode="embedded", engine_starting=starting)
    app.engine_start_at_latest = 600.0  # only the first frame can begin it here
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await until(lambda: isinstance(app.screen, HomeScreen), pilot)
            home = app.screen
            assert isinstance(home, HomeScreen)
            # Read from storage, then the engine begins, with no command asking for it.
            await until(lambda: home.graph_shown == ("group", "default"), pilot, 30)
            await until(lambda: app._unsubscribe is not None, pilot, 30)
            assert client.engine is not None and starting.result(timeout=0) is client.engine
            tree = home.pipelines
            tree.move_cursor(tree.find(NodeRef("asset", "hello", "my_first.py", "default")))
            await pilot.pause()
            await pilot.press("m")  # runs on the engine that started meanwhile
            await until(lambda: bool(home.runs_table.runs), pilot, 30)
            run = next(iter(home.runs_table.runs.values()))
            await until(lambda: client.run(run.id).finished, pilot, 30)
    finally:
        if client.engine is not None:
            client.engine.stop(grace=1.0)


async def test_the_first_frame_is_drawn_from_the_helpers_reads(tmp_path: Path) -> None:
    from engine.client.first_frame import FIRST_PAGE, FirstReads

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "my_first.py").write_text(HELLO)
    client = Client(home=tmp_path / "home", pipelines=pipelines)
    done = client.materialize(["hello"])
    first = FirstReads(client, FIRST_PAGE)
    assert first.verdict() is False
    app = DagtopApp(client, mode="embedded", first_reads=first)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, HomeScreen), pilot)
        home = app.screen
        assert isinstance(home, HomeScreen)
        await until(lambda: done.id in home.runs_table.runs, pilot, 30)
        assert app.first_reads is None and first._proc is None  # taken, and the helper gone
        await until(lambda: "hello" in home.asset_statuses, pilot, 30)
        assert home.asset_statuses["hello"].run_id == done.id
