"""What the coordinator holds in memory about the runs it executes, and the rules read from it.

A `RunState` is the coordinator's copy of one run and its steps as it last wrote them to storage
(storage stays the record; this is what the loop decides from): which step is ready, which must
be skipped and why, how the run ends, which alert hooks a step's new status fires. A
`LiveAttempt` is one attempt whose process (or Dask task) is running: its handles, the events
it has sent so far, and, once it exits, how it ended.

Nothing here writes to storage, starts or stops a process, or touches the selector.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.executor.alerts import Alert
from engine.executor.monitor import TreeStats, describe_exit
from engine.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from engine.executor.launch import Launch
    from engine.loading.manifest import Manifest
    from engine.storage.models import Run, Step

NOT_RETRIED = frozenset({"type"})  # worker error kinds a retry cannot change

# Steps settled in one pass without running: key -> (new status, the reason).
Updates = dict[str, tuple[StepStatus, str | None]]


@dataclass
class StepState:
    id: int
    key: str
    upstream: list[str]
    status: StepStatus
    attempts: int
    max_attempts: int
    retry_at: float | None


@dataclass
class RunState:
    id: str
    steps: dict[str, StepState]
    partition: str | None
    schedule: str | None  # the schedule that started it, for its alert hooks
    pipeline: str | None  # the task pipeline's name, or None for an asset run
    canceling: bool = False
    blocked: dict[str, str] = field(default_factory=dict)  # asset -> failed blocking check

    @classmethod
    def from_rows(cls, run: Run, steps: list[Step]) -> RunState:
        return cls(
            id=run.id,
            pipeline=json.loads(run.selection) if run.kind == "pipeline" else None,
            partition=run.partition,
            schedule=run.trigger_ref if run.trigger == "schedule" else None,
            canceling=run.cancel_requested,
            steps={
                st.key: StepState(
                    id=st.id or 0,
                    key=st.key,
                    upstream=json.loads(st.upstream),
                    status=StepStatus(st.status),
                    attempts=st.attempts,
                    max_attempts=st.max_attempts,
                    retry_at=st.retry_at,
                )
                for st in steps
            },
        )

    def definition(self, manifest: Manifest, key: str, attr: str) -> Any:
        """An attribute of the step's current definition (None when it is gone)."""
        if self.pipeline is None:
            spec: Any = manifest.assets.get(key)
        else:
            pipeline = manifest.pipelines.get(self.pipeline)
            spec = pipeline.tasks.get(key) if pipeline else None
        return getattr(spec, attr, None)

    def ready(self, st: StepState, now: float) -> bool:
        """Whether the step may start now: queued (or due for a retry), its upstream done."""
        if st.status == StepStatus.RETRYING:
            if st.retry_at is not None and st.retry_at > now:
                return False
        elif st.status != StepStatus.QUEUED:
            return False
        return all(self.steps[up].status == StepStatus.SUCCESS for up in st.upstream) and not any(
            up in self.blocked for up in st.upstream
        )

    def skip_reason(self, st: StepState, pending: Updates) -> str | None:
        """Why the step can never run (counting the updates not yet applied), or None."""
        for up in st.upstream:
            up_status = pending.get(up, (self.steps[up].status, None))[0]
            if up_status == StepStatus.FAILED:
                return f"upstream {up} failed"
            if up_status in (StepStatus.SKIPPED, StepStatus.CANCELED):
                return f"upstream {up} {up_status.value}"
            if up in self.blocked:
                return self.blocked[up]
        return None

    def final_status(self) -> RunStatus:
        """How the run ends, once every step has finished."""
        statuses = [st.status for st in self.steps.values()]
        if self.canceling or StepStatus.CANCELED in statuses:
            return RunStatus.CANCELED
        if all(s == StepStatus.SUCCESS for s in statuses) and not self.blocked:
            return RunStatus.SUCCESS
        return RunStatus.FAILED

    def alert_for(
        self,
        manifest: Callable[[], Manifest],
        defaults: Mapping[str, Any],
        st: StepState,
        status: StepStatus,
        error: str | None,
        log_path: Path | None,
    ) -> tuple[list[dict[str, Any]], Alert] | None:
        """The hooks a step's new status fires and the alert to send them, or None.

        The step's own hook wins, then its pipeline's, then its schedule's (each once); the
        project-wide `defaults` only when none of them has one.
        """
        event = {
            StepStatus.FAILED: "on_failure",
            StepStatus.RETRYING: "on_retry",
            StepStatus.SUCCESS: "on_success",
        }.get(status)
        if event is None:
            return None
        current = manifest()
        hooks: list[dict[str, Any]] = []
        for source in (
            self.definition(current, st.key, "hooks"),
            current.pipelines[self.pipeline].hooks if self.pipeline in current.pipelines else None,
            current.schedules[self.schedule].hooks if self.schedule in current.schedules else None,
        ):
            if source and event in source and source[event] not in hooks:
                hooks.append(source[event])
        if not hooks and event in defaults:
            hooks.append(defaults[event])  # the project-wide default
        if not hooks:
            return None
        return hooks, Alert(
            event=event, run_id=self.id, step=st.key, status=status.value,
            attempt=st.attempts, error=error, log_path=str(log_path) if log_path else None,
            partition=self.partition, pipeline=self.pipeline,
        )  # fmt: skip


@dataclass
class Ending:
    """How an attempt ended, before the retry policy has its say."""

    status: StepStatus
    error: str | None
    traceback: str | None
    retry: bool  # False when a retry cannot change the outcome


@dataclass
class LiveAttempt:
    """A running attempt."""

    run_id: str
    key: str
    attempt: int
    attempt_id: int
    pid: int
    popen: subprocess.Popen[bytes] | None  # None when the fork server is its parent
    events_fd: int | None
    pidfd: int | None
    launch: Launch
    started: float
    buf: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)
    canceled: bool = False
    remote: Any = None  # a dask_executor.RemoteAttempt when it runs on a Dask worker
    created: float | None = None
    """The process's create time: with the pid, it names the process (pids are reused)."""
    orphaned: bool = False
    """Its fork server died: nobody reports its exit, the coordinator must look for it."""
    exited: tuple[Ending, int | None, TreeStats] | None = None
    """Once its own process is gone: how it ended, its exit status and resource totals."""
    leftovers: Any = None
    """A `leftovers.Leftovers` being ended once its process exited; the attempt is over (and
    recorded) only when they are gone."""

    def reported_children(self) -> tuple[list[int] | None, float | None]:
        """The children the worker named in its last event, and when it sent it; None when
        it did not say (it died first, or could not tell)."""
        for event in reversed(self.events):
            if event["e"] in ("finished", "error"):
                children = event.get("children")
                if not isinstance(children, list):
                    return None, None
                return [pid for pid in children if isinstance(pid, int)], event.get("t")
        return None, None

    def feed(self, chunk: bytes) -> int:
        """Take more of the event stream; returns how many complete lines were not JSON."""
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        malformed = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                self.events.append(json.loads(line))
            except ValueError:
                malformed += 1
        return malformed

    def ending(self, returncode: int | None, stats: TreeStats) -> Ending:
        """How the attempt ended, from its events, its exit status (None when it was lost) and
        its resource totals. The first that applies wins: a cancel, a limit the monitor
        enforced, a lost Dask worker, the error the worker reported, the exit status."""
        kinds = {e["e"]: e for e in self.events}
        status, error, tb = StepStatus.FAILED, None, None
        if self.canceled:
            status, error = StepStatus.CANCELED, "canceled by user"
        elif stats.violation:
            error = stats.violation
        elif self.remote is not None and self.remote.error:
            error = self.remote.error  # e.g. its Dask worker was lost
        elif "error" in kinds:
            error, tb = kinds["error"]["message"], kinds["error"].get("traceback")
        elif returncode is None and "finished" not in kinds:
            error = "the worker's exit status was lost (its fork server died)"
        elif returncode is not None and returncode != 0:
            error = describe_exit(returncode)
            if self.launch.spec is None:
                error = f"command {error}"
        elif self.launch.spec is not None and "finished" not in kinds:
            error = "the worker exited without reporting a result"
        else:
            status = StepStatus.SUCCESS
        # A value of the wrong type will be of the wrong type again: retrying only wastes time.
        retry = kinds.get("error", {}).get("kind") not in NOT_RETRIED
        return Ending(status, error, tb, retry)
