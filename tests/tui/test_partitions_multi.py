"""The partition matrix of MultiPartitions assets: days as columns, regions as rows under each
asset, the asset's own row showing the worst of its regions; a selection becomes the keys of
both dimensions. Against the fake client (fast, deterministic)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Button, Input, Static

from engine.history.partition_status import PartitionState
from engine.loading.manifest import Manifest
from engine.status import PartitionStatus
from tests.tui.fakes import FakeClient, Host, load_pipeline
from tests.tui.waits import poll_quickly, polled_screen, until
from tui.screens.backfill import BackfillDialog
from tui.screens.partition_grid import SEP, Grid
from tui.screens.partitions import PartitionsScreen

PIPELINE = """
from engine import DailyPartitions, MultiPartitions, StaticPartitions, asset

grid = MultiPartitions(
    {"region": StaticPartitions(["us", "eu", "apac"]),
     "date": DailyPartitions(start="2025-01-01", end="2025-01-11")}
)


@asset(group="sales", partitions=grid)
def sales(context):
    return context.partition


@asset(group="sales", partitions=grid)
def clean(sales):
    return sales


@asset(group="sales", partitions=DailyPartitions(start="2025-01-01", end="2025-01-11"))
def daily_total(sales):
    return len(sales)
"""

M, S, F = PartitionStatus.MATERIALIZED, PartitionStatus.STALE, PartitionStatus.FAILED


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return load_pipeline(tmp_path_factory.mktemp("multi"), "grid.py", PIPELINE)


@pytest.fixture
def fake(manifest: Manifest) -> FakeClient:
    days = [f"2025-01-{d:02d}" for d in range(1, 11)]
    sales: dict[str | None, PartitionStatus] = {f"{d}|{r}": M for d in days for r in ("us", "eu")}
    sales["2025-01-03|eu"] = F
    clean: dict[str | None, PartitionStatus] = {f"{d}|us": M for d in days[:5]}
    clean["2025-01-02|us"] = S
    return FakeClient(manifest, partitions={"sales": sales, "clean": clean})


quick_polls = poll_quickly(PartitionsScreen)


def text_of(screen: PartitionsScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_days_are_columns_and_regions_rows_under_each_asset(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("sales"))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await polled_screen(app, pilot, PartitionsScreen)
        matrix = screen.matrix
        assert matrix.keys == [f"2025-01-{d:02d}" for d in range(1, 11)]
        regions = ["us", "eu", "apac"]  # the definition's order, not sorted
        assert matrix.rows == [
            "sales",
            *[f"sales{SEP}{r}" for r in regions],
            "clean",
            *[f"clean{SEP}{r}" for r in regions],
        ]
        assert matrix.status_of(f"sales{SEP}eu", "2025-01-03") == F
        assert matrix.status_of(f"sales{SEP}us", "2025-01-03") == M
        assert matrix.status_of(f"sales{SEP}apac", "2025-01-03") == PartitionStatus.MISSING
        # The asset's own row shows the worst of its regions.
        assert matrix.status_of("sales", "2025-01-03") == F
        assert matrix.status_of("clean", "2025-01-02") == PartitionStatus.MISSING
        assert matrix.status_of(f"clean{SEP}us", "2025-01-02") == S
        title = text_of(screen, "#partitions-title")
        assert "date × region: 10 days × 3 = 30 keys" in title
        await until(lambda: matrix.size.height >= 10, pilot)
        lines = [matrix.render_line(y).text for y in range(10)]
        assert "Jan 2025" in lines[0]
        assert lines[1].split()[:3] == ["01", "02", "03"]
        assert lines[2].split()[0] == "sales" and lines[3].split()[0] == "us"
        assert lines[4].split()[:4] == ["eu", "✓", "✓", "✗"]
        assert lines[5].split()[0] == "apac" and lines[6].split()[0] == "clean"
        # The cursor on a region's cell says its whole key and its status.
        await pilot.press("down", "down", "home", "right", "right")
        assert matrix.cursor_asset == f"sales{SEP}eu" and matrix.cursor_key == "2025-01-03"
        cursor = text_of(screen, "#partitions-cursor")
        assert "sales" in cursor and "2025-01-03|eu" in cursor and "failed" in cursor
        # On the asset's row it counts every region's key.
        await pilot.press("up", "up")
        cursor = text_of(screen, "#partitions-cursor")
        assert "every region" in cursor and "(3 keys)" in cursor


async def test_a_selection_of_rows_and_days_backfills_their_keys(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("sales"))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await polled_screen(app, pilot, PartitionsScreen)
        # eu and apac, the last two days.
        await pilot.press("down", "down", "shift+down", "shift+left")
        assert "sales eu, sales apac" in text_of(screen, "#partitions-selection")
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        dialog = app.screen
        assert isinstance(dialog, BackfillDialog)
        assert dialog.selection == ["sales"]
        assert dialog.keys == [
            "2025-01-09|eu",
            "2025-01-09|apac",
            "2025-01-10|eu",
            "2025-01-10|apac",
        ]
        await pilot.press("escape")
        await until(lambda: app.screen is screen, pilot)
        # The asset's own row means every region.
        await pilot.press("escape", "up", "up", "up", "end", "b")
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        assert app.screen.keys == ["2025-01-10|us", "2025-01-10|eu", "2025-01-10|apac"]  # type: ignore[attr-defined]


async def test_m_materializes_a_regions_key_and_refuses_the_asset_row(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("sales"))
    async with app.run_test(size=(120, 30)) as pilot:
        await polled_screen(app, pilot, PartitionsScreen)
        await pilot.press("m")
        await pilot.pause()
        assert fake.submitted == []  # the asset's row: which region is not said
        await pilot.press("down", "m")
        await until(lambda: bool(fake.submitted), pilot)
        assert fake.submitted[0].selection == ("sales",)
        assert fake.submitted[0].partition == "2025-01-10|us"


def test_a_year_by_24_regions_lays_out_every_cell() -> None:
    """8,760 keys per asset land in their cells (tests/benchmarks/ui.py times it)."""
    from engine.authoring.multi_partitions import MultiPartitions
    from engine.authoring.partitions import DailyPartitions, StaticPartitions

    regions = [f"r{i:02d}" for i in range(24)]
    pdef = MultiPartitions(
        {
            "date": DailyPartitions(start="2024-01-01", end="2024-12-31"),
            "region": StaticPartitions(regions),
        }
    )
    grid = Grid.of(pdef, ["sales"])
    keys = pdef.keys()
    states = [PartitionState(k, M, 1.0, "r") for k in keys]
    states[-1] = PartitionState(states[-1].key, F, None, "r")
    rows = grid.full_rows("sales", states)
    assert len(rows) == 25 and all(len(v) == 365 for v in rows.values())
    assert rows[f"sales{SEP}r23"][-1].status == F  # type: ignore[union-attr]
    assert rows["sales"][-1].status == F and rows["sales"][-2].status == M  # type: ignore[union-attr]
    assert sum(s is not None and s.status == M for v in rows.values() for s in v) == 25 * 365 - 2


def test_snapshot_grid_with_a_selection(snap_compare: Any, fake: FakeClient) -> None:
    async def run(pilot: Any) -> None:
        await polled_screen(pilot.app, pilot, PartitionsScreen)
        await pilot.press("down", "down", "shift+down", "shift+left", "shift+left")

    app = Host(fake, lambda: PartitionsScreen("sales"))
    assert snap_compare(app, terminal_size=(100, 24), run_before=run)


async def test_the_backfill_dialog_takes_days_for_a_grid(fake: FakeClient) -> None:
    """Opened without a range (from the home screen): From/To are days, covering every region;
    "missing and failed" trims them to what needs doing."""
    app = Host(fake, lambda: BackfillDialog(["sales"], None, None))
    async with app.run_test(size=(120, 30)) as pilot:
        dialog = app.screen
        assert isinstance(dialog, BackfillDialog)
        await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)
        assert dialog.query_one("#backfill-from", Input).value == "2025-01-01"
        assert dialog.query_one("#backfill-to", Input).value == "2025-01-10"
        apac = [f"2025-01-{d:02d}|apac" for d in range(1, 11)]
        assert sorted(dialog.planned_keys) == sorted([*apac, "2025-01-03|eu"])
        dialog.query_one("#backfill-to", Input).value = "2025-01-32"
        await until(lambda: dialog.query_one("#backfill-start", Button).disabled, pilot)
        error = str(dialog.query_one("#backfill-to-error", Static).render())
        assert error.startswith("date: '2025-01-32' is not a daily partition key")


def test_a_grid_whose_time_dimension_sorts_second() -> None:
    from engine.authoring.multi_partitions import MultiPartitions
    from engine.authoring.partitions import DailyPartitions, StaticPartitions

    pdef = MultiPartitions(
        {
            "date": DailyPartitions(start="2025-01-01", end="2025-01-03"),
            "color": StaticPartitions(["red", "blue"]),
        }
    )
    grid = Grid.of(pdef, ["paint"])
    assert (grid.column_dimension, grid.row_dimension) == ("date", "color")
    assert grid.columns == ("2025-01-01", "2025-01-02") and not grid.column_first
    assert grid.key("2025-01-02", "blue") == "blue|2025-01-02"
    assert grid.parts("blue|2025-01-02") == ("2025-01-02", "blue")
    assets, keys = grid.keys_of(["paint"], ["2025-01-01", "2025-01-02"])
    assert assets == ["paint"] and keys == pdef.keys()  # in the definition's order
    states = [PartitionState(k, M, 1.0, "r") for k in keys]
    rows = grid.full_rows("paint", states)
    assert [s.key for s in rows[f"paint{SEP}blue"] if s] == ["2025-01-01", "2025-01-02"]

    static = MultiPartitions({"a": StaticPartitions(["x", "y"]), "b": StaticPartitions(["1"])})
    both = Grid.of(static, ["s"])
    assert (both.column_dimension, both.row_dimension, both.kind) == ("a", "b", "static")
