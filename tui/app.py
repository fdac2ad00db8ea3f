"""The dagtop terminal UI: wiring only. Screens live in tui/screens, widgets in tui/widgets.

The app talks to the engine only through `engine.client.Client`. With no daemon running it
embeds an engine (schedules, sensors, hot reload and runs live as long as the UI); with a
daemon up it attaches to it and reads the same storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from engine.client import Client
from tui.messages import EngineChanged


class DagtopApp(App[None]):
    """dagtop's UI for one project (a home folder and a pipelines folder)."""

    CSS_PATH = "app.tcss"
    TITLE = "dagtop"
    BINDINGS = [
        Binding("q", "quit", "Quit", show=True),
        Binding("question_mark", "help", "Help", show=True, key_display="?"),
    ]

    def __init__(self, client: Client, mode: str = "embedded", clock: Any = None) -> None:
        """
        Args:
            client: The engine facade.
            mode: "embedded", "attached" (to a daemon) or "offline" (read-only, for tests).
            clock: Returns the current epoch seconds (tests freeze it for stable snapshots).
        """
        super().__init__()
        self.client = client
        self.mode = mode
        import time

        self.clock = clock or time.time
        self._unsubscribe: Any = None

    def on_mount(self) -> None:
        from tui.screens.home import HomeScreen

        if self.client.engine is not None:
            self._unsubscribe = self.client.engine.subscribe(
                lambda event: self.post_message(EngineChanged(event.kind, event.ref))
            )
        self.push_screen(HomeScreen())

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())


def run_app(client: Client) -> None:
    """`dagtop` with no command: embed an engine (or attach to the daemon) and open the UI."""
    from engine.errors import EngineBusy

    mode = "attached" if client.daemon() is not None else "embedded"
    if mode == "embedded":
        try:
            client.start_engine(kind="tui")
        except EngineBusy:
            mode = "attached"
    app = DagtopApp(client, mode=mode)
    try:
        app.run()
    finally:
        if client.engine is not None:
            client.engine.stop()


__all__ = ["DagtopApp", "Path", "run_app"]
