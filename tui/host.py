"""What screens need of the app that hosts them, as a protocol: screens depend on this, not on
`tui.app`, which imports the screens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from engine.client import Client


class Host(Protocol):
    client: Client
    mode: str
    """"embedded", "attached" (to a daemon) or "offline" (read-only, for tests)."""
    clock: Callable[[], float]


def host_of(app: Any) -> Host:
    """The running app, seen as the `Host` every dagtop screen runs in."""
    return cast(Host, app)
