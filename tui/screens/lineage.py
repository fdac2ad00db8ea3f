"""The lineage of an asset's current value: what it was built from, or what depends on it."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.client import render_lineage
from engine.errors import EngineError
from tui.host import host_of


class LineageScreen(ModalScreen[None]):
    """`dagtop lineage ASSET [--downstream]`, in a dialog; `d` flips the direction."""

    DEFAULT_CSS = """
    LineageScreen { align: center middle; }
    LineageScreen > Vertical {
        width: 90%; height: 80%; border: round $accent; background: $surface; padding: 0 1;
    }
    LineageScreen VerticalScroll { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "flip", "Upstream / downstream", show=True),
        Binding("escape,q,i", "dismiss", "Close", show=True),
    ]

    def __init__(
        self, asset: str, partition: str | None, materialization: int | None = None
    ) -> None:
        """
        Args:
            asset: The asset.
            partition: Its partition key (None: unpartitioned).
            materialization: Upstream, how this materialization of it (by id) was produced,
                rather than its current value.
        """
        super().__init__()
        self.asset = asset
        self.partition = partition
        self.materialization = materialization
        self.downstream = False

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title()
            with VerticalScroll():
                yield Static("reading lineage…", id="lineage-text")

    def on_mount(self) -> None:
        self.load()

    def _title(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        direction = "what depends on it" if self.downstream else "how it was produced"
        return f"{self.asset}{where} · {direction}"

    @work(exclusive=True, group="lineage", exit_on_error=False)
    async def load(self) -> None:
        client = host_of(self.app).client
        text = self.query_one("#lineage-text", Static)
        try:
            root = await asyncio.to_thread(
                client.lineage, self.asset, self.partition, self.downstream, self.materialization
            )
        except EngineError as exc:
            text.update(exc.msg)
            return
        text.update("\n".join(render_lineage(root, self.downstream)))

    def action_flip(self) -> None:
        self.downstream = not self.downstream
        self.query_one(Vertical).border_title = self._title()
        self.load()
