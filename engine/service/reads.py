"""Reads of the history, shared by the client (which reads storage itself when no engine
answers on this machine's socket) and the engine (which answers them over that socket, so that
`dagtop runs`, `logs`, `partitions` and `list` import no storage: see service/commands.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.history.views import LogRef, RunView
from engine.status import StepStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from engine.history.asset_page import AssetPage
    from engine.history.partition_status import PartitionState
    from engine.loading.manifest import Manifest


def recent_runs(db: SAEngine, limit: int, offset: int = 0) -> list[RunView]:
    """The newest runs first."""
    from engine.history.views import run_views
    from engine.storage import repo
    from engine.storage.db import read_scope

    with read_scope(db) as s:
        return run_views(s, repo.recent_runs(s, limit, offset))


def run_logs(db: SAEngine, run_id: str, step: str | None = None) -> tuple[RunView, list[LogRef]]:
    """A run (by id or unique prefix) and every attempt's log file of it, or of one step, in
    the order they started.

    Raises:
        RunNotFound: no such run.
        EngineError: the run has no step `step`.
    """
    from engine.history.views import run_views
    from engine.storage import repo
    from engine.storage.db import read_scope

    with read_scope(db) as s:
        run = repo.find_run(s, run_id)
        view = run_views(s, [run])[0]
        attempts = repo.attempts_of(s, run.id)
    keys = [st.key for st in view.steps]
    if step is not None and step not in keys:
        from engine.errors import suggest

        raise EngineError(
            f"run {run.id} has no step {step!r}" + suggest(step, keys), title="Unknown step"
        )
    refs = [
        LogRef(key=a.key, attempt=a.attempt, status=StepStatus(a.status), path=Path(a.log_path))
        for a in attempts
        if step is None or a.key == step
    ]
    return view, refs


def known_asset(manifest: Manifest, asset: str, otherwise: str = "") -> None:
    """Raises: SelectionError: no asset is named `asset` (the message ends with the nearest
    name, else with `otherwise`)."""
    if asset not in manifest.assets:
        from engine.errors import SelectionError, suggest

        hint = suggest(asset, manifest.assets) or otherwise
        raise SelectionError(f"unknown asset {asset!r}{hint}")


def partitions(db: SAEngine, manifest: Manifest, asset: str) -> list[PartitionState]:
    """The status of every partition of `asset` (see engine.history.partition_status).

    Raises:
        SelectionError: an unknown asset.
    """
    from engine.history.dynamic import bind
    from engine.history.partition_status import partition_states
    from engine.storage.db import read_scope

    known_asset(manifest, asset)
    with read_scope(db) as s:
        return partition_states(s, bind(s, manifest), asset)


def asset_page(
    db: SAEngine, manifest: Manifest, asset: str, partition: str | None, limit: int
) -> AssetPage:
    """One asset's page (engine.history.asset_page), read with the dynamic partitions' keys
    as stored now.

    Raises:
        SelectionError: no such asset (with the nearest name).
        PartitionError: `partition` given for an unpartitioned asset, or not one of its keys.
    """
    from engine.history import asset_page as pages
    from engine.history.dynamic import bind
    from engine.storage.db import read_scope

    known_asset(manifest, asset)
    with read_scope(db) as s:
        return pages.asset_page(s, bind(s, manifest), asset, partition, limit)


def definitions(db: SAEngine | None, manifest: Manifest, timezone: str | None) -> dict[str, Any]:
    """Every definition as plain data (what `dagtop list --json` prints); with a history
    (`db`), each asset's staleness too."""
    from engine.loading.describe import describe_definitions

    staleness = None
    if db is not None:
        from engine.history.dynamic import bind
        from engine.history.lineage import asset_staleness
        from engine.storage.db import read_scope

        with read_scope(db) as s:
            staleness = asset_staleness(s, bind(s, manifest))
    return describe_definitions(manifest, timezone, staleness)


def log_wire(ref: LogRef) -> dict[str, Any]:
    return {"key": ref.key, "attempt": ref.attempt, "status": ref.status, "path": str(ref.path)}


def log_from_wire(data: dict[str, Any]) -> LogRef:
    return LogRef(
        key=data["key"],
        attempt=data["attempt"],
        status=StepStatus(data["status"]),
        path=Path(data["path"]),
    )
