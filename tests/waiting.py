"""Waiting, in a test, for what another thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from engine.status import BackfillStatus

T = TypeVar("T")


def wait_for(
    cond: Callable[[], T | None],
    timeout: float = 30.0,
    what: str | None = None,
    every: float = 0.05,
) -> T:
    """What `cond()` returns once it is truthy, asked every `every` seconds.

    Raises:
        AssertionError: it was not truthy within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or cond}")
        time.sleep(every)


def backfill_ended(progress: dict[str, Any]) -> dict[str, Any] | None:
    """A backfill's progress once it stopped running (else None: wait on)."""
    return None if progress["status"] == BackfillStatus.RUNNING else progress
