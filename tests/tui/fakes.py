"""The one stand-in for `engine.client.Client` in the UI's tests, and the hosts it runs in.

`FakeClient` implements `engine.client_api.ClientAPI` (mypy checks it: test_client_api.py) over
the data a test gives it: a real manifest (loaded by the real loader), runs and attempts built
from the real view classes with fixed ids and times, partition statuses, backfills, schedules
and sensors. It records what the UI asks of it (submits, cancels, re-runs, toggles, backfills)
so tests can assert on that. `Host` is the bare app that shows one screen over it, with a
frozen clock.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from textual.app import App
from textual.screen import Screen

from engine.automation.scheduler import ScheduleStatus
from engine.automation.sensors import SensorStatus, SensorTickView
from engine.client import (
    AttemptView,
    CheckView,
    Client,
    MachineView,
    NodeStatus,
    RunRequest,
    RunView,
    SampleView,
    StepView,
)
from engine.client.first_frame import FirstReads
from engine.client_api import ClientAPI
from engine.errors import EngineError, RunNotFound, SelectionError
from engine.history.asset_page import (
    AssetPage,
    CheckHistory,
    CheckResult,
    MaterializationView,
    Point,
)
from engine.history.lineage import LineageNode
from engine.history.partition_status import PartitionChanges, PartitionCursor, PartitionState
from engine.loading.config import Paths
from engine.loading.manifest import Manifest, target_label
from engine.service.events import EngineEvent
from engine.status import PartitionStatus, RunStatus, StepStatus

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
    status: StepStatus,
    started: float | None = None,
    ended: float | None = None,
    upstream: tuple[str, ...] = (),
    kind: str = "asset",
    error: str | None = None,
) -> StepView:
    return StepView(
        key=key, kind=kind, status=StepStatus(status),
        attempts=0 if status == StepStatus.QUEUED else 1, max_attempts=1,
        exit_code=None if status != StepStatus.FAILED else 1, error=error,
        peak_rss_bytes=None, cpu_seconds=None, log_path=None, started_at=started,
        ended_at=ended, upstream=upstream,
    )  # fmt: skip


def run(
    run_id: str,
    status: RunStatus,
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
    started = None if status == RunStatus.QUEUED else created
    return RunView(
        id=run_id, kind=kind, status=RunStatus(status), target=target, partition=partition,
        params={}, trigger=trigger, created_at=created, started_at=started, ended_at=ended,
        steps=steps, checks=checks,
    )  # fmt: skip


def sample_runs() -> list[RunView]:
    """Five runs, one in every interesting state, newest first."""
    t = NOW
    queued, running = StepStatus.QUEUED, StepStatus.RUNNING
    success, failed = StepStatus.SUCCESS, StepStatus.FAILED
    return [
        run(
            "a0b1c2d3e4f5", RunStatus.QUEUED, "training_tasks",
            tuple(step(k, queued, kind="python") for k in
                  ("extract", "validate", "train", "baseline", "evaluate", "publish")),
            t - 2, kind="pipeline", trigger="schedule",
        ),
        run(
            "4f2a9c01b2d3", RunStatus.RUNNING, "*trained_model",
            (step("raw_digits", success, t - 9, t - 8), step("features", success, t - 8, t - 7),
             step("trained_model", running, t - 7, upstream=("features",))),
            t - 9,
            checks=(CheckView("raw_digits", None, "no_nulls", True, True, None, {}, None),),
        ),
        run(
            "9c1e77aa0b12", RunStatus.SUCCESS, "group:sales",
            (step("orders", success, t - 2527, t - 2526),
             step("revenue", success, t - 2526, t - 2525),
             step("revenue_report", success, t - 2525, t - 2525)),
            t - 2527, trigger="schedule", partition="2025-01-30", ended=t - 2525,
        ),
        run(
            "77b0c3d4e5f6", RunStatus.FAILED, "parsed_orders",
            (step("parsed_orders", failed, t - 2815, t - 2814, error="ValueError: bad row"),),
            t - 2815, trigger="sensor", ended=t - 2814,
        ),
        run(
            "51d8e9f0a1b2", RunStatus.SUCCESS, "orders, revenue",
            (step("orders", success, t - 3724, t - 3723),
             step("revenue", success, t - 3723, t - 3722)),
            t - 3724, trigger="backfill", partition="2025-01-29", ended=t - 3722,
        ),
    ]  # fmt: skip


def example_automation(manifest: Manifest) -> tuple[list[ScheduleStatus], list[SensorStatus]]:
    """The example pipelines' schedules, each with its next tick, and their sensor, off."""
    ticks = {
        "nightly_sales": "2025-01-31T00:00:00+00:00",
        "training_tasks": "2025-01-31T03:00:00+00:00",
    }
    schedules = [
        ScheduleStatus(
            s.name, s.cron, target_label(s.target), True, s.catchup,
            datetime.fromisoformat(ticks[s.name]), None, None, None, None,
        )
        for s in manifest.schedules.values()
    ]  # fmt: skip
    sensors = [
        SensorStatus(s.name, s.path, s.pattern, target_label(s.target), False, 0, None, None, None)
        for s in manifest.sensors.values()
    ]
    return schedules, sensors


class FakeEngine:
    """Just enough of an embedded engine for the app to subscribe to."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[EngineEvent], None]] = []

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        self.listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self.listeners:
                self.listeners.remove(callback)

        return unsubscribe


class FakeClient:
    """`engine.client_api.ClientAPI` over fixed data, recording what the UI asks of it.

    Args:
        manifest: What `load` returns (default: no definitions).
        runs: The history, in any order (node statuses are derived from it, newest step wins).
        attempts: The attempts of those runs' steps (`attempts`), by their `run_id`.
        samples: Resource samples by attempt id.
        partitions: Partition statuses by asset and key; a key not given is missing.
        backfills: What `backfills` lists (dicts as `engine.automation.backfill.progress`).
        schedules: The schedules' states, as the scheduler reports them.
        sensors: The sensors' states.
        pages: Asset pages by name; an asset without one has a page with no history.
        sensor_ticks: Each custom sensor's ticks, newest first.
    """

    def __init__(
        self,
        manifest: Manifest | None = None,
        runs: Sequence[RunView] = (),
        *,
        attempts: Sequence[AttemptView] = (),
        samples: dict[int, list[SampleView]] | None = None,
        partitions: dict[str, dict[str | None, PartitionStatus]] | None = None,
        backfills: Sequence[dict[str, Any]] = (),
        schedules: Sequence[ScheduleStatus] = (),
        sensors: Sequence[SensorStatus] = (),
        pages: dict[str, AssetPage] | None = None,
        sensor_ticks: dict[str, list[SensorTickView]] | None = None,
    ) -> None:
        project = Path("/srv/ml-project")
        self.paths = Paths(home=project / ".dagtop", pipelines=project / "pipelines")
        self.engine: FakeEngine | None = None
        self.manifest = manifest or Manifest(root=str(self.paths.pipelines))
        self.runs_list: list[RunView] = list(runs)
        self.updated: dict[str, float] = {r.id: 0.0 for r in self.runs_list}
        self.attempt_list: list[AttemptView] = list(attempts)
        self.sample_lists: dict[int, list[SampleView]] = dict(samples or {})
        self.partition_statuses = {} if partitions is None else partitions
        self.backfill_items: list[dict[str, Any]] = list(backfills)
        self.schedule_items = {s.name: s for s in schedules}
        self.sensor_items = {s.name: s for s in sensors}
        self.pages: dict[str, AssetPage] = dict(pages or {})
        self.asset_reads: list[tuple[str, str | None, int]] = []  # (name, partition, limit)
        self.lineage_reads: list[tuple[str, str | None, bool, int | None]] = []
        self.tick_lists: dict[str, list[SensorTickView]] = dict(sensor_ticks or {})
        self.asset_status: dict[str, NodeStatus] = {}
        self.setup_warnings: list[str] = []
        self.task_status: dict[str, dict[str, NodeStatus]] = {}
        self._derive_statuses()
        # What the UI asked for.
        self.calls: list[str] = []
        self.reads: list[str] = []  # run ids, as `run` was asked for them
        self.submitted: list[RunRequest] = []
        self.canceled: list[str] = []
        self.reruns: list[str] = []
        self.toggles: list[tuple[str, str, bool]] = []
        self.backfills_started: list[dict[str, Any]] = []
        self.actions: list[tuple[str, str]] = []
        # What fails, when a test says so.
        self.fail_submit: EngineError | None = None
        self.toggle_error: Exception | None = None
        self.partitions_error: Exception | None = None
        self.backfill_error: EngineError | None = None
        self.list_error: Exception | None = None

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

    # --- definitions and runs -----------------------------------------------------------------

    def load(self, force: bool = False) -> Manifest:
        self.calls.append("load")
        return self.manifest

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunView]:
        ordered = sorted(self.runs_list, key=lambda r: r.created_at, reverse=True)
        return ordered[offset : offset + limit]

    def runs_since(self, updated_after: float, limit: int = 500) -> list[RunView]:
        changed = [r for r in self.runs_list if self.updated.get(r.id, 0.0) > updated_after]
        return changed[:limit]

    def run(self, run_id: str) -> RunView:
        self.reads.append(run_id)
        for r in self.runs_list:
            if r.id.startswith(run_id):
                return r
        raise RunNotFound(f"no run {run_id!r}")

    def attempts(self, run_id: str) -> list[AttemptView]:
        return [a for a in self.attempt_list if a.run_id == run_id]

    def samples(self, attempt_id: int, since: float | None = None) -> list[SampleView]:
        return [x for x in self.sample_lists.get(attempt_id, []) if since is None or x.t > since]

    def node_statuses(self, pipeline: str | None = None) -> dict[str, NodeStatus]:
        if pipeline is not None:
            return dict(self.task_status.get(pipeline, {}))
        return dict(self.asset_status)

    def warnings(self) -> list[str]:
        return list(self.setup_warnings)

    def begin_engine(self) -> None:
        self.calls.append("begin_engine")

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

    def asset(self, name: str, partition: str | None = None, limit: int = 50) -> AssetPage:
        """The page a test gave for `name` (narrowed to `partition` and cut to `limit`, as
        storage would), or one with no history."""
        self.asset_reads.append((name, partition, limit))
        if name not in self.manifest.assets:
            raise SelectionError(f"unknown asset {name!r}")
        page = self.pages.get(name) or empty_page(self.manifest, name)
        mats = [m for m in page.materializations if partition in (None, m.partition)]
        return replace(
            page, partition=partition, limit=limit, materializations=tuple(mats[:limit]),
            more=len(mats) > limit,
        )  # fmt: skip

    # --- partitions and lineage ---------------------------------------------------------------

    def partitions(self, asset: str) -> list[PartitionState]:
        if self.partitions_error is not None:
            raise self.partitions_error
        pdef = self.manifest.assets[asset].partitions_def
        keys: list[str | None] = list(pdef.keys()) if pdef is not None else [None]
        mine = self.partition_statuses.get(asset, {})
        out = []
        for key in keys:
            status = mine.get(key, PartitionStatus.MISSING)
            done = status in (PartitionStatus.MATERIALIZED, PartitionStatus.STALE)
            out.append(
                PartitionState(
                    key=key,
                    status=status,
                    materialized_at=SCREEN_NOW - 3600 if done else None,
                    run_id="r-" + (key or "all") if done else None,
                    reason="upstream orders newer" if status == PartitionStatus.STALE else None,
                )
            )
        return out

    def partition_changes(
        self, assets: Sequence[str], cursor: PartitionCursor | None = None
    ) -> PartitionChanges:
        """Every state at every poll (`full`), as the real client's first poll reads them."""
        states = {name: self.partitions(name) for name in assets}
        return PartitionChanges(states, True, PartitionCursor(0.0, frozenset(), ()))

    def lineage(
        self,
        asset: str,
        partition: str | None = None,
        downstream: bool = False,
        materialization: int | None = None,
    ) -> LineageNode:
        """The newest run that made `asset`, alone: this history records no inputs."""
        self.lineage_reads.append((asset, partition, downstream, materialization))
        node = self.asset_status.get(asset)
        if node is None or node.status != StepStatus.SUCCESS:
            raise EngineError(f"asset {asset!r} has no materialization yet", "Never materialized")
        return LineageNode(asset, node.partition, None, node.run_id, None, node.at, None, None)

    # --- backfills ----------------------------------------------------------------------------

    def backfill(
        self,
        selection: Sequence[str],
        keys: Sequence[str] | None = None,
        first: str | None = None,
        last: str | None = None,
        max_parallel: int = 4,
    ) -> str:
        if self.backfill_error is not None:
            raise self.backfill_error
        self.backfills_started.append(
            {
                "selection": list(selection),
                "keys": None if keys is None else list(keys),
                "first": first,
                "last": last,
                "max_parallel": max_parallel,
            }
        )
        return "bf0001"

    def backfills(self, limit: int = 20, with_keys: bool = True) -> list[dict[str, Any]]:
        if self.list_error is not None:
            raise self.list_error
        return [dict(item) for item in self.backfill_items[:limit]]

    def backfill_action(self, action: str, backfill_id: str) -> str:
        self.actions.append((action, backfill_id))
        return backfill_id

    # --- schedules and sensors ----------------------------------------------------------------

    def schedules(self) -> list[ScheduleStatus]:
        return list(self.schedule_items.values())

    def sensors(self) -> list[SensorStatus]:
        return list(self.sensor_items.values())

    def sensor_ticks(self, name: str, limit: int = 50) -> list[SensorTickView]:
        return self.tick_lists.get(name, [])[:limit]

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        if self.toggle_error is not None:
            raise self.toggle_error
        self.toggles.append((kind, name, enabled))
        if kind == "schedule":
            self.schedule_items[name] = replace(self.schedule_items[name], enabled=enabled)
        else:
            self.sensor_items[name] = replace(self.sensor_items[name], enabled=enabled)


PAGE_LINE, PAGE_CODE_VERSION = 42, "c0de5ee5c0de"
"""Where the fake pages say their asset is written, and its code version: fixed, so that the
snapshots do not change whenever the example pipelines are edited."""


def empty_page(manifest: Manifest, name: str) -> AssetPage:
    """The page of an asset of `manifest` that was never materialized."""
    spec = manifest.assets[name]
    pdef = spec.partitions_def
    return AssetPage(
        name=name, group=spec.group, description=spec.description, file=spec.file,
        line=PAGE_LINE, partitions=pdef.describe() if pdef is not None else None,
        partition_counts={PartitionStatus.MISSING: len(pdef.keys()) if pdef else 1},
        code_version=PAGE_CODE_VERSION, resources=spec.resources, upstream=spec.upstream,
        downstream=tuple(manifest.downstream().get(name, ())), stale=False, stale_reasons=(),
        partition=None, limit=50, materializations=(), more=False, checks=(), series={},
        by_partition={},
    )  # fmt: skip


def trained_page(manifest: Manifest, accuracies: Sequence[float] = (0.95, 0.97, 0.96)) -> AssetPage:
    """`evaluation` after a training per accuracy (oldest first, an hour apart), its check
    failing on the second; `accuracy` and `rows` are numbers, `model` text."""
    runs = [f"e{i:03d}0000000" for i in range(len(accuracies))]
    mats = tuple(
        MaterializationView(
            id=i + 1, run_id=runs[i], partition=None,
            created_at=SCREEN_NOW - 3600 * (len(runs) - i), duration=2.0 + i,
            trigger="manual" if i else "schedule",
            metadata={"accuracy": acc, "rows": 1437 + i, "model": "LogisticRegression"},
            checks={"accuracy_above_90pct": i != 1}, current=i == len(runs) - 1,
            code_version="c0de",
        )
        for i, acc in enumerate(accuracies)
    )[::-1]  # fmt: skip
    results = tuple(
        CheckResult(m.run_id, None, m.created_at, m.checks["accuracy_above_90pct"],
                    {"accuracy": m.metadata["accuracy"], "minimum": 0.9}, None)
        for m in mats
    )  # fmt: skip
    series = {
        key: tuple(Point(m.created_at, float(m.metadata[key]), m.run_id, None) for m in mats[::-1])
        for key in ("accuracy", "rows")
    }
    return replace(
        empty_page(manifest, "evaluation"), partition_counts={PartitionStatus.MATERIALIZED: 1},
        materializations=mats, series=series,
        checks=(CheckHistory("accuracy_above_90pct", False, None, results),),
    )  # fmt: skip


def sales_page(manifest: Manifest) -> AssetPage:
    """`revenue` materialized for 2025-01-01 to 03, the 2nd twice."""
    made = [("2025-01-01", 1501.2), ("2025-01-02", 2000.0), ("2025-01-03", 1765.1),
            ("2025-01-02", 2123.4)]  # fmt: skip
    mats = tuple(
        MaterializationView(
            id=i + 1, run_id=f"s{i:03d}0000000", partition=key,
            created_at=SCREEN_NOW - 600 * (len(made) - i), duration=0.1, trigger="backfill",
            metadata={"revenue": value}, checks={"revenue_is_positive": True},
            current=i != 1, code_version="c0de",
        )
        for i, (key, value) in enumerate(made)
    )[::-1]  # fmt: skip
    current = sorted((m for m in mats if m.current), key=lambda m: m.partition or "")
    return replace(
        empty_page(manifest, "revenue"),
        partition_counts={PartitionStatus.MATERIALIZED: 3, PartitionStatus.MISSING: 28},
        materializations=mats,
        series={"revenue": tuple(Point(m.created_at, m.metadata["revenue"], m.run_id,
                                       m.partition) for m in mats[::-1])},
        by_partition={"revenue": tuple(Point(m.created_at, m.metadata["revenue"], m.run_id,
                                             m.partition) for m in current)},
    )  # fmt: skip


# --- one screen at a time ---------------------------------------------------------------------


class Host(App[None]):
    """A bare app that pushes one screen, with a client and a frozen clock (not the app's
    styles, so a snapshot changes only when its screen does)."""

    def __init__(
        self, client: ClientAPI, make_screen: Callable[[], Screen[Any]], now: float = SCREEN_NOW
    ) -> None:
        super().__init__()
        self.client = client
        self.mode = "offline"
        self.clock: Callable[[], float] = lambda: now
        self.first_reads: FirstReads | None = None
        self._make_screen = make_screen

    def on_mount(self) -> None:
        self.push_screen(self._make_screen())

    def first_frame_drawn(self) -> None:
        pass  # no engine to start
