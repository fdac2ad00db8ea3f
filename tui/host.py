"""What screens need of the app that hosts them, as a protocol: screens depend on this, not on
`tui.app`, which imports the screens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from textual.app import App

from engine.client_api import ClientAPI

if TYPE_CHECKING:
    from engine.client.first_frame import FirstReads


class Host(Protocol):
    client: ClientAPI
    mode: str
    """"embedded", "attached" (to a daemon) or "offline" (read-only, for tests)."""
    clock: Callable[[], float]
    first_reads: FirstReads | None
    """The first frame's reads, under way in another process; the home screen takes them."""

    def first_frame_drawn(self) -> None:
        """The home has drawn its first full frame (the embedded engine may start now)."""


def host_of(app: App[Any]) -> Host:
    """The running app, seen as the `Host` every dagtop screen runs in (the app and the tests'
    hosts are checked against `Host` where they are made)."""
    return cast(Host, app)
