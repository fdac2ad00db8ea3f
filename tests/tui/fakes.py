"""Stand-ins for `engine.client.Client` with fixed data, for fast and deterministic UI tests.

`FakeClient` holds a real manifest (the example pipelines plus one broken file, loaded once by
the real loader) and runs built from the real view classes, with fixed ids and times.
`PartitionsClient` serves the partitions matrix, the backfill dialog and the backfills list
over a manifest and statuses its test file gives it. Both record what the UI asks of them
(submits, cancels, re-runs, toggles, backfills) so tests can assert on that. `Host` is the bare
app that shows one screen over such a client, with a frozen clock.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from textual.app import App
from textual.screen import Screen

from engine.client import (
    CheckView,
    Client,
    MachineView,
    NodeStatus,
    RunRequest,
    RunView,
    StepView,
)
from engine.errors import EngineError, RunNotFound
from engine.loading.config import Paths
from engine.loading.manifest import Manifest
from engine.status import RunStatus, StepStatus

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "pipelines"
NOW = 1_738_251_727.0
"""2025-01-30 15:42:07 UTC: the frozen clock of the tests of the whole app over `FakeClient`."""
SCREEN_NOW = 1_738_000_000.0
"""2025-01-27 17:46:40 UTC: the frozen clock of the tests that host a single screen."""

BROKEN = '''"""A pipeline file with a mistake in it."""

from engine import asset


@asset(group="features")
def features_v2(no_such_upstream_asset):
    return no_such_upstream_asset
'''


def copy_examples(folder: Path) -> Path:
    """The example pipelines plus a broken file, copied to `folder`/pipelines."""
    pipelines = folder / "pipelines"
    shutil.copytree(EXAMPLES, pipelines, ignore=shutil.ignore_patterns("__pycache__"))
    (pipelines / "broken_feature.py").write_text(BROKEN)
    return pipelines


def build_manifest(folder: Path) -> Manifest:
    """Copy the example pipelines (and a broken file) into `folder` and load them for real."""
    from engine.loading import loader

    return loader.load(copy_examples(folder), cache_dir=folder / "home", timeout=60)


def pipeline_client(folder: Path, name: str, source: str) -> Client:
    """A real client over one pipeline file, written to `folder`/pipelines."""
    pipelines = folder / "pipelines"
    pipelines.mkdir(parents=True, exist_ok=True)
    (pipelines / name).write_text(source)
    return Client(home=folder / "home", pipelines=pipelines)


def load_pipeline(folder: Path, name: str, source: str) -> Manifest:
    """Write one pipeline file into `folder` and load it through the real client."""
    manifest = pipeline_client(folder, name, source).load()
    assert manifest.ok, manifest.errors
    return manifest


@contextmanager
def engine_running(folder: Path, name: str, source: str) -> Iterator[Client]:
    """A real client over one pipeline file in `folder`, its engine started and then stopped."""
    client = pipeline_client(folder, name, source)
    engine = client.start_engine()
    try:
        yield client
    finally:
        engine.stop()


def step(
    key: str,
    status: str,
    started: float | None = None,
    ended: float | None = None,
    upstream: tuple[str, ...] = (),
    kind: str = "asset",
    error: str | None = None,
) -> StepView:
    return StepView(
        key=key, kind=kind, status=StepStatus(status), attempts=0 if status == "queued" else 1,
        max_attempts=1, exit_code=None if status != "failed" else 1, error=error,
        peak_rss_bytes=None, cpu_seconds=None, log_path=None, started_at=started,
        ended_at=ended, upstream=upstream,
    )  # fmt: skip


def run(
    run_id: str,
    status: str,
    target: str,
    steps: tuple[StepView, ...],
    created: float,
    *,
    kind: str = "assets",
    trigger: str = "manual",
    partition: str | None = None,
    ended: float | None = None,
    checks: tuple[CheckView, ...] = (),
) -> RunView:
    return RunView(
        id=run_id, kind=kind, status=RunStatus(status), target=target, partition=partition,
        params={},
        trigger=trigger, created_at=created, started_at=None if status == "queued" else created,
        ended_at=ended, steps=steps, checks=checks,
    )  # fmt: skip


def sample_runs() -> list[RunView]:
    """Five runs, one in every interesting state, newest first."""
    t = NOW
    return [
        run(
            "a0b1c2d3e4f5", "queued", "training_tasks",
            tuple(step(k, "queued", kind="python") for k in
                  ("extract", "validate", "train", "baseline", "evaluate", "publish")),
            t - 2, kind="pipeline", trigger="schedule",
        ),
        run(
            "4f2a9c01b2d3", "running", "*trained_model",
            (step("raw_digits", "success", t - 9, t - 8), step("features", "success", t - 8, t - 7),
             step("trained_model", "running", t - 7, upstream=("features",))),
            t - 9,
            checks=(CheckView("raw_digits", None, "no_nulls", True, True, None, {}, None),),
        ),
        run(
            "9c1e77aa0b12", "success", "group:sales",
            (step("orders", "success", t - 2527, t - 2526),
             step("revenue", "success", t - 2526, t - 2525),
             step("revenue_report", "success", t - 2525, t - 2525)),
            t - 2527, trigger="schedule", partition="2025-01-30", ended=t - 2525,
        ),
        run(
            "77b0c3d4e5f6", "failed", "parsed_orders",
            (step("parsed_orders", "failed", t - 2815, t - 2814, error="ValueError: bad row"),),
            t - 2815, trigger="sensor", ended=t - 2814,
        ),
        run(
            "51d8e9f0a1b2", "success", "orders, revenue",
            (step("orders", "success", t - 3724, t - 3723),
             step("revenue", "success", t - 3723, t - 3722)),
            t - 3724, trigger="backfill", partition="2025-01-29", ended=t - 3722,
        ),
    ]  # fmt: skip


class FakeEngine:
    """Just enough of an embedded engine for the app to subscribe to."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def subscribe(self, callback: Any) -> Any:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback) if callback in self.listeners else None


class FakeClient:
    """The subset of `engine.client.Client` the UI uses, with fixed answers."""

    def __init__(self, manifest: Manifest, runs: list[RunView] | None = None) -> None:
        self.manifest = manifest
        project = Path("/srv/ml-project")
        self.paths = Paths(home=project / ".dagtop", pipelines=project / "pipelines")
        self.engine: Any = None
        self.runs_list: list[RunView] = sample_runs() if runs is None else runs
        self.updated: dict[str, float] = {r.id: 0.0 for r in self.runs_list}
        self.asset_status: dict[str, NodeStatus] = {}
        self.task_status: dict[str, dict[str, NodeStatus]] = {}
        self._derive_statuses()
        self.submitted: list[RunRequest] = []
        self.canceled: list[str] = []
        self.reruns: list[str] = []
        self.toggles: list[tuple[str, str, bool]] = []
        self.enabled: dict[tuple[str, str], bool] = {("sensor", "inbox"): False}
        self.fail_submit: EngineError | None = None
        self.calls: list[str] = []

    # --- what the tests change ----------------------------------------------------------------

    def _derive_statuses(self) -> None:
        """Node statuses from the runs, newest step per key (like storage does)."""
        self.asset_status, self.task_status = {}, {}
        for r in sorted(self.runs_list, key=lambda r: r.created_at):
            for st in r.steps:
                status = NodeStatus(st.key, st.status, r.id, r.partition, st.ended_at)
                if r.kind == "pipeline":
                    self.task_status.setdefault(r.target, {})[st.key] = status
                else:
                    self.asset_status[st.key] = status

    def put(self, view: RunView) -> None:
        """Add or replace a run, marked as changed now (as the engine would)."""
        self.runs_list = [r for r in self.runs_list if r.id != view.id] + [view]
        self.updated[view.id] = time.time()
        self._derive_statuses()

    # --- the facade ---------------------------------------------------------------------------

    def load(self, force: bool = False) -> Manifest:
        self.calls.append("load")
        return self.manifest

    def schedules(self) -> list[SimpleNamespace]:
        ticks = {
            "nightly_sales": "2025-01-31T00:00:00+00:00",
            "training_tasks": "2025-01-31T03:00:00+00:00",
        }  # noqa: E501
        return [
            SimpleNamespace(
                name=s.name, cron=s.cron, next_tick=datetime.fromisoformat(ticks[s.name]),
                enabled=self.enabled.get(("schedule", s.name), True),
            )
            for s in self.manifest.schedules.values()
        ]  # fmt: skip

    def sensors(self) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(name=s.name, enabled=self.enabled.get(("sensor", s.name), True))
            for s in self.manifest.sensors.values()
        ]

    def describe(self) -> dict[str, Any]:
        ticks = {
            "nightly_sales": "2025-01-31T00:00:00+00:00",
            "training_tasks": "2025-01-31T03:00:00+00:00",
        }
        return {
            "schedules": [
                {"name": s.name, "cron": s.cron, "next_tick": ticks.get(s.name)}
                for s in self.manifest.schedules.values()
            ]
        }

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunView]:
        ordered = sorted(self.runs_list, key=lambda r: r.created_at, reverse=True)
        return ordered[offset : offset + limit]

    def runs_since(self, updated_after: float, limit: int = 500) -> list[RunView]:
        changed = [r for r in self.runs_list if self.updated.get(r.id, 0.0) > updated_after]
        return changed[:limit]

    def run(self, run_id: str) -> RunView:
        for r in self.runs_list:
            if r.id.startswith(run_id):
                return r
        raise RunNotFound(f"no run {run_id}")

    def node_statuses(self, pipeline: str | None = None) -> dict[str, NodeStatus]:
        if pipeline is not None:
            return dict(self.task_status.get(pipeline, {}))
        return dict(self.asset_status)

    def machine(self) -> MachineView:
        return MachineView(cpu_percent=63.0, memory_used=int(7.1 * 2**30), memory_total=24 * 2**30)

    def submit(self, request: RunRequest) -> str:
        if self.fail_submit is not None:
            raise self.fail_submit
        self.submitted.append(request)
        return f"feed{len(self.submitted):08d}"

    def rerun(self, run_id: str) -> str:
        self.reruns.append(run_id)
        return run_id

    def request_cancel(self, run_id: str) -> str:
        self.canceled.append(run_id)
        view = self.run(run_id)
        self.put(replace(view, status=RunStatus.CANCELED, ended_at=NOW))
        return view.id

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        self.toggles.append((kind, name, enabled))
        self.enabled[(kind, name)] = enabled

    def daemon(self) -> Any:
        return None


# --- one screen at a time ---------------------------------------------------------------------


class Host(App[None]):
    """A bare app that pushes one screen, with a client and a frozen clock (not the app's
    styles, so a snapshot changes only when its screen does)."""

    def __init__(
        self, client: Any, make_screen: Callable[[], Screen[Any]], now: float = SCREEN_NOW
    ) -> None:
        super().__init__()
        self.client = client
        self.clock = lambda: now
        self._make_screen = make_screen

    def on_mount(self) -> None:
        self.push_screen(self._make_screen())


@dataclass(frozen=True)
class State:
    """Shaped like engine.history.partition_status.PartitionState (`client.partitions`)."""

    key: str | None
    status: str
    materialized_at: float | None = None
    run_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class FakeStep:
    key: str


@dataclass(frozen=True)
class FakeRun:
    id: str
    partition: str | None
    steps: tuple[FakeStep, ...]


class PartitionsClient:
    """The slice of `engine.client.Client` that the partitions matrix, the backfill dialog and
    the backfills list use: partition statuses by asset and key (a key not given is missing),
    and the backfills to list, as the test file gives them."""

    def __init__(
        self,
        manifest: Manifest,
        statuses: dict[str, dict[str | None, str]] | None = None,
        backfills: list[dict[str, Any]] | None = None,
    ) -> None:
        self.manifest = manifest
        self.statuses = {} if statuses is None else statuses
        self.items = [] if backfills is None else backfills
        self.engine = None
        self.submitted: list[RunRequest] = []
        self.backfills_started: list[dict[str, Any]] = []
        self.backfill_error: EngineError | None = None
        self.list_error: Exception | None = None
        self.actions: list[tuple[str, str]] = []
        self.partition_calls = 0
        self.recent_runs: list[FakeRun] = []

    def load(self, force: bool = False) -> Manifest:
        return self.manifest

    def partitions(self, asset: str) -> list[State]:
        self.partition_calls += 1
        pdef = self.manifest.assets[asset].partitions_def
        keys: list[str | None] = list(pdef.keys()) if pdef is not None else [None]
        mine = self.statuses.get(asset, {})
        out = []
        for key in keys:
            status = mine.get(key, "missing")
            done = status in ("materialized", "stale")
            out.append(
                State(
                    key=key,
                    status=status,
                    materialized_at=SCREEN_NOW - 3600 if done else None,
                    run_id="r-" + (key or "all") if done else None,
                    reason="upstream orders newer" if status == "stale" else None,
                )
            )
        return out

    def partition_changes(self, assets: list[str], cursor: Any = None) -> Any:
        """Every state at every poll (`full`), as the real client's first poll reads them."""
        from types import SimpleNamespace

        states = {name: self.partitions(name) for name in assets}
        return SimpleNamespace(states=states, full=True, cursor=None)

    def submit(self, request: RunRequest) -> str:
        self.submitted.append(request)
        return "run-0001"

    def backfill(
        self,
        selection: list[str],
        keys: list[str] | None = None,
        first: str | None = None,
        last: str | None = None,
        max_parallel: int = 4,
    ) -> str:
        if self.backfill_error is not None:
            raise self.backfill_error
        self.backfills_started.append(
            {
                "selection": list(selection),
                "keys": keys,
                "first": first,
                "last": last,
                "max_parallel": max_parallel,
            }
        )
        return "bf0001"

    def backfills(self, limit: int = 20, with_keys: bool = True) -> list[dict[str, Any]]:
        if self.list_error is not None:
            raise self.list_error
        return [dict(item) for item in self.items[:limit]]

    def backfill_action(self, action: str, backfill_id: str) -> str:
        self.actions.append((action, backfill_id))
        return backfill_id

    def runs(self, limit: int = 50, offset: int = 0) -> list[FakeRun]:
        return self.recent_runs[:limit]
