"""The home screen's key actions: what m, M, b, r, c, l, i, p and t do.

The base class of `HomeScreen`, which owns the state these read (the manifest, node statuses,
the selected node and run) and declares the keys; kept apart so that neither part outgrows a
read.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from textual import work
from textual.screen import Screen
from textual.widgets import Input

from engine.client import NodeStatus, RunRequest
from engine.status import RunStatus
from tui.feedback import ask
from tui.host import Host, host_of
from tui.widgets.pipelines_tree import AutomationList, NodeRef
from tui.widgets.runs_table import RunsTable

if TYPE_CHECKING:
    from engine.loading.manifest import Manifest

T = TypeVar("T")


class HomeActions(Screen[None]):
    """Actions of the home screen (the base of `HomeScreen`)."""

    # What the screen provides: its state, its widgets (once composed), and what it knows of
    # the selection.
    manifest: Manifest | None
    asset_statuses: dict[str, NodeStatus]
    runs_table: RunsTable
    automation: AutomationList
    filter_input: Input

    @property
    def selected_ref(self) -> NodeRef | None:
        raise NotImplementedError

    def node_status(self, ref: NodeRef | None) -> NodeStatus | None:
        raise NotImplementedError

    def _partitioned(self, ref: NodeRef | None) -> bool:
        raise NotImplementedError

    def request_refresh(self) -> None:
        raise NotImplementedError

    @property
    def dagtop(self) -> Host:
        return host_of(self.app)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not hasattr(self, "runs_table"):
            return True
        ref = self.selected_ref
        run = self.runs_table.selected_run
        enabled: bool
        if action == "materialize":
            enabled = ref is not None and ref.kind in ("asset", "group", "pipeline", "task")
        elif action == "materialize_group":
            enabled = ref is not None and ref.graph is not None
        elif action in ("partitions", "backfill"):
            enabled = self._partitioned(ref)
        elif action == "lineage":
            enabled = ref is not None and ref.kind == "asset"
        elif action == "rerun":
            enabled = run is not None and run.status in (RunStatus.FAILED, RunStatus.CANCELED)
        elif action == "cancel_run":
            enabled = run is not None and not run.finished
        elif action == "logs":
            enabled = (self.runs_table.has_focus and run is not None) or (
                self.node_status(ref) is not None
            )
        elif action == "toggle_enabled":
            enabled = self.automation.has_focus and self.automation.selected is not None
        elif action == "filter":
            # In the filter itself "/" is text: False lets the key through to the input.
            return not self.filter_input.has_focus
        elif action == "clear_filter":
            # Shown (as "esc Clear filter") only while there is a filter to clear.
            return self.filter_input.has_class("shown")
        else:
            return True
        return True if enabled else None

    def action_materialize(self) -> None:
        ref = self.selected_ref
        if ref is None or self.manifest is None:
            return
        if ref.kind == "asset":
            self.materialize_asset(ref.name)
        elif ref.kind == "group":
            self.action_materialize_group()
        elif ref.kind in ("pipeline", "task") and ref.graph is not None:
            self.submit(RunRequest(pipeline=ref.graph))

    def action_materialize_group(self) -> None:
        ref = self.selected_ref
        if ref is None or ref.graph is None or self.manifest is None:
            return
        if ref.graph_kind == "pipeline":
            self.submit(RunRequest(pipeline=ref.graph))
            return
        names = [a.name for a in self.manifest.assets.values() if a.group == ref.graph]
        self._materialize((f"group:{ref.graph}",), names)

    def _materialize(
        self,
        selection: tuple[str, ...],
        names: Sequence[str],
        params: dict[str, str] | None = None,
    ) -> None:
        assert self.manifest is not None
        partitioned = [n for n in names if self.manifest.assets[n].partitions is not None]
        if not partitioned:
            self.submit(RunRequest(selection=selection, params=dict(params or {})))
            return
        from tui.screens.confirm import PromptScreen

        def chosen(key: str | None) -> None:
            if key:
                self.submit(
                    RunRequest(selection=selection, partition=key, params=dict(params or {}))
                )

        prompt = PromptScreen(
            "Materialize",
            f"Partition key of {', '.join(partitioned)}:",
            value=self._latest_key(partitioned[0]),
            placeholder="e.g. 2025-01-31",
        )
        self.app.push_screen(prompt, chosen)

    def _latest_key(self, asset: str) -> str:
        status = self.asset_statuses.get(asset)
        if status is not None and status.partition:
            return status.partition
        assert self.manifest is not None
        try:
            pdef = self.manifest.assets[asset].partitions_def
            keys = pdef.keys() if pdef is not None else []
        except Exception:  # noqa: BLE001 - a prefill is a convenience, never an error
            return ""
        return keys[-1] if keys else ""

    @work(group="submit", exit_on_error=False)
    async def submit(self, request: RunRequest) -> None:
        run_id = await ask(self, partial(self.dagtop.client.submit, request))
        if run_id is None:
            return
        what = request.pipeline or ", ".join(request.selection)
        if request.partition:
            what += f" [{request.partition}]"
        self.notify(f"run {run_id[:6]}: {what}", title="Run queued")
        self.request_refresh()

    def action_rerun(self) -> None:
        run = self.runs_table.selected_run
        if run is not None:
            self._rerun(run.id)

    @work(group="submit", exit_on_error=False)
    async def _rerun(self, run_id: str) -> None:
        full = await ask(self, partial(self.dagtop.client.rerun, run_id))
        if full is None:
            return
        self.notify(f"run {full[:6]}: failed steps queued again", title="Re-run")
        self.request_refresh()

    def action_cancel_run(self) -> None:
        run = self.runs_table.selected_run
        if run is None or run.finished:
            return
        from tui.screens.confirm import ConfirmScreen

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._cancel(run.id)

        question = f"Cancel run {run.id[:6]} ({run.target})?\nRunning steps are stopped."
        self.app.push_screen(ConfirmScreen("Cancel run", question, yes="Cancel run"), confirmed)

    @work(group="submit", exit_on_error=False)
    async def _cancel(self, run_id: str) -> None:
        if await ask(self, partial(self.dagtop.client.request_cancel, run_id)) is None:
            return
        self.notify(f"run {run_id[:6]}: cancel requested", title="Cancel")
        self.request_refresh()

    def action_logs(self) -> None:
        run = self.runs_table.selected_run
        if self.runs_table.has_focus and run is not None:
            self.open_run(run.id)
            return
        status = self.node_status(self.selected_ref)
        if status is not None and self.selected_ref is not None:
            self.open_run(status.run_id, step=self.selected_ref.name)

    def open_node(self, ref: NodeRef) -> None:
        """Enter on an asset: its page; on a task: its latest step."""
        if ref.kind == "asset":
            from tui.screens.asset import AssetScreen

            self.app.push_screen(AssetScreen(ref.name))
            return
        status = self.node_status(ref)
        if status is None:
            self.notify(f"{ref.name} has never run: press m to run it", title="No runs yet")
            return
        self.open_run(status.run_id, step=ref.name)

    def open_run(self, run_id: str, step: str | None = None) -> None:
        from tui.screens.run import RunScreen

        self.app.push_screen(RunScreen(run_id, step=step))

    def action_lineage(self) -> None:
        """How the selected asset's current value was produced (d flips to what depends on it)."""
        ref = self.selected_ref
        if ref is None or ref.kind != "asset":
            return
        from tui.screens.lineage import LineageScreen

        status = self.node_status(ref)
        if status is None and self._partitioned(ref):
            # Which partition's lineage? None exists yet: say so rather than ask for a key.
            self.notify(f"{ref.name} has never been materialized: no lineage yet")
            return
        self.app.push_screen(LineageScreen(ref.name, status.partition if status else None))

    def action_partitions(self) -> None:
        ref = self.selected_ref
        if not self._partitioned(ref) or ref is None:
            return
        from tui.screens.partitions import PartitionsScreen

        self.app.push_screen(PartitionsScreen(ref.name))

    def action_backfill(self) -> None:
        ref = self.selected_ref
        if not self._partitioned(ref) or ref is None:
            return
        self.backfill_asset(ref.name)

    # --- what the command palette asks for by name --------------------------------------------

    def materialize_asset(self, name: str) -> None:
        """Materialize one asset (`m` on it, or the palette): its typed config's form first,
        if it has one, and a key if it is partitioned."""
        if self.manifest is None or name not in self.manifest.assets:
            return
        config = self.manifest.assets[name].config
        if config is None:
            self._materialize((name,), [name])
            return
        from tui.screens.config import ConfigForm

        def configured(params: dict[str, str] | None) -> None:
            if params is not None:
                self._materialize((name,), [name], params)

        self.app.push_screen(ConfigForm(name, config), configured)

    def run_pipeline(self, name: str) -> None:
        self.submit(RunRequest(pipeline=name))

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        self._toggle(kind, name, enabled)

    def backfill_asset(self, name: str) -> None:
        """The backfill dialog for one partitioned asset, as `b` on it."""
        from tui.screens.backfill import BackfillDialog

        def started(backfill_id: str | None) -> None:
            if backfill_id:
                self.notify(f"backfill {backfill_id[:6]} started", title="Backfill")
                self.request_refresh()

        self.app.push_screen(BackfillDialog([name], None, None), started)

    def action_toggle_enabled(self) -> None:
        selected = self.automation.selected
        if selected is None:
            return
        kind, name = selected
        self._toggle(kind, name, not self.automation.is_enabled(kind, name))

    @work(group="submit", exit_on_error=False)
    async def _toggle(self, kind: str, name: str, enabled: bool) -> None:
        client = self.dagtop.client

        def toggle() -> bool:
            client.set_enabled(kind, name, enabled)
            return True

        if await ask(self, toggle) is None:
            return
        self.automation.set_enabled(kind, name, enabled, self.dagtop.clock())
        self.notify(f"{kind} {name} {'on' if enabled else 'off'}", title="Automation")
