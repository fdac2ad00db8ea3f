"""The config form: `m` on an asset with a typed config asks for its fields first.

One line per field (its name, type and default), checked as it is typed against the schema
the loader captured, with the same check the engine makes when it plans the run, so a run it
would refuse is never submitted. Returns the params to run with: the fields whose text differs
from the default, as typed (the engine reads them by the field's type, as `--param` values).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from engine.authoring.typed_config import ConfigParamError, check_params_against, fields_of


def default_text(field: dict[str, Any]) -> str:
    """A default as one types it: a string as is, anything else as JSON."""
    if "default" not in field:
        return ""
    value = field["default"]
    return value if isinstance(value, str) else json.dumps(value)


class ConfigForm(ModalScreen[dict[str, str] | None]):
    """The typed config of `asset` (its manifest description); dismisses with the params."""

    CSS_PATH = "config.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=True)]

    def __init__(self, asset: str, config: dict[str, Any]) -> None:
        super().__init__()
        self.asset = asset
        self.config = config
        self.fields = fields_of(config)
        self.error: str | None = None
        """Why the values typed would be refused (None: they are valid)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="config-form") as box:
            box.border_title = f"Materialize {self.asset} · {self.config['class']}"
            for field in self.fields:
                with Horizontal(classes="field"):
                    required = " *" if field["required"] else ""
                    yield Label(f"{field['name']}{required}", classes="field-name", markup=False)
                    yield Label(field["type"], classes="field-type", markup=False)
                    yield Input(
                        value=default_text(field),
                        # No default to show (a default_factory): empty takes it.
                        placeholder="required" if required else "(default)",
                        id=f"field-{field['name']}",
                        name=field["name"],
                    )
            yield Static("", id="config-error", markup=False)
            with Horizontal(id="config-buttons"):
                yield Button("Cancel", id="config-cancel", compact=True)
                yield Button("Materialize", id="config-run", variant="primary", compact=True)
            yield Static("[dim]enter: materialize   esc: cancel[/dim]", classes="dialog-hint")

    def on_mount(self) -> None:
        self._validate()
        inputs = self.query(Input)
        if inputs:
            inputs.first().focus()

    def params(self) -> dict[str, str]:
        """The fields typed differently from their default (an empty one takes the default)."""
        out: dict[str, str] = {}
        for field in self.fields:
            text = self.query_one(f"#field-{field['name']}", Input).value.strip()
            if text and text != default_text(field):
                out[field["name"]] = text
        return out

    def _validate(self) -> None:
        try:
            check_params_against(f"asset {self.asset!r}", self.config, self.params())
        except ConfigParamError as exc:
            self.error = exc.msg.removeprefix(f"asset {self.asset!r}: ")
        else:
            self.error = None
        bad = None
        if self.error is not None and "field '" in self.error:
            bad = self.error.split("field '", 1)[1].split("'", 1)[0].split(".", 1)[0]
        for field in self.fields:
            widget = self.query_one(f"#field-{field['name']}", Input)
            widget.set_class(field["name"] == bad, "-invalid")
        self.query_one("#config-error", Static).update(self.error or "✓ valid")
        self.query_one("#config-error", Static).set_class(self.error is not None, "-error")
        self.query_one("#config-run", Button).disabled = self.error is not None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._validate()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    @on(Button.Pressed, "#config-run")
    def _run(self) -> None:
        self._submit()

    @on(Button.Pressed, "#config-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        self._validate()
        if self.error is None:
            self.dismiss(self.params())
