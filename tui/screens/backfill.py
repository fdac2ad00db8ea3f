"""The backfill dialog: which assets, which keys, how many at once; validated before it starts.

Every key typed is checked against the assets' partitions definition as it is typed, so a
backfill the engine would refuse is never submitted. "missing and failed" is computed here from
`client.partitions` and sent as an explicit key list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from engine.authoring.multi_partitions import MultiPartitions
from engine.authoring.partitions import DynamicPartitions
from engine.errors import EngineError
from engine.history.plan import run_keys
from engine.status import PartitionStatus
from tui.host import host_of
from tui.widgets.toggles import Choice, Tick

if TYPE_CHECKING:
    from engine.authoring.partitions import PartitionsDefinition
    from engine.client_api import ClientAPI
    from engine.loading.manifest import Manifest

TODO_STATUSES = frozenset({PartitionStatus.MISSING, PartitionStatus.FAILED})
"""What "missing and failed" backfills."""


def downstream_of(manifest: Manifest, names: Iterable[str]) -> list[str]:
    """Every asset downstream of `names` (transitively), not counting `names`, in manifest order."""
    edges = manifest.downstream()
    seen: set[str] = set()
    frontier = list(names)
    while frontier:
        node = frontier.pop()
        for child in edges.get(node, ()):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    seen -= set(names)
    return [name for name in manifest.assets if name in seen]


@dataclass(frozen=True)
class _FormData:
    """What the dialog reads once, off the event loop."""

    manifest: Manifest
    pdef: PartitionsDefinition
    downstream: list[str]
    statuses: Mapping[str, Mapping[str | None, str]]  # partitioned asset -> key -> status
    all_keys: list[str]


def _read_form_data(client: ClientAPI, selection: list[str]) -> _FormData:
    manifest = client.load()
    missing = [name for name in selection if name not in manifest.assets]
    if missing:
        raise EngineError(f"unknown asset {missing[0]!r}", title="Unknown asset")
    pdef = next(
        (manifest.assets[n].partitions_def for n in selection if manifest.assets[n].partitions),
        None,
    )
    if pdef is None:
        raise EngineError(
            f"none of {', '.join(selection)} is partitioned: nothing to backfill",
            title="Not partitioned",
        )
    downstream = downstream_of(manifest, selection)
    statuses = {
        name: {s.key: s.status for s in client.partitions(name)}
        for name in [*selection, *downstream]
        if manifest.assets[name].partitions is not None
    }
    if isinstance(pdef, DynamicPartitions):
        # Its keys are stored, not defined: the partitions read just above list them in order.
        first = next(n for n in selection if manifest.assets[n].partitions)
        pdef = pdef.with_keys([k for k in statuses.get(first, {}) if k is not None])
    return _FormData(manifest, pdef, downstream, statuses, list(pdef.keys()))


class BackfillDialog(ModalScreen[str | None]):
    """Backfill `selection` over a key range (or given keys); returns the backfill id or None."""

    CSS_PATH = "backfill.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        selection: list[str],
        first: str | None,
        last: str | None,
        keys: list[str] | None = None,
    ) -> None:
        """
        Args:
            selection: Asset names to backfill.
            first: Prefill of From.
            last: Prefill of To.
            keys: Non-contiguous keys (marked in the matrix): shown as one Keys field instead
                of From/To.
        """
        super().__init__()
        self.selection = list(selection)
        self.first = first
        self.last = last
        self.keys = list(keys) if keys is not None else None
        self.planned_keys: list[str] = []
        """The keys Start would submit (after the "only" filter)."""
        self.planned_runs = 0
        """How many runs they make (fewer than keys for assets with a backfill policy)."""
        self._form: _FormData | None = None  # read once on mount
        self._submitting = False

    @property
    def client(self) -> ClientAPI:
        return host_of(self.app).client

    def compose(self) -> ComposeResult:
        with Vertical(id="backfill-dialog") as dialog:
            dialog.border_title = "Backfill"
            with Horizontal(classes="field"):
                yield Label("Assets", classes="field-label")
                yield Static(", ".join(self.selection), id="backfill-assets", markup=False)
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Tick("+ downstream", id="backfill-downstream", disabled=True, compact=True)
            if self.keys is not None:
                yield from self._field("Keys", "keys", ", ".join(self.keys), "k1, k2, …")
            else:
                yield from self._field("From", "from", self.first or "", "first key")
                yield from self._field("To", "to", self.last or "", "last key")
            with Horizontal(classes="field"):
                yield Label("Only", classes="field-label")
                with RadioSet(id="backfill-only", compact=True):
                    yield Choice("missing and failed", value=True, id="backfill-only-todo")
                    yield Choice("all", id="backfill-only-all")
            yield from self._field("Parallel", "parallel", "4", "runs at once", integer=True)
            yield Static("→ …", id="backfill-summary")
            yield Static("", id="backfill-error", markup=False)
            with Horizontal(id="backfill-buttons"):
                yield Button("Cancel", id="backfill-cancel", compact=True)
                yield Button(
                    "Start", id="backfill-start", variant="primary", disabled=True, compact=True
                )

    def _field(
        self, label: str, name: str, value: str, placeholder: str, integer: bool = False
    ) -> ComposeResult:
        with Horizontal(classes="field"):
            yield Label(label, classes="field-label")
            yield Input(
                value,
                placeholder=placeholder,
                id=f"backfill-{name}",
                type="integer" if integer else "text",
                compact=True,
            )
        # Key errors quote what was typed, which may hold markup-like brackets: plain text.
        yield Static("", id=f"backfill-{name}-error", classes="field-error", markup=False)

    def on_mount(self) -> None:
        for error in self.query(".field-error"):
            error.display = False
        self.query_one("#backfill-error").display = False
        self.load_context()

    @work(exclusive=True, group="backfill-context", exit_on_error=False)
    async def load_context(self) -> None:
        try:
            context = await asyncio.to_thread(_read_form_data, self.client, self.selection)
        except Exception as exc:  # noqa: BLE001 - shown inline; the dialog stays usable to cancel
            self._show_error(_describe(exc))
            return
        self._form = context
        if self.keys is None and not self.first and not self.last and context.all_keys:
            # Opened without a range (from the home screen): offer every key; "missing and
            # failed" (the default) then trims it to what needs doing.
            first, last = context.all_keys[0], context.all_keys[-1]
            pdef = context.pdef
            if isinstance(pdef, MultiPartitions) and pdef.time_dimension is not None:
                # A range of days (or hours) covers every key of the other dimension.
                timed = pdef.time_dimension
                first, last = pdef.split(first)[timed], pdef.split(last)[timed]
            self.query_one("#backfill-from", Input).value = first
            self.query_one("#backfill-to", Input).value = last
        checkbox = self.query_one("#backfill-downstream", Checkbox)
        if context.downstream:
            checkbox.label = f"+ downstream: {', '.join(context.downstream)}"
            checkbox.disabled = False
        else:
            checkbox.label = "+ downstream (none)"
        self.validate_form()

    # --- validation --------------------------------------------------------------------------

    def _value(self, name: str) -> str:
        return self.query_one(f"#backfill-{name}", Input).value.strip()

    def _set_error(self, name: str, message: str | None) -> None:
        error = self.query_one(f"#backfill-{name}-error", Static)
        error.update(message or "")
        error.display = bool(message)
        self.query_one(f"#backfill-{name}", Input).set_class(bool(message), "-invalid")

    def _check_key(self, key: str) -> str | None:
        assert self._form is not None
        if not key:
            return "give a partition key"
        pdef = self._form.pdef
        try:
            if isinstance(pdef, MultiPartitions) and self.keys is None:
                pdef.validate_bound(key)  # From/To may be keys of its time dimension
            else:
                pdef.validate_key(key)
        except ValueError as exc:  # InvalidPartitionKey
            return str(exc)
        return None

    def _assets(self) -> list[str]:
        names = list(self.selection)
        if self._form is not None and self.query_one("#backfill-downstream", Checkbox).value:
            names += self._form.downstream
        return names

    def validate_form(self) -> bool:
        """Check every field, show errors under them, update the summary and Start.

        Returns:
            Whether Start may submit.
        """
        start = self.query_one("#backfill-start", Button)
        summary = self.query_one("#backfill-summary", Static)
        form = self._form
        if form is None:
            start.disabled = True
            return False
        ok = True
        keys: list[str] = []
        if self.keys is not None:
            typed = [k.strip() for k in self._value("keys").split(",") if k.strip()]
            problem = next((p for p in map(self._check_key, typed) if p), None)
            if not typed:
                problem = "give at least one partition key"
            self._set_error("keys", problem)
            ok = problem is None
            keys = list(dict.fromkeys(typed)) if ok else []
        else:
            first, last = self._value("from"), self._value("to")
            first_problem, last_problem = self._check_key(first), self._check_key(last)
            if first_problem is None and last_problem is None:
                try:
                    keys = form.pdef.keys_between(first, last)
                except ValueError as exc:
                    last_problem = str(exc)
            self._set_error("from", first_problem)
            self._set_error("to", last_problem)
            ok = first_problem is None and last_problem is None
        parallel = self._value("parallel")
        parallel_problem = None
        if not parallel.isdigit() or int(parallel) < 1:
            parallel_problem = "a whole number, at least 1"
        self._set_error("parallel", parallel_problem)
        ok = ok and parallel_problem is None
        assets = self._assets()
        in_range = len(keys)
        if self._only_todo():
            partitioned = [a for a in assets if a in form.statuses]
            keys = [
                k
                for k in keys
                if any(
                    form.statuses[a].get(k, PartitionStatus.MISSING) in TODO_STATUSES
                    for a in partitioned
                )
            ]
        runs: list[list[str]] = []
        policy_problem = None
        if ok and keys:
            try:  # one run per key, or ranges for assets with a backfill policy
                runs = run_keys(form.manifest, assets, keys)
            except EngineError as exc:
                policy_problem = exc.msg
        ok = ok and policy_problem is None
        self.planned_keys = keys if ok else []
        self.planned_runs = len(runs)
        if policy_problem is not None:
            summary.update(f"[$error]→ {escape(policy_problem)}[/]")
        elif not ok:
            summary.update("[$error]→ fix the fields above[/]")
        elif not keys:
            summary.update(f"→ nothing to do: all {in_range} keys are materialized or running")
        else:
            skipped = in_range - len(keys)
            note = f"  [dim]({skipped} done keys skipped)[/]" if skipped else ""
            summary.update(
                f"→ [b]{len(runs)}[/] runs, [b]{len(runs) * len(assets)}[/] steps"
                f"  [dim]({', '.join(assets)})[/]{note}"
            )
        can_start = ok and bool(keys) and not self._submitting
        start.disabled = not can_start
        return can_start

    def _only_todo(self) -> bool:
        return self.query_one("#backfill-only-todo", RadioButton).value

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(RadioSet.Changed)
    def _form_changed(self) -> None:
        self.validate_form()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        if self.validate_form():
            self.start()

    # --- buttons -----------------------------------------------------------------------------

    @on(Button.Pressed, "#backfill-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#backfill-start")
    def _start_pressed(self) -> None:
        if self.validate_form():
            self.start()

    def _show_error(self, message: str) -> None:
        error = self.query_one("#backfill-error", Static)
        error.update(message)
        error.display = bool(message)

    @work(exclusive=True, group="backfill-start", exit_on_error=False)
    async def start(self) -> None:
        """Submit the backfill; an engine error is shown inline and the dialog stays open."""
        downstream = self.query_one("#backfill-downstream", Checkbox).value
        # `name*` is the engine's "and everything downstream"; the backfill row keeps the intent.
        terms = [f"{name}*" for name in self.selection] if downstream else list(self.selection)
        keys, parallel = list(self.planned_keys), int(self._value("parallel"))
        backfill = partial(self.client.backfill, terms, max_parallel=parallel)
        if self.keys is None and not self._only_todo():
            submit = partial(backfill, first=self._value("from"), last=self._value("to"))
        else:
            submit = partial(backfill, keys=keys)
        self._submitting = True
        self.query_one("#backfill-start", Button).disabled = True
        self._show_error("")
        try:
            backfill_id = await asyncio.to_thread(submit)
        except Exception as exc:  # noqa: BLE001
            self._submitting = False
            self._show_error(_describe(exc))
            self.validate_form()
            return
        self.app.notify(f"backfill {backfill_id} started ({self.planned_runs} runs)")
        self.dismiss(str(backfill_id))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EngineError):
        return f"{exc.title}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["BackfillDialog", "downstream_of"]
