"""Reading what the UI shows as plain text, for assertions."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from tui.screens.home import HomeScreen


def plain(renderable: Any) -> str:
    """A Rich renderable as the text a 120-column terminal would show, without styles."""
    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def labels(home: HomeScreen) -> list[str]:
    """The labels of the home screen's pipelines tree, top to bottom."""
    return [str(node.label) for node in home.pipelines._walk(home.pipelines.root)]
