"""The home screen (placeholder until the pipelines tree, DAG and runs table land)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static


class HomeScreen(Screen[None]):
    def compose(self) -> ComposeResult:
        yield Static("dagtop")
        yield Footer()
