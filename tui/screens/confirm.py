"""Small modal dialogs: a yes/no question, the quit-with-runs-in-flight choice, a one-line prompt.

Their styles live in app.tcss (`.dialog`), since any screen may open them.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True for yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", show=True),
        Binding("n,escape", "answer(False)", "No", show=True),
    ]

    def __init__(self, title: str, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.no} [n]", id="no")
                yield Button(f"{self.yes} [y]", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class QuitScreen(ModalScreen[str | None]):
    """Runs are in flight in the embedded engine: stop them, hand them off, or stay.

    Dismisses with "stop", "handoff" or None (stay).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "choose('stop')", "Stop them", show=True),
        Binding("d", "choose('handoff')", "Hand off", show=True),
        Binding("escape", "choose(None)", "Stay", show=True),
    ]

    def __init__(self, in_flight: int) -> None:
        super().__init__()
        self.in_flight = in_flight

    def compose(self) -> ComposeResult:
        runs = "1 run is" if self.in_flight == 1 else f"{self.in_flight} runs are"
        text = (
            f"[b]{runs} in flight[/b] in this window's engine.\n\n"
            "[b]s[/b]  stop them: cancel, and wait a few seconds for the steps to end\n"
            "[b]d[/b]  hand them to a daemon: they stay queued; start `dagtop daemon` (or open "
            "dagtop again) to keep running them\n"
            "[b]esc[/b]  stay\n\n"
            "[dim]A step cut off by quitting is never left marked running: the next engine to "
            "start recovers it (failed, and retried if it has attempts left).[/dim]"
        )
        with Vertical(classes="dialog") as box:
            box.border_title = "Quit dagtop"
            yield Static(text, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stay [esc]", id="stay")
                yield Button("Hand off [d]", id="handoff", variant="primary")
                yield Button("Stop them [s]", id="stop", variant="error")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "stay" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (e.g. a partition key); None when dismissed with escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", show=True),
    ]

    def __init__(self, title: str, prompt: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.prompt = prompt
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            yield Label(self.prompt, classes="dialog-text")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static("[dim]enter: ok   esc: cancel[/dim]", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


__all__ = ["ConfirmScreen", "PromptScreen", "QuitScreen"]
