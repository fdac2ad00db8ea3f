"""What the facade returns: frozen views of runs, steps, attempts and samples.

Never storage rows: a view holds no session and triggers no lazy load, so the UI can keep it
as long as it likes. The builders here take an open session from the facade.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine.loading.manifest import split_key
from engine.status import PartitionStatus, RunStatus, StepStatus

if TYPE_CHECKING:
    from sqlmodel import Session

    from engine.storage.models import Run, StepAttempt


def iso(ts: float | None) -> str | None:
    return (
        None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    )


@dataclass(frozen=True, slots=True)
class StepView:
    key: str
    kind: str
    status: StepStatus
    attempts: int
    max_attempts: int
    exit_code: int | None
    error: str | None
    peak_rss_bytes: int | None
    cpu_seconds: float | None
    log_path: str | None
    started_at: float | None
    ended_at: float | None
    upstream: tuple[str, ...]
    # What the step's materialization recorded; {} when it recorded nothing or made none (a
    # `--json` step has the same keys and types whatever its state).
    metadata: dict[str, Any] = field(default_factory=dict)
    host: str | None = None  # where its latest attempt ran
    worker: str | None = None  # "local", or the executor worker's address
    # Every attempt, oldest first: {"attempt", "status", "host", "worker", "error"} (a retry
    # after a lost worker ran elsewhere, and the reason the first one ended shows here).
    placements: tuple[dict[str, Any], ...] = ()
    # A skipped step's kind of skip (`status.SkipKind`: "branch", "short_circuit",
    # "upstream_failed", "skipped"); `error` says why in words ("not chosen by choose").
    skip: str | None = None
    # A mapped task's instance (`process[2]`): its index; its task is the key before `[`.
    map_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["upstream"] = list(self.upstream)
        out["placements"] = [dict(p) for p in self.placements]
        out["started_at"], out["ended_at"] = iso(self.started_at), iso(self.ended_at)
        return out


@dataclass(frozen=True, slots=True)
class CheckView:
    asset: str
    partition: str | None
    name: str
    passed: bool
    blocking: bool
    description: str | None
    metadata: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class RunView:
    id: str
    kind: str
    status: RunStatus
    target: str
    partition: str | None
    params: dict[str, Any]
    trigger: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    steps: tuple[StepView, ...]
    checks: tuple[CheckView, ...]
    reason: str | None = None  # why automation requested it (trigger `auto`)
    error: str | None = None  # why the run failed as a whole (its executor unreachable, say)

    @property
    def finished(self) -> bool:
        return self.status.finished

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "target": self.target,
            "kind": self.kind,
            "partition": self.partition,
            "params": self.params,
            "trigger": self.trigger,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "error": self.error,
            "steps": [s.to_json() for s in self.steps],
            "checks": [asdict(c) for c in self.checks],
        }

    def to_wire(self) -> dict[str, Any]:
        """Every field as JSON, times kept as epoch floats (for the engine's socket)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunView:
        fields = dict(data)
        fields["status"] = RunStatus(data["status"])
        fields["steps"] = tuple(
            StepView(
                **{
                    **st,
                    "status": StepStatus(st["status"]),
                    "upstream": tuple(st["upstream"]),
                    "placements": tuple(st.get("placements", ())),
                }
            )
            for st in data["steps"]
        )
        fields["checks"] = tuple(CheckView(**c) for c in data["checks"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class AttemptView:
    id: int
    run_id: str
    key: str
    attempt: int
    status: StepStatus
    started_at: float
    ended_at: float | None
    pid: int | None
    exit_code: int | None
    error: str | None
    peak_rss_bytes: int | None
    cpu_seconds: float | None
    log_path: str
    host: str | None = None
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class SampleView:
    t: float
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The latest step of an asset or task: what colors its node in the UI."""

    key: str
    # Its step's status, or stale for a success whose value is out of date.
    status: StepStatus | Literal[PartitionStatus.STALE]
    run_id: str
    partition: str | None
    at: float | None
    reason: str | None = None  # why it is stale ("upstream raw_digits newer", "code changed")


@dataclass(frozen=True, slots=True)
class MachineView:
    cpu_percent: float
    memory_used: int
    memory_total: int


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition of an asset and where it stands (see engine.history.partition_status)."""

    key: str | None
    status: PartitionStatus
    materialized_at: float | None
    run_id: str | None
    reason: str | None = None
    failed_checks: tuple[str, ...] = ()  # checks the current value failed


@dataclass(frozen=True, slots=True)
class LogRef:
    key: str
    attempt: int
    status: StepStatus  # its attempt's
    path: Path


def run_views(s: Session, runs: Sequence[Run]) -> list[RunView]:
    """Views of runs with their steps, checks and step metadata (a few queries in all)."""
    from engine.storage import repo

    steps = repo.steps_of(s, [r.id for r in runs])
    mats = repo.materializations_of_runs(s, [r.id for r in runs])
    checks_by_run = repo.checks_of_runs(s, [r.id for r in runs])
    placed = repo.placements_of_runs(s, [r.id for r in runs])
    views = []
    for r in runs:
        checks = tuple(
            CheckView(
                asset=c.asset,
                partition=c.partition,
                name=c.name,
                passed=c.passed,
                blocking=c.blocking,
                description=c.description,
                metadata=json.loads(c.metadata_json or "{}"),
                error=c.error,
            )
            for c in checks_by_run[r.id]
        )
        # Indexed once per run: a run of n steps must not cost n scans of its n values.
        metadata = {m.asset: json.loads(m.metadata_json or "{}") for m in reversed(mats[r.id])}
        views.append(
            RunView(
                id=r.id,
                kind=r.kind,
                status=RunStatus(r.status),
                target=r.target,
                partition=r.partition,
                params=json.loads(r.params or "{}"),
                trigger=r.trigger,
                reason=r.reason,
                created_at=r.created_at,
                started_at=r.started_at,
                ended_at=r.ended_at,
                steps=tuple(
                    StepView(
                        key=st.key,
                        kind=st.kind,
                        status=StepStatus(st.status),
                        attempts=st.attempts,
                        max_attempts=st.max_attempts,
                        exit_code=st.exit_code,
                        error=st.error,
                        peak_rss_bytes=st.peak_rss_bytes,
                        cpu_seconds=st.cpu_seconds,
                        log_path=st.log_path,
                        started_at=st.started_at,
                        ended_at=st.ended_at,
                        upstream=tuple(json.loads(st.upstream)),
                        metadata=metadata.get(st.key, {}),
                        host=_latest(placed, r.id, st.key)[0],
                        worker=_latest(placed, r.id, st.key)[1],
                        placements=tuple(
                            {"attempt": n, "status": status, "host": h, "worker": w, "error": e}
                            for n, status, h, w, e in placed.get((r.id, st.key), ())
                        ),
                        skip=st.skip,
                        map_index=split_key(st.key)[1] if r.kind == "pipeline" else None,
                    )
                    for st in steps[r.id]
                ),
                checks=checks,
                error=r.error,
            )
        )
    return views


def _latest(
    placed: dict[tuple[str, str], list[tuple[int, str, str | None, str | None, str | None]]],
    run_id: str,
    key: str,
) -> tuple[str | None, str | None]:
    """(host, worker) of a step's latest attempt."""
    attempts = placed.get((run_id, key))
    return (attempts[-1][2], attempts[-1][3]) if attempts else (None, None)


def attempt_view(a: StepAttempt) -> AttemptView:
    return AttemptView(
        id=a.id or 0,
        run_id=a.run_id,
        key=a.key,
        attempt=a.attempt,
        status=StepStatus(a.status),
        started_at=a.started_at,
        ended_at=a.ended_at,
        pid=a.pid,
        exit_code=a.exit_code,
        error=a.error,
        peak_rss_bytes=a.peak_rss_bytes,
        cpu_seconds=a.cpu_seconds,
        log_path=a.log_path,
        host=a.host,
        worker=a.worker,
    )


def node_statuses(s: Session, keys: Iterable[str], pipeline: str | None) -> dict[str, NodeStatus]:
    """The latest step of each asset of `keys` (or of each task of the task pipeline
    `pipeline`), keyed by name: one index seek per key, whatever the history holds."""
    from engine.storage import repo

    steps = repo.newest_steps_of(s, keys, pipeline)
    runs = repo.runs_by_id(s, {st.run_id for st in steps})
    return {
        st.key: NodeStatus(
            key=st.key,
            status=StepStatus(st.status),
            run_id=st.run_id,
            partition=runs[st.run_id].partition if st.run_id in runs else None,
            at=st.ended_at or st.started_at,
        )
        for st in steps
    }


def mapped_node_statuses(
    s: Session, maps: dict[str, str], statuses: dict[str, NodeStatus]
) -> dict[str, NodeStatus]:
    """The node of each mapped task of a pipeline (`maps`: task id -> the task it maps over),
    from its instances in the newest run of the task it maps over: running while one is,
    failed if one failed, skipped when all were (or none was made), else success; its reason
    counts them. `statuses` holds the other tasks' nodes (`node_statuses`)."""
    from engine.storage import repo

    runs = {statuses[src].run_id for src in maps.values() if src in statuses}
    steps = repo.steps_of(s, runs)
    out: dict[str, NodeStatus] = {}
    for task_id, source in maps.items():
        if source not in statuses:
            continue
        run_id = statuses[source].run_id
        own = [st for st in steps.get(run_id, []) if split_key(st.key)[0] == task_id]
        if not own:
            if statuses[source].status == StepStatus.SUCCESS:  # its list was empty
                out[task_id] = NodeStatus(
                    task_id, StepStatus.SKIPPED, run_id, None, statuses[source].at,
                    "mapped to no instance",
                )  # fmt: skip
            continue
        found = [StepStatus(st.status) for st in own]
        instances = [st for st in own if st.key != task_id]
        status = summary_status(found)
        reason = None
        if instances or own[0].kind != "map":
            counts = {x: found.count(x) for x in dict.fromkeys(found)}
            reason = f"{len(instances)} mapped: " + ", ".join(
                f"{n} {x.value}" for x, n in counts.items()
            )
        if not instances and own[0].kind == "map" and status == StepStatus.SUCCESS:
            status, reason = StepStatus.SKIPPED, "mapped to no instance"
        ends = [t for st in own if (t := st.ended_at or st.started_at) is not None]
        out[task_id] = NodeStatus(task_id, status, run_id, None, max(ends, default=None), reason)
    return out


def summary_status(found: list[StepStatus]) -> StepStatus:
    """One status for a mapped task's instances: running while one is (or queued while one
    waits), failed if one failed, canceled if one was, skipped when all were, else success."""
    for status in (StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.QUEUED,
                   StepStatus.FAILED, StepStatus.CANCELED):  # fmt: skip
        if status in found:
            return status
    if found and all(x == StepStatus.SKIPPED for x in found):
        return StepStatus.SKIPPED
    return StepStatus.SUCCESS
