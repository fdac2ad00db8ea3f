"""Waiting in Pilot tests: let the app run until something holds, never a fixed sleep; and
screens that poll often enough for that to be quick."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from textual.app import App
from textual.screen import Screen

from tui.feedback import PolledScreen

S = TypeVar("S", bound=PolledScreen[Any])


async def until(predicate: Callable[[], bool], pilot: Any, timeout: float = 10.0) -> None:
    """Let the app run until `predicate` holds (workers finish on their own time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


async def polled_screen(app: App[Any], pilot: Any, kind: type[S]) -> S:
    """The active screen once it is a `kind` and has read from the client at least once."""
    await until(lambda: isinstance(app.screen, kind), pilot)
    screen = app.screen
    assert isinstance(screen, kind)
    await until(lambda: screen.polls > 0, pilot)
    return screen


def poll_quickly(*screens: type[Screen[Any]]) -> Any:
    """An autouse fixture for a test module (assign it to a name there): `screens` poll ten
    times a second, so tests see changes sooner; snapshots poll once and hold still, so a
    refresh landing mid-capture cannot change the picture."""

    @pytest.fixture(autouse=True)
    def polls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        still = request.node.name.startswith("test_snapshot")
        for screen in screens:
            monkeypatch.setattr(screen, "POLL_SECONDS", 60.0 if still else 0.1)

    return polls
