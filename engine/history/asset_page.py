"""One asset's page: what it is, its materializations with their metadata, its checks over
time, and the numbers its metadata recorded, as series to plot.

What `dagtop asset NAME` prints and the UI's asset screen shows, read in one go and bounded by
a limit: the newest `limit` materializations (of one partition, if asked), the check results
of their runs, and for a partitioned asset the current value's metadata of its last `limit`
partitions. Each read goes through an index in the order it is wanted (see the storage
functions named below), so the page costs its limit, not the asset's whole history; only the
partition counts read one state per partition, as the partition matrix does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.history.views import iso
from engine.status import PartitionStatus

if TYPE_CHECKING:
    from sqlmodel import Session

    from engine.loading.manifest import Manifest

DEFAULT_LIMIT = 50


@dataclass(frozen=True, slots=True)
class MaterializationView:
    """One materialization of the asset, with what its run and checks said of it."""

    id: int
    run_id: str
    partition: str | None
    created_at: float
    duration: float | None  # its step's, start to end (a ranged step's covers every key)
    trigger: str | None  # its run's: manual, schedule, sensor, backfill, ...
    metadata: dict[str, Any]
    checks: dict[str, bool]  # check name -> passed, for this value
    current: bool  # still the value of its partition (a newer one has not replaced it)
    code_version: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "partition": self.partition,
            "created_at": iso(self.created_at),
            "duration": self.duration,
            "trigger": self.trigger,
            "metadata": self.metadata,
            "checks": self.checks,
            "current": self.current,
            "code_version": self.code_version,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    run_id: str
    partition: str | None
    created_at: float
    passed: bool
    metadata: dict[str, Any]
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "partition": self.partition,
            "created_at": iso(self.created_at),
            "passed": self.passed,
            "metadata": self.metadata,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class CheckHistory:
    """One check of the asset and its results over the materializations on the page."""

    name: str
    blocking: bool
    description: str | None
    results: tuple[CheckResult, ...]  # newest first

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def pass_rate(self) -> float | None:
        """The share of its results on the page that passed (None: it never ran)."""
        return self.passed / len(self.results) if self.results else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "blocking": self.blocking,
            "description": self.description,
            "passed": self.passed,
            "total": len(self.results),
            "pass_rate": self.pass_rate,
            "results": [r.to_json() for r in self.results],
        }


@dataclass(frozen=True, slots=True)
class Point:
    """One number a materialization recorded: when (or for which partition), and its value."""

    at: float
    value: float
    run_id: str
    partition: str | None

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "value": self.value, "run_id": self.run_id,
                "partition": self.partition}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AssetPage:
    """Everything about one asset, as `dagtop asset` and the asset screen show it."""

    name: str
    group: str
    description: str | None
    file: str
    line: int
    partitions: str | None  # its PartitionsDefinition, described; None if unpartitioned
    partition_counts: dict[PartitionStatus, int]  # partitions per status (one if unpartitioned)
    code_version: str
    resources: tuple[str, ...]
    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    stale: bool
    stale_reasons: tuple[str, ...]  # why it (or some of its partitions) is stale
    partition: str | None  # the one partition the history is narrowed to
    limit: int
    materializations: tuple[MaterializationView, ...]  # newest first
    more: bool  # older materializations exist beyond `limit`
    checks: tuple[CheckHistory, ...]
    # Every numeric metadata key, its values over the materializations above, oldest first.
    series: dict[str, tuple[Point, ...]]
    # A partitioned asset's numeric metadata keys across its partitions (the current value of
    # each of its last `limit` partitions with one), in key order; {} otherwise.
    by_partition: dict[str, tuple[Point, ...]]

    @property
    def metadata_keys(self) -> list[str]:
        """Every metadata key of the materializations on the page, first seen first."""
        keys: dict[str, None] = {}
        for mat in reversed(self.materializations):
            keys.update(dict.fromkeys(mat.metadata))
        return list(keys)

    def to_wire(self) -> dict[str, Any]:
        """Every field as JSON, times kept as epoch floats (for the engine's socket)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AssetPage:
        def series(found: dict[str, Any]) -> dict[str, tuple[Point, ...]]:
            return {key: tuple(Point(**p) for p in points) for key, points in found.items()}

        fields = dict(data)
        fields["partition_counts"] = {
            PartitionStatus(k): v for k, v in data["partition_counts"].items()
        }
        for name in ("resources", "upstream", "downstream", "stale_reasons"):
            fields[name] = tuple(data[name])
        fields["materializations"] = tuple(
            MaterializationView(**m) for m in data["materializations"]
        )
        fields["checks"] = tuple(
            CheckHistory(**{**c, "results": tuple(CheckResult(**r) for r in c["results"])})
            for c in data["checks"]
        )
        fields["series"] = series(data["series"])
        fields["by_partition"] = series(data["by_partition"])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        def points(series: dict[str, tuple[Point, ...]]) -> dict[str, Any]:
            return {key: [p.to_json() for p in values] for key, values in series.items()}

        return {
            "name": self.name,
            "group": self.group,
            "description": self.description,
            "file": self.file,
            "line": self.line,
            "partitions": self.partitions,
            "partition_counts": {str(k): v for k, v in self.partition_counts.items()},
            "code_version": self.code_version,
            "resources": list(self.resources),
            "upstream": list(self.upstream),
            "downstream": list(self.downstream),
            "stale": self.stale,
            "stale_reasons": list(self.stale_reasons),
            "partition": self.partition,
            "limit": self.limit,
            "more": self.more,
            "materializations": [m.to_json() for m in self.materializations],
            "checks": [c.to_json() for c in self.checks],
            "series": points(self.series),
            "by_partition": points(self.by_partition),
        }


def asset_page(
    session: Session,
    manifest: Manifest,
    asset: str,
    partition: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> AssetPage:
    """The page of `asset` (which the manifest must define), its history narrowed to
    `partition` if given.

    Raises:
        PartitionError: `partition` given for an unpartitioned asset, or not one of its keys.
    """
    # Storage and the history's queries load here: the page's types travel over the engine's
    # socket to commands that import no storage.
    from engine.history.lineage import check_partition
    from engine.history.partition_status import every_key, partition_states
    from engine.storage import repo

    if limit < 1:
        raise EngineError(f"the limit must be at least 1, not {limit}", title="Bad limit")
    spec = manifest.assets[asset]
    if partition is not None:
        check_partition(manifest, asset, partition)
    pdef = spec.partitions_def

    rows = repo.asset_history(session, asset, limit + 1, partition)
    more, rows = len(rows) > limit, rows[:limit]
    run_ids = {row.run_id for row in rows}
    steps = repo.asset_steps_of_runs(session, asset, run_ids)
    check_rows = repo.asset_checks_of_runs(session, asset, run_ids)
    # A check result belongs to the value of its run and partition (a ranged run checks each
    # of its keys); the newest result wins where a run checked one value twice.
    verdicts: dict[tuple[str, str | None], dict[str, bool]] = {}
    for c in check_rows:
        verdicts.setdefault((c.run_id, c.partition), {})[c.name] = bool(c.passed)

    mats = []
    for row in rows:
        step = steps.get(row.run_id)
        took = None
        if step is not None and step.started_at is not None and step.ended_at is not None:
            took = step.ended_at - step.started_at
        mats.append(
            MaterializationView(
                id=row.id,
                run_id=row.run_id,
                partition=row.partition,
                created_at=row.created_at,
                duration=took,
                trigger=step.trigger if step is not None else None,
                metadata=_metadata(row.metadata_json),
                checks=verdicts.get((row.run_id, row.partition), {}),
                current=row.value_path is not None,
                code_version=row.code_version,
            )
        )

    checks = _check_histories(manifest, asset, check_rows, partition)
    states = partition_states(
        session, manifest, asset, [partition] if partition is not None else None
    )
    counts = Counter(state.status for state in states)
    stale = [s for s in states if s.status == PartitionStatus.STALE]
    reasons = tuple(dict.fromkeys(r for s in stale if s.reason for r in s.reason.split(", ")))

    by_partition: dict[str, tuple[Point, ...]] = {}
    if pdef is not None and partition is None:
        current = repo.latest_per_partition(session, asset)
        keys = [key for key in every_key(spec) if key in current][-limit:]
        by_partition = _series(
            (mat.created_at, mat.run_id, key, _metadata(mat.metadata_json))
            for key in keys
            for mat in [current[key]]
        )

    downstream = tuple(manifest.downstream().get(asset, ()))
    return AssetPage(
        name=asset,
        group=spec.group,
        description=spec.description,
        file=spec.file,
        line=spec.line,
        partitions=pdef.describe() if pdef is not None else None,
        partition_counts=dict(counts),
        code_version=spec.code_version,
        resources=spec.resources,
        upstream=spec.upstream,
        downstream=downstream,
        stale=bool(stale),
        stale_reasons=reasons,
        partition=partition,
        limit=limit,
        materializations=tuple(mats),
        more=more,
        checks=checks,
        series=_series((m.created_at, m.run_id, m.partition, m.metadata) for m in reversed(mats)),
        by_partition=by_partition,
    )


def _metadata(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _number(value: Any) -> float | None:
    """A metadata value as a number to plot: ints and floats, not booleans, not NaN or inf."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _series(
    entries: Any,  # Iterable[tuple[at, run_id, partition, metadata]], oldest first
) -> dict[str, tuple[Point, ...]]:
    """Each metadata key with a number in any entry, and its numeric values in order."""
    out: dict[str, list[Point]] = {}
    for at, run_id, partition, metadata in entries:
        for key, value in metadata.items():
            number = _number(value)
            if number is not None:
                out.setdefault(key, []).append(Point(at, number, run_id, partition))
    return {key: tuple(points) for key, points in out.items()}


def _check_histories(
    manifest: Manifest, asset: str, rows: list[Any], partition: str | None
) -> tuple[CheckHistory, ...]:
    """The asset's checks as defined now, then any that only history knows, each with its
    results on the page, newest first."""
    specs = {c.name: c for c in manifest.checks.get(asset, [])}
    results: dict[str, list[CheckResult]] = {name: [] for name in specs}
    blocking: dict[str, bool] = {}
    described: dict[str, str | None] = {}
    for row in reversed(rows):  # newest first
        if partition is not None and row.partition != partition:
            continue
        results.setdefault(row.name, []).append(
            CheckResult(
                run_id=row.run_id,
                partition=row.partition,
                created_at=row.created_at,
                passed=bool(row.passed),
                metadata=_metadata(row.metadata_json),
                error=row.error,
            )
        )
        blocking.setdefault(row.name, bool(row.blocking))
        described.setdefault(row.name, row.description)
    return tuple(
        CheckHistory(
            name=name,
            blocking=specs[name].blocking if name in specs else blocking.get(name, False),
            description=specs[name].description if name in specs else described.get(name),
            results=tuple(found),
        )
        for name, found in results.items()
    )


__all__ = [
    "DEFAULT_LIMIT",
    "AssetPage",
    "CheckHistory",
    "CheckResult",
    "MaterializationView",
    "Point",
    "asset_page",
]
