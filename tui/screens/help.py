"""The `?` screen: every key of the app, of the screen it was opened on, and of that screen's
widgets, generated from their BINDINGS (so it can never drift from what the keys do)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.columns import Columns
from rich.table import Table
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def bindings_of(node: DOMNode | type[DOMNode], own: bool = False) -> list[Binding]:
    """The bindings a node's class declares, merged down its class hierarchy like Textual does.

    With `own`, only those declared by dagtop's classes (a widget's Textual base class adds a
    page of cursor keys that every list has).
    """
    cls = node if isinstance(node, type) else type(node)
    merged: dict[str, Binding] = {}
    for klass in reversed(cls.__mro__):
        if "BINDINGS" not in klass.__dict__ or (own and not klass.__module__.startswith("tui.")):
            continue
        if not klass.__dict__.get("inherit_bindings", True):
            merged.clear()
        for binding in Binding.make_bindings(klass.__dict__["BINDINGS"]):
            merged[binding.key] = binding
    return list(merged.values())


def help_rows(app: App[Any], bindings: Iterable[Binding]) -> list[tuple[str, str]]:
    """(keys, description) per action, keys of the same action joined with `/`."""
    by_action: dict[tuple[str, str], list[str]] = {}
    for binding in bindings:
        description = binding.description or binding.tooltip or binding.action.replace("_", " ")
        by_action.setdefault((binding.action, description), []).append(app.get_key_display(binding))
    return [("/".join(dict.fromkeys(keys)), desc) for (_action, desc), keys in by_action.items()]


def sections(screen: Screen[Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Titled groups of key rows: the screen, the whole app, then the screen's widgets."""
    app = screen.app
    name = getattr(type(screen), "HELP_TITLE", None) or type(screen).__name__
    out = [(name, help_rows(app, bindings_of(screen)))]
    app_rows = help_rows(app, bindings_of(app))
    if app.ENABLE_COMMAND_PALETTE:
        palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
        app_rows += help_rows(app, [palette])
    out.append(("Everywhere", app_rows))
    seen: set[type] = set()
    for widget in screen.query("*"):
        cls = type(widget)
        if cls in seen or not cls.__module__.startswith("tui.") or "BINDINGS" not in cls.__dict__:
            continue
        seen.add(cls)
        title = getattr(cls, "HELP_TITLE", None) or cls.__name__
        out.append((title, help_rows(app, bindings_of(widget, own=True))))
    return out


class HelpScreen(ModalScreen[None]):
    """Every binding of the app and of the screen below, from the bindings themselves."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", show=True),
    ]

    def __init__(self, screen: Screen[Any] | None = None) -> None:
        super().__init__()
        self.target = screen

    def compose(self) -> ComposeResult:
        screen = self.target or self.app.screen_stack[-1]
        tables = []
        for title, rows in sections(screen):
            if not rows:
                continue
            table = Table.grid(padding=(0, 1))
            table.title = title
            table.title_style = "bold underline"
            table.title_justify = "left"
            table.add_column(justify="right", style="bold", min_width=7)
            table.add_column()
            for keys, description in rows:
                table.add_row(keys, description)
            tables.append(table)
        with VerticalScroll(classes="dialog help") as box:
            box.border_title = "Keys"
            box.border_subtitle = "esc to close"
            # Side by side: every key of a screen fits on one page of a 160x48 terminal.
            yield Static(Columns(tables, padding=(1, 3)), id="help-table")


__all__ = ["HelpScreen", "bindings_of", "help_rows", "sections"]
