"""Waiting in Pilot tests: let the app run until something holds, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from textual.app import App
from textual.screen import Screen

S = TypeVar("S", bound=Screen[Any])


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
    await until(lambda: screen.polls > 0, pilot)  # type: ignore[attr-defined]
    return screen
