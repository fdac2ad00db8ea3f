"""The one facade the CLI and the TUI use to reach the engine.

It returns frozen dataclasses (views), never storage rows, so callers cannot trigger lazy loads
or hold a session. Storage and the executor are imported lazily: `dagtop check` and `dagtop
list` never pay for SQLModel's import, a command handed to an engine over its socket neither,
and nothing here imports a UI.

`Client` is composed of its parts, each a module of this package:

- `project`: the folders, settings, definitions and database every part shares;
- `actions`: what a user asks an engine to do (runs, cancels, backfills, toggles), each a
  command sent over the client's one link to an engine (`links`);
- `reads`: the history, read from storage;
- `admin`: the database itself (`dagtop db ...`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.client.actions import Actions
from engine.client.admin import DatabaseAdmin, SchemaChange
from engine.client.reads import Reads
from engine.errors import EngineError
from engine.history.plan import RunRequest
from engine.history.views import (
    AttemptView,
    CheckView,
    LogRef,
    MachineView,
    NodeStatus,
    RunView,
    SampleView,
    StepView,
    iso,
)

if TYPE_CHECKING:
    from engine.history.asset_page import AssetPage, CheckHistory, MaterializationView, Point
    from engine.history.lineage import LineageNode, StaleState, render_lineage


class Client(Actions, Reads, DatabaseAdmin):
    """Everything a user can do, for one project (a home folder and a pipelines folder).

    Args:
        home: The home folder (default `./.dagtop` or DAGTOP_HOME).
        pipelines: The pipelines folder (default `./pipelines` or DAGTOP_PIPELINES).
    """

    def materialize_stale(
        self,
        selection: Sequence[str],
        partition: str | None = None,
        params: dict[str, Any] | None = None,
        on_change: Callable[[RunView], None] | None = None,
        on_plan: Callable[[list[StaleState]], None] | None = None,
    ) -> tuple[list[StaleState], RunView | None]:
        """Materialize, as one run in dependency order, only what is missing or stale in a
        selection (Dagster's "materialize unsynced"). Returns every asset's state and the run,
        None when nothing was due; `on_plan` sees the states before the run starts."""
        states = self.stale(selection, partition)
        if on_plan is not None:
            on_plan(states)
        due = [st.asset for st in states if st.status != "current"]
        if not due:
            return states, None
        manifest = self.load()
        partitioned = any(manifest.assets[name].partitions is not None for name in due)
        view = self.materialize(due, partition if partitioned else None, params, on_change)
        return states, view


# The views are part of the facade: the CLI and the UI import them from here.
__all__ = [
    "AssetPage",
    "AttemptView",
    "CheckHistory",
    "CheckView",
    "Client",
    "EngineError",
    "LineageNode",
    "LogRef",
    "MachineView",
    "MaterializationView",
    "NodeStatus",
    "Point",
    "RunRequest",
    "RunView",
    "SampleView",
    "SchemaChange",
    "StaleState",
    "StepView",
    "iso",
    "render_lineage",
]


def __getattr__(name: str) -> Any:
    # Lineage's and the asset page's types load on first use: most commands never need them.
    if name in ("LineageNode", "StaleState", "render_lineage"):
        from engine.history import lineage

        return getattr(lineage, name)
    if name in ("AssetPage", "CheckHistory", "MaterializationView", "Point"):
        from engine.history import asset_page

        return getattr(asset_page, name)
    raise AttributeError(f"module 'engine.client' has no attribute {name!r}")
