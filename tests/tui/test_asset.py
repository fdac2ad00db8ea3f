"""The asset page: details, materializations with their metadata, checks over time, the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from engine.loading.manifest import Manifest
from tests.tui.fakes import SCREEN_NOW as NOW
from tests.tui.fakes import (
    FakeClient,
    Host,
    pipeline_client,
    run,
    sales_page,
    step,
    trained_page,
)
from tests.tui.reading import plain
from tests.tui.waits import poll_quickly, polled_screen, until
from tui.screens.asset import AssetScreen
from tui.screens.lineage import LineageScreen
from tui.widgets.table import Table

quick_polls = poll_quickly(AssetScreen)


def cells(table: Table) -> list[list[str]]:
    return [
        [c.plain if hasattr(c, "plain") else str(c) for c in table.get_row_at(i)]
        for i in range(table.row_count)
    ]


async def opened(app: Host, pilot: Any) -> AssetScreen:
    return await polled_screen(app, pilot, AssetScreen)


@pytest.fixture
def client(examples_manifest: Manifest) -> FakeClient:
    from engine.status import RunStatus, StepStatus

    runs = [
        run(f"e{i:03d}0000000", RunStatus.SUCCESS, "*evaluation",
            (step("evaluation", StepStatus.SUCCESS, NOW - 100, NOW - 98),), NOW - 100,
            ended=NOW - 98)
        for i in range(3)
    ]  # fmt: skip
    return FakeClient(
        examples_manifest,
        runs,
        pages={
            "evaluation": trained_page(examples_manifest),
            "revenue": sales_page(examples_manifest),
        },
    )


async def test_the_page_shows_details_history_checks_and_a_plot(client: FakeClient) -> None:
    app = Host(client, lambda: AssetScreen("evaluation"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        details = plain(screen.query_one("#asset-details", Static).content)
        for words in ("Test accuracy", "group      training", "upstream   features, trained_model",
                      "downstream deployed", "✓ materialized"):  # fmt: skip
            assert words in details, words

        # Newest first, each metadata key a column.
        mats = screen.query_one("#asset-mats", Table)
        assert [str(c.label) for c in mats.ordered_columns] == [
            "when", "run", "took", "trigger", "checks", "accuracy", "rows", "model",
        ]  # fmt: skip
        rows = cells(mats)
        assert [r[1] for r in rows] == ["e0020000", "e0010000", "e0000000"]
        assert [r[5] for r in rows] == ["0.96", "0.97", "0.95"]
        assert [r[4] for r in rows] == ["✓", "✗", "✓"]
        assert rows[0][2] == "4.00 s" and rows[2][3] == "schedule"

        # Each check: its kind, pass rate, history newest first, and its result for the
        # selected materialization, which follows the cursor.
        checks = screen.query_one("#asset-checks", Table)
        (check,) = cells(checks)
        assert check[:4] == ["✓ accuracy_above_90pct", "warn", "2/3 67%", "✓✗✓"]
        assert check[4] == "✓  accuracy=0.96  minimum=0.9"
        await pilot.press("down")
        await until(lambda: cells(checks)[0][4] == "✗  accuracy=0.97  minimum=0.9", pilot)
        await pilot.press("up")

        # The first numeric key is plotted; n switches to the next, text is never plotted.
        pane = screen.query_one("#asset-plot-pane")
        assert screen.metric == "accuracy"
        assert pane.border_title == "accuracy over the last 3 materializations"
        await pilot.press("n")
        assert screen.metric == "rows" and str(pane.border_title).startswith("rows over")
        await pilot.press("n")
        assert screen.metric == "accuracy"
        await pilot.press("N")
        assert screen.metric == "rows"
        # `v` and `p` are for partitioned assets only: not even shown here.
        assert screen.check_action("across", ()) is False
        assert screen.check_action("narrow", ()) is False


async def test_enter_opens_the_run_and_i_the_lineage(client: FakeClient) -> None:
    app = Host(client, lambda: AssetScreen("evaluation"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        mats = screen.query_one("#asset-mats", Table)
        assert mats.has_focus
        await pilot.press("down", "enter")
        await until(lambda: type(app.screen).__name__ == "RunScreen", pilot)
        assert app.screen.run_id == "e0010000000"  # type: ignore[attr-defined]
        await pilot.press("escape")
        await until(lambda: app.screen is screen, pilot)
        await pilot.press("i")
        await until(lambda: isinstance(app.screen, LineageScreen), pilot)
        lineage = app.screen
        assert isinstance(lineage, LineageScreen) and lineage.asset == "evaluation"
        # That materialization's lineage (the second newest, id 2), not the current value's.
        await until(lambda: client.lineage_reads == [("evaluation", None, False, 2)], pilot)


async def test_a_partitioned_asset_by_partition_and_narrowed(client: FakeClient) -> None:
    app = Host(client, lambda: AssetScreen("revenue"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        details = plain(screen.query_one("#asset-details", Static).content)
        assert "DailyPartitions" in details and "✓ 3 materialized" in details
        assert "□ 28 missing" in details
        mats = screen.query_one("#asset-mats", Table)
        assert [str(c.label) for c in mats.ordered_columns][:3] == ["when", "run", "partition"]
        assert [r[2] for r in cells(mats)] == ["2025-01-02", "2025-01-03", "2025-01-02",
                                               "2025-01-01"]  # fmt: skip
        pane = screen.query_one("#asset-plot-pane")
        assert pane.border_title == "revenue over the last 4 materializations"

        # v: the key across partitions, each one's current value.
        await pilot.press("v")
        assert screen.across and pane.border_title == "revenue by partition (last 3 keys)"
        await pilot.press("v")
        assert not screen.across

        # p: only the selected materialization's partition; p again: every partition.
        await pilot.press("p")
        await until(lambda: client.asset_reads[-1][1] == "2025-01-02", pilot)
        await until(lambda: screen.query_one("#asset-mats", Table).row_count == 2, pilot)
        title = plain(screen.query_one("#asset-title", Static).content)
        assert "partition 2025-01-02" in title
        assert "partition" not in [str(c.label) for c in mats.ordered_columns]
        assert screen.check_action("across", ()) is None
        await pilot.press("p")
        await until(lambda: client.asset_reads[-1][1] is None, pilot)
        await until(lambda: screen.query_one("#asset-mats", Table).row_count == 4, pilot)


async def test_an_asset_never_materialized_says_so(client: FakeClient) -> None:
    app = Host(client, lambda: AssetScreen("deployed"))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await opened(app, pilot)
        details = plain(screen.query_one("#asset-details", Static).content)
        assert "resources  model_store" in details and "□ missing" in details
        assert screen.query_one("#asset-mats", Table).row_count == 0
        empty = screen.query_one("#asset-plot-empty", Static)
        assert empty.display and "no numeric metadata yet" in plain(empty.content)
        assert not screen.query_one("#asset-checks", Table).display
        # Nothing to open: the keys are shown disabled.
        assert screen.check_action("open_run", ()) is None
        assert screen.check_action("lineage", ()) is None
        assert "never materialized" in str(screen.query_one("#asset-mats").border_subtitle)


async def test_a_new_materialization_appears_at_the_next_read(
    client: FakeClient, examples_manifest: Manifest
) -> None:
    app = Host(client, lambda: AssetScreen("evaluation"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        client.pages["evaluation"] = trained_page(examples_manifest, (0.95, 0.97, 0.96, 0.99))
        mats = screen.query_one("#asset-mats", Table)
        await until(lambda: mats.row_count == 4, pilot)
        assert cells(mats)[0][5] == "0.99"
        assert screen.query_one("#asset-plot-pane").border_title == (
            "accuracy over the last 4 materializations"
        )


def test_a_slow_page_is_read_less_often() -> None:
    screen = AssetScreen("clean")
    screen._read_seconds = 0.01
    assert screen.poll_delay() == AssetScreen.POLL_SECONDS
    screen._read_seconds = 0.7  # a year of hourly partitions
    assert screen.poll_delay() == pytest.approx(7.0)


async def test_a_metadata_key_named_as_a_column(
    client: FakeClient, examples_manifest: Manifest
) -> None:
    from dataclasses import replace

    page = trained_page(examples_manifest)
    mats = tuple(replace(m, metadata={"run": 7, "when": "today"}) for m in page.materializations)
    client.pages["evaluation"] = replace(page, materializations=mats)
    app = Host(client, lambda: AssetScreen("evaluation"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        table = screen.query_one("#asset-mats", Table)
        labels = [str(c.label) for c in table.ordered_columns]
        assert labels[-2:] == ["run", "when"] and cells(table)[0][-2:] == ["7", "today"]


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_snapshot_asset_page(snap_compare: Any, client: FakeClient, size: tuple[int, int]) -> None:
    async def run(pilot: Any) -> None:
        await opened(pilot.app, pilot)

    app = Host(client, lambda: AssetScreen("evaluation"))
    assert snap_compare(app, terminal_size=size, run_before=run)


def test_snapshot_asset_page_by_partition(snap_compare: Any, client: FakeClient) -> None:
    async def run(pilot: Any) -> None:
        await opened(pilot.app, pilot)
        await pilot.press("v")

    app = Host(client, lambda: AssetScreen("revenue"))
    assert snap_compare(app, terminal_size=(160, 48), run_before=run)


MODEL = """
from engine import CheckResult, asset, check

@asset(group="ml")
def model(context):
    import os
    accuracy = float(os.environ.get("ACCURACY", "0.5"))
    context.add_metadata({"accuracy": accuracy, "kind": "logistic"})
    return accuracy


@check(asset="model")
def good_enough(model):
    return CheckResult(passed=model > 0.6, metadata={"accuracy": model})
"""


@pytest.mark.serial
async def test_the_page_over_a_real_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = pipeline_client(tmp_path, "model.py", MODEL)
    for accuracy in ("0.5", "0.9"):
        monkeypatch.setenv("ACCURACY", accuracy)
        assert client.materialize(["model"]).status == "success"
    app = Host(client, lambda: AssetScreen("model"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        rows = cells(screen.query_one("#asset-mats", Table))
        assert [(r[4], r[5], r[6]) for r in rows] == [
            ("✓", "0.9", "logistic"), ("✗", "0.5", "logistic"),
        ]  # fmt: skip
        (check,) = cells(screen.query_one("#asset-checks", Table))
        assert check[:4] == ["✓ good_enough", "warn", "1/2 50%", "✓✗"]
        assert screen.query_one("#asset-plot-pane").border_title == (
            "accuracy over the last 2 materializations"
        )
        assert [p.value for p in screen.page.series["accuracy"]] == [0.5, 0.9]  # type: ignore[union-attr]
