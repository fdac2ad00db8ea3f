"""Schedules and sensors: next and last ticks, their last runs, toggling them on and off."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from engine.automation.scheduler import ScheduleStatus  # the real shapes client.schedules() returns
from engine.automation.sensors import SensorStatus
from engine.errors import EngineError
from engine.status import RunStatus, TickStatus
from tests.tui.fakes import SCREEN_NOW as NOW
from tests.tui.fakes import FakeClient, Host, engine_running, run
from tests.tui.waits import poll_quickly, polled_screen, until
from tui.screens.automation import AutomationScreen, relative

TICK_ERROR = "unknown asset 'revenu' (did you mean 'revenue'?)\nmore detail"


def at(seconds_from_now: float) -> datetime:
    return datetime.fromtimestamp(NOW + seconds_from_now, UTC)


def fake_client() -> FakeClient:
    """Two schedules (one off, its last tick failed), a sensor, and the runs they started."""
    schedules = [
        ScheduleStatus(
            "nightly", "0 3 * * *", "group:training", True, False,
            at(11 * 3600 + 17 * 60), at(-(12 * 3600 + 43 * 60)),
            "9c1e77b0aa01", TickStatus.STARTED, None,
        ),
        ScheduleStatus(
            "hourly_sales", "0 * * * *", "orders, revenue", False, True,
            None, at(-3 * 3600), None, TickStatus.FAILED, TICK_ERROR,
        ),
    ]  # fmt: skip
    sensors = [
        SensorStatus(
            "inbox", "inbox/", "*.csv", "ingest", True, 12, "inbox/orders-17.csv",
            NOW - 95, "51d8aa00bb11",
        ),
    ]  # fmt: skip
    runs = [
        run("9c1e77b0aa01", RunStatus.SUCCESS, "group:training", (), NOW - 45780),
        run("51d8aa00bb11", RunStatus.RUNNING, "ingest", (), NOW - 95),
    ]
    return FakeClient(runs=runs, schedules=schedules, sensors=sensors)


quick_polls = poll_quickly(AutomationScreen)


@pytest.fixture
def fake() -> FakeClient:
    return fake_client()


async def ready(app: App[Any], pilot: Any) -> AutomationScreen:
    return await polled_screen(app, pilot, AutomationScreen)


def cell(screen: AutomationScreen, table: str, row: str, column: str) -> str:
    from textual.widgets import DataTable

    return str(screen.query_one(f"#{table}", DataTable).get_cell(row, column))


def test_relative_times() -> None:
    assert relative(at(11 * 3600 + 17 * 60 + 5), NOW) == "in 11h 17m"
    assert relative(NOW - 95, NOW) == "1m ago"
    assert relative(at(-3 * 86400 - 7200), NOW) == "3d 2h ago"
    assert relative(None, NOW) == "–"


async def test_tables_show_schedules_and_sensors(fake: FakeClient) -> None:
    app = Host(fake, AutomationScreen)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await ready(app, pilot)
        assert cell(screen, "schedules-table", "nightly", "next") == "in 11h 17m"
        assert cell(screen, "schedules-table", "nightly", "last") == "12h 43m ago"
        assert cell(screen, "schedules-table", "nightly", "run") == "✓ success 9c1e77b0"
        assert cell(screen, "schedules-table", "nightly", "enabled") == "● on"
        assert cell(screen, "schedules-table", "hourly_sales", "enabled") == "○ off"
        # A tick that failed to start anything says why (its reason's first 40 characters).
        tick = cell(screen, "schedules-table", "hourly_sales", "run")
        assert tick.startswith("✗ failed: unknown asset 'revenu'") and tick.endswith("…")
        assert cell(screen, "sensors-table", "inbox", "watch") == "inbox/  *.csv"
        assert cell(screen, "sensors-table", "inbox", "seen") == "12"
        assert cell(screen, "sensors-table", "inbox", "at") == "1m ago"
        assert cell(screen, "sensors-table", "inbox", "run") == "◐ running 51d8aa00"
        # The sensor's run finishes; the schedule's finished run is not read again.
        fake.put(replace(fake.run("51d8aa00bb11"), status=RunStatus.FAILED))
        await until(
            lambda: cell(screen, "sensors-table", "inbox", "run") == "✗ failed 51d8aa00", pilot
        )
        assert fake.reads.count("9c1e77b0aa01") == 1


async def test_t_toggles_the_selected_schedule_then_sensor(fake: FakeClient) -> None:
    app = Host(fake, AutomationScreen)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await ready(app, pilot)
        await pilot.press("t")
        await until(lambda: bool(fake.toggles), pilot)
        assert fake.toggles == [("schedule", "nightly", False)]
        await until(lambda: cell(screen, "schedules-table", "nightly", "enabled") == "○ off", pilot)
        await pilot.press("down", "t")
        await until(lambda: len(fake.toggles) == 2, pilot)
        assert fake.toggles[1] == ("schedule", "hourly_sales", True)
        await pilot.press("tab", "t")
        await until(lambda: len(fake.toggles) == 3, pilot)
        assert fake.toggles[2] == ("sensor", "inbox", False)
        await until(lambda: cell(screen, "sensors-table", "inbox", "enabled") == "○ off", pilot)


async def test_toggle_errors_become_toasts(fake: FakeClient) -> None:
    fake.toggle_error = EngineError("schedules are not running in this engine")
    app = Host(fake, AutomationScreen)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(app, pilot)
        await pilot.press("t")
        await until(lambda: bool(app._notifications), pilot)
        note = next(iter(app._notifications))
        assert note.message == "schedules are not running in this engine"
        assert note.severity == "error"
        assert isinstance(app.screen, AutomationScreen)


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_snapshot_automation(snap_compare: Any, fake: FakeClient, size: tuple[int, int]) -> None:
    async def run(pilot: Any) -> None:
        await ready(pilot.app, pilot)
        await pilot.pause(0.1)  # let the table lay out its columns

    assert snap_compare(Host(fake, AutomationScreen), terminal_size=size, run_before=run)


# --- a real engine ---------------------------------------------------------------------------

REAL_PIPELINE = """
from engine import asset, file_sensor, schedule


@asset
def orders():
    return [1, 2, 3]


schedule("0 3 * * *", target="orders", name="nightly")
file_sensor("inbox", path="inbox", pattern="*.csv", target="orders")
"""


@pytest.mark.serial
async def test_real_engine_lists_and_toggles(tmp_path: Path) -> None:
    (tmp_path / "pipelines" / "inbox").mkdir(parents=True)  # what the sensor watches
    with engine_running(tmp_path, "shop.py", REAL_PIPELINE) as client:
        app = Host(client, AutomationScreen)
        app.clock = time.time
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await ready(app, pilot)
            assert screen.schedules["nightly"].enabled
            assert cell(screen, "schedules-table", "nightly", "next").startswith("in ")
            assert cell(screen, "sensors-table", "inbox", "watch").endswith("*.csv")
            await pilot.press("t")
            await until(lambda: not screen.schedules["nightly"].enabled, pilot, timeout=10)
            assert cell(screen, "schedules-table", "nightly", "enabled") == "○ off"
            assert cell(screen, "schedules-table", "nightly", "next") == "– (off)"
