"""`m` on an asset with a typed config: the form, checked as it is typed, then the run; and
resources in the tree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Label, Static

from engine.client import RunRequest
from tests.tui.fakes import FakeClient, Host, load_pipeline
from tests.tui.reading import plain
from tests.tui.test_home import ready
from tests.tui.waits import polled_screen, until
from tui.app import DagtopApp
from tui.screens.config import ConfigForm
from tui.screens.home import HomeScreen
from tui.screens.partitions import PartitionsScreen
from tui.widgets.pipelines_tree import NodeRef


@pytest.fixture
def app(fake_client: FakeClient, clock: Callable[[], float]) -> DagtopApp:
    return DagtopApp(fake_client, mode="offline", clock=clock)


async def test_m_opens_the_config_form_validated_as_you_type(
    app: DagtopApp, fake_client: FakeClient
) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        home = await ready(app, pilot)
        tree = home.pipelines
        tree.focus()
        tree.move_cursor(tree.find(NodeRef("asset", "trained_model", "ml_training.py", "training")))
        await pilot.pause()
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ConfigForm), pilot)
        form = app.screen
        assert isinstance(form, ConfigForm)
        # Each field with its type and its default.
        rows = [
            tuple(plain(label.render()).strip() for label in row.query(Label))
            for row in form.query(".field")
        ]
        assert rows == [("C", "float"), ("max_iter", "int"), ("tags", "list[str]")]
        values = {i.name: i.value for i in form.query(Input)}
        assert values == {"C": "1.0", "max_iter": "500", "tags": ""}  # a default_factory
        error = form.query_one("#config-error", Static)
        run = form.query_one("#config-run", Button)
        assert plain(error.render()).strip() == "✓ valid" and not run.disabled

        c = form.query_one("#field-C", Input)
        c.value = ""
        await pilot.press(*"fast")
        await until(lambda: form.error is not None, pilot)
        assert (
            "field 'C'" in plain(error.render()).strip()
            and "valid number" in plain(error.render()).strip()
        )
        assert run.disabled and c.has_class("-invalid")
        await pilot.press("enter")  # refused: nothing is submitted, the form stays
        await pilot.pause()
        assert app.screen is form and fake_client.submitted == []

        c.value = ""
        await pilot.press(*"0.5")
        await until(lambda: form.error is None, pilot)
        assert plain(error.render()).strip() == "✓ valid" and not c.has_class("-invalid")
        form.query_one("#field-tags", Input).value = '["nightly"]'
        await pilot.press("enter")
        await until(lambda: len(fake_client.submitted) == 1, pilot)
        assert fake_client.submitted == [
            RunRequest(selection=("trained_model",), params={"C": "0.5", "tags": '["nightly"]'})
        ]

        # Escape runs nothing.
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ConfigForm), pilot)
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ConfigForm), pilot)
        assert len(fake_client.submitted) == 1


async def test_a_file_of_resources_names_them_in_the_tree(
    tmp_path: Path, clock: Callable[[], float]
) -> None:
    source = "from engine import resource\n\n\n@resource\ndef warehouse():\n    return 1\n"
    app = DagtopApp(FakeClient(load_pipeline(tmp_path, "res.py", source), []), mode="offline",
                    clock=clock)  # fmt: skip
    async with app.run_test(size=(120, 40)) as pilot:

        def label() -> str | None:
            screens = [s for s in app.screen_stack if isinstance(s, HomeScreen)]
            nodes = list(screens[0].pipelines.root.children) if screens else []
            return plain(nodes[0].label).strip() if nodes else None

        await until(lambda: label() is not None, pilot)
        assert label() == "res.py  (resources: warehouse)"


TYPED_DAYS = """
from dataclasses import dataclass

from engine import StaticPartitions, asset


@dataclass
class Knobs:
    rate: float = 0.1


@asset(partitions=StaticPartitions(["eu", "us"]))
def scored(knobs: Knobs):
    return knobs.rate
"""


async def test_m_in_the_partition_matrix_asks_for_the_config_too(tmp_path: Path) -> None:
    fake = FakeClient(load_pipeline(tmp_path, "typed.py", TYPED_DAYS))
    app = Host(fake, lambda: PartitionsScreen("scored"))
    async with app.run_test(size=(120, 30)) as pilot:
        await polled_screen(app, pilot, PartitionsScreen)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ConfigForm), pilot)
        form = app.screen
        assert isinstance(form, ConfigForm)
        form.query_one("#field-rate", Input).value = "0.5"
        await pilot.press("enter")
        await until(lambda: bool(fake.submitted), pilot)
        (request,) = fake.submitted
        assert request.selection == ("scored",) and request.params == {"rate": "0.5"}
        assert request.partition in ("eu", "us")
