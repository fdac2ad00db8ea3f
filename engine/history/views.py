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

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["upstream"] = list(self.upstream)
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
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
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
                **{**st, "status": StepStatus(st["status"]), "upstream": tuple(st["upstream"])}
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
                        host=placed.get((r.id, st.key), (None, None))[0],
                        worker=placed.get((r.id, st.key), (None, None))[1],
                    )
                    for st in steps[r.id]
                ),
                checks=checks,
            )
        )
    return views


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
