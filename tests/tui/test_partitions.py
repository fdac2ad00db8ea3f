"""The partitions screen and matrix: against a fake client (fast, deterministic, snapshots) and
against a real engine on a temp home (select a range, backfill it, watch the cells fill in)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import Button, Input, Static

from engine.client import Client, RunRequest
from engine.errors import EngineError
from engine.loading.manifest import Manifest
from engine.status import BackfillStatus, PartitionStatus, RunStatus, StepStatus
from tests.tui.fakes import SCREEN_NOW as NOW
from tests.tui.fakes import FakeClient, Host, engine_running, load_pipeline, run, step
from tests.tui.waits import poll_quickly, polled_screen, until
from tui.screens.backfill import BackfillDialog
from tui.screens.partitions import PartitionsScreen
from tui.widgets.partition_matrix import build_columns

PIPELINE = """
from engine import DailyPartitions, HourlyPartitions, StaticPartitions, asset, schedule

days = DailyPartitions(start="2025-01-01", end="2025-02-01")
hours = HourlyPartitions(start="2025-01-01-00:00", end="2025-03-25-08:00")
regions = StaticPartitions(["north", "south", "[b]east", "west", "central-and-islands"])


@asset(group="sales", partitions=days)
def orders(context):
    return [context.partition]


@asset(group="sales", partitions=days)
def revenue(context, orders):
    return len(orders)


@asset(group="sales")
def revenue_report(revenue):
    return dict(revenue)


@asset(group="clicks", partitions=hours)
def clicks(context):
    return context.partition


@asset(group="clicks", partitions=hours)
def sessions(context, clicks):
    return clicks


@asset(group="geo", partitions=regions)
def stores(context):
    return context.partition


schedule("@daily", target="group:sales", name="nightly_sales")
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return load_pipeline(tmp_path_factory.mktemp("partitions"), "shop.py", PIPELINE)


def sales_statuses() -> dict[str, dict[str | None, PartitionStatus]]:
    """The wireframe's picture: 26 days done, a stale and a failed day, 5 missing."""
    days = [f"2025-01-{d:02d}" for d in range(1, 32)]
    done = PartitionStatus.MATERIALIZED
    orders: dict[str | None, PartitionStatus] = {k: done for k in days[:26]}
    revenue: dict[str | None, PartitionStatus] = {k: done for k in days[:24]}
    revenue.update({days[24]: PartitionStatus.STALE, days[25]: PartitionStatus.FAILED})
    return {"orders": orders, "revenue": revenue, "revenue_report": {None: PartitionStatus.STALE}}


@pytest.fixture(autouse=True)
def no_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blinking Input cursor would make snapshots depend on timing."""
    original = Input.__init__

    def init(self: Input, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.cursor_blink = False

    monkeypatch.setattr(Input, "__init__", init)


quick_polls = poll_quickly(PartitionsScreen)


@pytest.fixture
def fake(manifest: Manifest) -> FakeClient:
    return FakeClient(manifest, partitions=sales_statuses())


async def loaded(app: App[Any], pilot: Any) -> PartitionsScreen:
    return await polled_screen(app, pilot, PartitionsScreen)


def text_of(screen: Screen[Any], selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


# --- the matrix ------------------------------------------------------------------------------


async def test_matrix_shows_group_rows_keys_and_statuses(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("revenue"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        matrix = screen.matrix
        assert matrix.rows == ["orders", "revenue"]
        assert len(matrix.keys) == 31
        assert matrix.cursor_asset == "revenue"  # the cursor starts on the asset asked for
        assert matrix.cursor_key == "2025-01-31"  # ...at the latest key
        assert matrix.status_of("revenue", "2025-01-26") == PartitionStatus.FAILED
        assert matrix.status_of("revenue", "2025-01-25") == PartitionStatus.STALE
        assert matrix.status_of("orders", "2025-01-26") == PartitionStatus.MATERIALIZED
        assert "revenue_report" in text_of(screen, "#partitions-downstream")
        assert "depends on every day" in text_of(screen, "#partitions-downstream")
        assert "31 days" in text_of(screen, "#partitions-title")
        await until(lambda: matrix.size.height == 4, pilot)
        lines = [matrix.render_line(y).text for y in range(4)]
        assert "Jan 2025" in lines[0]
        assert lines[1].split()[:3] == ["01", "02", "03"]
        assert "✗" in lines[3] and "◧" in lines[3] and "□" in lines[3] and "✓" in lines[3]


async def test_shift_arrows_select_a_range_and_b_prefills_the_dialog(
    fake: FakeClient,
) -> None:
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        await pilot.press(*["shift+left"] * 4)
        matrix = screen.matrix
        assert matrix.range_keys == [f"2025-01-{d}" for d in range(27, 32)]
        assert "selected 2025-01-27 … 2025-01-31 (5 keys)" in text_of(
            screen, "#partitions-selection"
        )
        row = matrix.render_line(2).text
        assert "[□  □  □  □  □]" in row
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        dialog = app.screen
        assert isinstance(dialog, BackfillDialog)
        assert dialog.selection == ["orders"]
        assert dialog.query_one("#backfill-from", Input).value == "2025-01-27"
        assert dialog.query_one("#backfill-to", Input).value == "2025-01-31"
        await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)
        assert "5 runs, 5 steps" in text_of(dialog, "#backfill-summary")
        await pilot.click("#backfill-start")
        await until(lambda: app.screen is screen, pilot)
        assert fake.backfills_started == [
            {
                "selection": ["orders"],
                "keys": [f"2025-01-{d}" for d in range(27, 32)],
                "first": None,
                "last": None,
                "max_parallel": 4,
            }
        ]
        assert not matrix.has_selection  # a started backfill clears the selection


async def test_marks_rows_and_downstream_make_the_backfill(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        # Mark the 31st and the 29th, extend to the revenue row, and include everything downstream.
        await pilot.press("space", "left", "left", "space", "shift+down")
        matrix = screen.matrix
        assert matrix.selected_rows == ["orders", "revenue"]
        assert matrix.selected_keys == ["2025-01-29", "2025-01-31"]
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        dialog = app.screen
        assert dialog.query_one("#backfill-keys", Input).value == "2025-01-29, 2025-01-31"
        await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)
        assert "2 runs, 4 steps" in text_of(dialog, "#backfill-summary")
        await pilot.click("#backfill-downstream")
        await until(lambda: "2 runs, 6 steps" in text_of(dialog, "#backfill-summary"), pilot)
        await pilot.click("#backfill-start")
        await until(lambda: bool(fake.backfills_started), pilot)
        started = fake.backfills_started[0]
        assert started["selection"] == ["orders*", "revenue*"]
        assert started["keys"] == ["2025-01-29", "2025-01-31"]


async def open_dialog(app: App[Any], pilot: Any, *keys: str) -> BackfillDialog:
    await loaded(app, pilot)
    await pilot.press(*keys, "b")
    await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
    dialog = app.screen
    assert isinstance(dialog, BackfillDialog)
    await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)
    return dialog


async def retype(pilot: Any, selector: str, text: str, keys: bool = False) -> None:
    """Replace a field's text: by assignment (fast), or key by key as a user would."""
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    if keys:
        widget.value = ""
        await pilot.press(*text)
    else:
        widget.value = text
    await pilot.pause()


async def test_invalid_keys_are_refused_inline(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        dialog = await open_dialog(app, pilot, "shift+left")
        start = dialog.query_one("#backfill-start", Button)
        error = dialog.query_one("#backfill-from-error", Static)
        await retype(pilot, "#backfill-from", "2025-13-01", keys=True)
        assert start.disabled and error.display
        assert "not a daily partition key" in str(error.render())
        await retype(pilot, "#backfill-from", "2024-12-31")
        assert start.disabled and "before the first partition" in str(error.render())
        await retype(pilot, "#backfill-from", "2025-01-20")
        assert not start.disabled and not error.display
        assert "5 runs, 5 steps" in text_of(dialog, "#backfill-summary")  # 20..26 are done
        await retype(pilot, "#backfill-to", "2025-01-10")  # before From
        assert start.disabled
        assert "after last key" in text_of(dialog, "#backfill-to-error")
        await retype(pilot, "#backfill-to", "2025-01-31")
        await retype(pilot, "#backfill-parallel", "0")
        assert start.disabled and "at least 1" in text_of(dialog, "#backfill-parallel-error")
        await retype(pilot, "#backfill-parallel", "2")
        assert not start.disabled
        await pilot.click("#backfill-only-all")
        await until(lambda: "12 runs, 12 steps" in text_of(dialog, "#backfill-summary"), pilot)
        dialog.query_one("#backfill-parallel", Input).focus()
        await pilot.press("enter")  # Enter in a field submits
        await until(lambda: bool(fake.backfills_started), pilot)
        assert fake.backfills_started == [
            {
                "selection": ["orders"],
                "keys": None,
                "first": "2025-01-20",
                "last": "2025-01-31",
                "max_parallel": 2,
            }
        ]
        assert [n.message for n in app._notifications] == ["backfill bf0001 started (12 runs)"]


async def test_engine_refusal_is_shown_in_the_dialog(fake: FakeClient) -> None:
    fake.backfill_error = EngineError("another backfill holds these keys", title="Engine refused")
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await open_dialog(app, pilot)
        await pilot.click("#backfill-start")
        await until(lambda: dialog.query_one("#backfill-error").display, pilot)
        assert "Engine refused: another backfill holds these keys" in text_of(
            dialog, "#backfill-error"
        )
        assert app.screen is dialog
        assert not dialog.query_one("#backfill-start", Button).disabled  # fix and retry
        await pilot.press("escape")
        assert isinstance(app.screen, PartitionsScreen)


async def test_nothing_to_do_disables_start(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(app, pilot)
        await pilot.press(*["left"] * 10, *["shift+left"] * 3, "b")  # 18..21, all done
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        dialog = app.screen
        await until(lambda: "nothing to do" in text_of(dialog, "#backfill-summary"), pilot)
        assert dialog.query_one("#backfill-start", Button).disabled


async def test_dialog_without_a_range_offers_every_key(fake: FakeClient) -> None:
    """The home screen opens the dialog with no range: From/To cover every key."""
    app = Host(fake, lambda: BackfillDialog(["revenue"], None, None))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        dialog = app.screen
        await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)
        assert dialog.query_one("#backfill-from", Input).value == "2025-01-01"
        assert dialog.query_one("#backfill-to", Input).value == "2025-01-31"
        assert "6 runs, 6 steps" in text_of(dialog, "#backfill-summary")  # 26 failed + 27..31
        assert "25 done keys skipped" in text_of(dialog, "#backfill-summary")


async def test_grouping_by_week_and_month_shows_the_worst_status(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("revenue"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        matrix = screen.matrix
        await pilot.press("g")
        assert matrix.grouping == "week"
        # 2025-01-01 is a Wednesday: weeks 1 (3 days), 2-5, and a 5-day tail.
        assert [c.hi - c.lo for c in matrix.columns] == [5, 7, 7, 7, 5]
        assert matrix.cursor_keys[-1] == "2025-01-31"  # the cursor stays on its key's group
        assert (
            matrix.column_status("revenue", 3) == PartitionStatus.FAILED
        )  # 20..26 holds the failed 26th
        assert matrix.column_status("orders", 1) == PartitionStatus.MATERIALIZED
        await pilot.press("g")
        assert matrix.grouping == "month" and len(matrix.columns) == 1
        assert matrix.column_status("revenue", 0) == PartitionStatus.FAILED
        assert "Jan" in matrix.render_line(1).text
        await pilot.press("m")  # a grouped cell is not one key: warn, don't submit
        await pilot.pause()
        assert fake.submitted == []
        await pilot.press("g")
        assert matrix.grouping == "day" and len(matrix.columns) == 31


async def test_m_materializes_the_cursor_cell(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("revenue"))
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(app, pilot)
        await pilot.press("left", "h", "m")
        await until(lambda: bool(fake.submitted), pilot)
        assert fake.submitted == [RunRequest(selection=("revenue",), partition="2025-01-29")]


async def test_enter_opens_the_latest_run_or_says_why_not(fake: FakeClient) -> None:
    newest = (step("revenue", StepStatus.FAILED),)
    fake.put(run("r-newest", RunStatus.FAILED, "revenue", newest, NOW, partition="2025-01-26"))
    app = Host(fake, lambda: PartitionsScreen("revenue"))
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(app, pilot)
        await pilot.press("left", "left", "left", "left", "left", "enter")
        await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = [n.message for n in app._notifications]
        try:
            from tui.screens.run import RunScreen  # noqa: F401
        except ImportError:
            assert any("r-newest" in m for m in shown), shown
        else:
            assert type(app.screen).__name__ == "RunScreen"


async def test_polls_stay_one_chain(fake: FakeClient) -> None:
    """Extra polls (after m or a backfill) must not start extra refresh loops."""
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        for _ in range(5):
            screen.poll()
            await pilot.pause(0.01)
        await pilot.pause(0.2)
        before = screen.polls
        await pilot.pause(1.0)
        # 0.1 s apart: about 10 in a second, never 6 loops' worth.
        assert 3 <= screen.polls - before <= 14


async def test_errors_from_the_client_become_toasts(fake: FakeClient) -> None:
    fake.partitions_error = EngineError("database is locked", title="Storage error")
    app = Host(fake, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: bool(app._notifications), pilot)
        await pilot.pause(0.5)  # several polls fail: still one toast
        messages = [n.message for n in app._notifications]
        assert messages == ["database is locked"]
        assert isinstance(app.screen, PartitionsScreen)


async def test_unknown_or_unpartitioned_asset_is_reported(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("revenue_report"))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: bool(app._notifications), pilot)
        assert "not partitioned" in next(iter(app._notifications)).message
        await pilot.press("b", "m", "enter")  # nothing to act on: no crash
        await pilot.press("escape")
        assert not isinstance(app.screen, PartitionsScreen)


async def test_static_partitions_show_truncated_keys(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("stores"))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await loaded(app, pilot)
        matrix = screen.matrix
        assert matrix.keys[-1] == "central-and-islands"
        labels = matrix.render_line(1).text
        assert "north" in labels and "central-an…" in labels
        assert matrix.cursor_key == "north"
        await pilot.press("right", "right", "shift+right")  # a key that looks like markup
        assert matrix.cursor_key == "west"
        assert "selected [b]east … west (2 keys)" in text_of(screen, "#partitions-selection")
        await pilot.press("left")
        assert "stores  [b]east  □ missing" in text_of(screen, "#partitions-cursor")


# --- thousands of keys ----------------------------------------------------------------------


async def test_two_thousand_hourly_keys_mount_fast_and_page(fake: FakeClient) -> None:
    app = Host(fake, lambda: PartitionsScreen("clicks"))
    started = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        mounted = time.perf_counter() - started  # app start, layout, first poll, first paint
        matrix = screen.matrix
        fresh = [
            replace(s, status=PartitionStatus.RUNNING) if i % 7 == 0 else s
            for i, s in enumerate(fake.partitions("clicks"))
        ]
        started = time.perf_counter()
        changed = matrix.set_states("clicks", fresh)
        diff_ms = (time.perf_counter() - started) * 1000
        assert changed == 286
        assert len(matrix.keys) == 2000
        first, last = matrix.key_window
        assert last == 1999 and last - first + 1 < 60  # only a window of columns is drawn
        started = time.perf_counter()
        lines = [matrix.render_line(y) for y in range(4)]
        render_ms = (time.perf_counter() - started) * 1000
        assert all(line.cell_length == matrix.size.width for line in lines)
        await pilot.press("pageup")
        assert matrix.key_window[1] == first - 1  # exactly one screen to the left
        await pilot.press("home")
        assert matrix.key_window[0] == 0 and matrix.cursor_key == "2025-01-01-00:00"
        await pilot.press("pagedown", "pagedown")
        assert matrix.key_window[0] == 2 * (last - first + 1)
        await pilot.press("g")  # hours → days: 84 columns
        assert matrix.grouping == "day" and len(matrix.columns) == 84
        print(
            f"\n2,000 hourly keys: on screen in {mounted * 1000:.0f} ms, 4 lines drawn in "
            f"{render_ms:.2f} ms, a 2,000-key row diffed in {diff_ms:.2f} ms"
        )
        assert mounted < 3.0
        assert render_ms < 50


def test_build_columns_groups_hours_by_day() -> None:
    keys = [f"2025-01-0{d}-{h:02d}:00" for d in (1, 2) for h in range(24)]
    columns = build_columns(keys, "hourly", "day")
    assert [(c.lo, c.hi, c.label) for c in columns] == [(0, 24, "01"), (24, 48, "02")]
    hours = build_columns(keys, "hourly", "hour")
    assert hours[0].top == "2025-01-01" and hours[1].top == "" and hours[24].top == "2025-01-02"


# --- snapshots ------------------------------------------------------------------------------


def _range_selected(pilot: Any) -> Any:
    async def run(pilot: Any) -> None:
        await loaded(pilot.app, pilot)
        await pilot.press("shift+left", "shift+left", "shift+left", "shift+left")

    return run


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_snapshot_matrix_with_range(
    snap_compare: Any, fake: FakeClient, size: tuple[int, int]
) -> None:
    app = Host(fake, lambda: PartitionsScreen("orders"))
    assert snap_compare(app, terminal_size=size, run_before=_range_selected(None))


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_snapshot_backfill_dialog(
    snap_compare: Any, fake: FakeClient, size: tuple[int, int]
) -> None:
    async def run(pilot: Any) -> None:
        await _range_selected(None)(pilot)
        await pilot.press("b")
        await until(lambda: isinstance(pilot.app.screen, BackfillDialog), pilot)
        dialog = pilot.app.screen
        await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)

    app = Host(fake, lambda: PartitionsScreen("orders"))
    assert snap_compare(app, terminal_size=size, run_before=run)


def test_snapshot_backfill_dialog_invalid_key(snap_compare: Any, fake: FakeClient) -> None:
    async def run(pilot: Any) -> None:
        await open_dialog(pilot.app, pilot, "shift+left", "shift+left")
        await retype(pilot, "#backfill-to", "2025-02-30", keys=True)

    app = Host(fake, lambda: PartitionsScreen("orders"))
    assert snap_compare(app, terminal_size=(100, 30), run_before=run)


def test_snapshot_hourly_grouped_by_day(snap_compare: Any, fake: FakeClient) -> None:
    async def run(pilot: Any) -> None:
        await loaded(pilot.app, pilot)
        await pilot.press("g")

    fake.partition_statuses["clicks"] = {
        f"2025-03-{d:02d}-{h:02d}:00": PartitionStatus.MATERIALIZED
        for d in range(1, 25)
        for h in range(24)
    }
    app = Host(fake, lambda: PartitionsScreen("clicks"))
    assert snap_compare(app, terminal_size=(100, 30), run_before=run)


# --- a real engine ---------------------------------------------------------------------------

REAL_PIPELINE = """
from engine import DailyPartitions, asset

days = DailyPartitions(start="2025-01-01", end="2025-02-01")


@asset(group="shop", partitions=days)
def orders(context):
    return [context.partition] * 3


@asset(group="shop", partitions=days)
def revenue(context, orders):
    return len(orders)
"""


@pytest.fixture
def real_client(tmp_path: Path) -> Iterator[Client]:
    with engine_running(tmp_path, "shop.py", REAL_PIPELINE) as client:
        yield client


@pytest.mark.serial
async def test_real_backfill_from_the_matrix_fills_it_in(real_client: Client) -> None:
    from tui.screens.backfills import BackfillsScreen

    app = Host(real_client, lambda: PartitionsScreen("orders"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(app, pilot)
        matrix = screen.matrix
        assert matrix.status_of("orders", "2025-01-31") == PartitionStatus.MISSING
        await pilot.press("shift+down", *["shift+left"] * 4, "b")
        await until(lambda: isinstance(app.screen, BackfillDialog), pilot)
        dialog = app.screen
        await until(lambda: not dialog.query_one("#backfill-start", Button).disabled, pilot)
        assert "5 runs, 10 steps" in text_of(dialog, "#backfill-summary")
        await pilot.click("#backfill-start")
        await until(lambda: app.screen is screen, pilot)
        keys = [f"2025-01-{d}" for d in range(27, 32)]
        started = time.monotonic()
        await until(
            lambda: all(
                matrix.status_of(row, key) == PartitionStatus.MATERIALIZED
                for row in ("orders", "revenue")
                for key in keys
            ),
            pilot,
            timeout=30,
        )
        took = time.monotonic() - started
        print(f"\nreal backfill of 5 days × 2 assets filled the matrix in {took:.2f} s")
        assert matrix.status_of("orders", "2025-01-26") == PartitionStatus.MISSING
        backfills = BackfillsScreen()
        await app.push_screen(backfills)
        await until(lambda: BackfillStatus.SUCCESS in backfills.row_statuses(), pilot, timeout=10)
        assert backfills.row_statuses() == [BackfillStatus.SUCCESS]
        await asyncio.sleep(0)
