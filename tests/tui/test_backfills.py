"""The backfills list: progress bars, live updates, cancel (confirmed), resume, open the matrix."""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App

from engine.errors import EngineError
from engine.loading.manifest import Manifest
from engine.status import BackfillStatus, RunStatus
from tests.tui.fakes import SCREEN_NOW as NOW
from tests.tui.fakes import FakeClient, Host, load_pipeline
from tests.tui.waits import poll_quickly, polled_screen, until
from tui.screens.backfills import BackfillsScreen, key_range, progress_bar
from tui.screens.confirm import ConfirmScreen

PIPELINE = """
from engine import DailyPartitions, asset

days = DailyPartitions(start="2025-01-01", end="2025-02-01")


@asset(group="sales", partitions=days)
def orders(context):
    return context.partition
"""


SUCCESS, FAILED, RUNNING, QUEUED = (
    RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.RUNNING, RunStatus.QUEUED
)  # fmt: skip
"""What a backfill's keys count by: the status of the run that covers them."""


def days(first: int, last: int) -> list[str]:
    return [f"2025-01-{d:02d}" for d in range(first, last + 1)]


def backfill(
    id: str,  # noqa: A002 - the field's name in client.backfill_progress
    status: BackfillStatus,
    counts: dict[str, int],
    keys: list[str],
    selection: tuple[str, ...] = ("orders",),
    age: float = 300.0,
    took: float | None = None,
) -> dict[str, Any]:
    return {
        "id": id,
        "status": status,
        "selection": list(selection),
        "partitions": keys,
        "max_parallel": 4,
        "total": len(keys),
        "counts": counts,
        "created_at": NOW - age,
        "ended_at": None if took is None else NOW - age + took,
    }


def sample_backfills() -> list[dict[str, Any]]:
    """A running backfill, a failed one and a finished one, newest first."""
    return [
        backfill(
            "b3running0001",
            BackfillStatus.RUNNING,
            {SUCCESS: 12, FAILED: 1, RUNNING: 4, QUEUED: 14},
            days(1, 31),
            selection=("orders*",),
            age=42,
        ),
        backfill(
            "b2failed00001", BackfillStatus.FAILED, {SUCCESS: 3, FAILED: 2}, days(1, 5), took=61
        ),
        backfill(
            "b1success0001",
            BackfillStatus.SUCCESS,
            {SUCCESS: 2},
            ["2025-01-03", "2025-01-09"],
            took=4,
        ),
    ]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return load_pipeline(tmp_path_factory.mktemp("backfills"), "sales.py", PIPELINE)


quick_polls = poll_quickly(BackfillsScreen)


@pytest.fixture
def fake(manifest: Manifest) -> FakeClient:
    return FakeClient(manifest, backfills=sample_backfills())


async def ready(app: App[Any], pilot: Any) -> BackfillsScreen:
    return await polled_screen(app, pilot, BackfillsScreen)


def cell(screen: BackfillsScreen, row: str, column: str) -> str:
    return str(screen.table.get_cell(row, column))


def test_progress_bar_and_key_range() -> None:
    bar = progress_bar({SUCCESS: 12, FAILED: 1, RUNNING: 4, QUEUED: 14}, 31)
    assert bar == "████▎·····  12/31  ✗1 ◐4 …14"
    assert progress_bar({SUCCESS: 5}, 5) == "██████████  5/5"
    assert progress_bar({}, 0) == "··········  0/0"
    assert key_range(days(27, 31)) == "2025-01-27 … 2025-01-31 (5)"
    assert key_range(["2025-01-03"]) == "2025-01-03"


async def test_rows_show_status_progress_and_update_live(fake: FakeClient) -> None:
    app = Host(fake, BackfillsScreen)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await ready(app, pilot)
        assert screen.row_statuses() == [
            BackfillStatus.RUNNING, BackfillStatus.FAILED, BackfillStatus.SUCCESS
        ]  # fmt: skip
        assert cell(screen, "b3running0001", "status") == "◐ running"
        assert "12/31  ✗1 ◐4 …14" in cell(screen, "b3running0001", "progress")
        assert cell(screen, "b3running0001", "selection") == "orders*"
        assert cell(screen, "b2failed00001", "took") == "1m 01s"
        fake.backfill_items[0] = backfill(
            "b3running0001", BackfillStatus.SUCCESS, {SUCCESS: 31}, days(1, 31), age=42, took=40
        )
        polls = screen.polls
        await until(lambda: screen.polls > polls, pilot)
        assert cell(screen, "b3running0001", "status") == "✓ success"
        assert cell(screen, "b3running0001", "progress").endswith("31/31")
        assert screen.table.row_count == 3
        fake.backfill_items.insert(
            0, backfill("b4new00000001", BackfillStatus.RUNNING, {QUEUED: 2}, days(1, 2))
        )
        polls = screen.polls
        await until(lambda: screen.polls > polls, pilot)
        assert screen.row_statuses()[0] == BackfillStatus.RUNNING
        assert screen.table.row_count == 4


async def test_cancel_asks_first(fake: FakeClient) -> None:
    app = Host(fake, BackfillsScreen)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(app, pilot)
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, BackfillsScreen), pilot)
        assert fake.actions == []
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: bool(fake.actions), pilot)
        assert fake.actions == [("cancel", "b3running0001")]


async def test_resume_applies_to_failed_and_canceled_only(fake: FakeClient) -> None:
    app = Host(fake, BackfillsScreen)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await ready(app, pilot)
        await pilot.press("r")  # the running one: nothing to resume
        await pilot.pause()
        assert fake.actions == []
        assert screen.check_action("resume_backfill", ()) is None
        await pilot.press("down", "r")
        await until(lambda: bool(fake.actions), pilot)
        assert fake.actions == [("resume", "b2failed00001")]
        assert screen.check_action("cancel_backfill", ()) is None


async def test_enter_opens_the_matrix_of_the_first_asset(fake: FakeClient) -> None:
    from tui.screens.partitions import PartitionsScreen

    app = Host(fake, BackfillsScreen)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(app, pilot)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, PartitionsScreen), pilot)
        screen = app.screen
        assert isinstance(screen, PartitionsScreen)
        await until(lambda: screen.layout_info is not None, pilot)
        assert screen.layout_info is not None and screen.layout_info.rows == ["orders"]
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, BackfillsScreen), pilot)


async def test_empty_list_and_failing_reads(fake: FakeClient) -> None:
    fake.backfill_items = []
    app = Host(fake, BackfillsScreen)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await ready(app, pilot)
        assert screen.query_one("#backfills-empty").display
        await pilot.press("c", "r", "enter")  # nothing selected: nothing happens
        fake.list_error = EngineError("database is locked", title="Storage error")
        await until(lambda: bool(app._notifications), pilot)
        await pilot.pause(0.5)  # several polls fail: still one toast
        assert [n.message for n in app._notifications] == ["database is locked"]
        assert fake.actions == []


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_snapshot_backfills(snap_compare: Any, fake: FakeClient, size: tuple[int, int]) -> None:
    async def run(pilot: Any) -> None:
        await ready(pilot.app, pilot)
        await pilot.pause(0.1)  # let the table lay out its columns

    assert snap_compare(Host(fake, BackfillsScreen), terminal_size=size, run_before=run)
