"""What the coordinator holds in memory about the runs it executes, and every rule it decides by.

A `RunState` is the coordinator's copy of one run and its steps as it last wrote them to storage
(storage stays the record; this is what the loop decides from): whether this engine may claim
it, which step is ready, which steps end without running and why (skipped, canceled), how an
attempt's end settles its step (retry or not, and the backoff), which failed check blocks what
is downstream, how the run ends, which alert hooks a step's new status fires. A `LiveAttempt`
is one attempt whose process (or Dask task) is running: its handles, the events it has sent so
far, and, once it exits, how it ended.

The coordinator asks these rules, has `recording` write the outcome, and then applies it here
(`apply`, `started`, `ended`), so memory follows storage. Nothing here writes to storage, starts
or stops a process, or touches the selector.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.executor.alerts import Alert
from engine.executor.monitor import TreeStats, describe_exit
from engine.protocol.worker import EventKind, FailureKind, decode_event, reported_children
from engine.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from engine.executor.dask_executor import RemoteAttempt
    from engine.executor.leftovers import Leftovers
    from engine.executor.spawn import Launch
    from engine.loading.manifest import Manifest
    from engine.protocol.worker import CheckEvent, ErrorEvent, Event
    from engine.storage.models import Run, Step

# A value of the wrong type will be of the wrong type again, and params that do not make the
# typed config will not make it again: retrying only wastes time.
NOT_RETRIED = frozenset({FailureKind.TYPE, FailureKind.CONFIG})
MAX_RETRY_DELAY = 300.0
"""Seconds: the exponential backoff between attempts stops growing here."""

# Steps settled in one pass without running: key -> (new status, the reason).
Updates = dict[str, tuple[StepStatus, str | None]]


def may_claim(
    status: RunStatus, owner: str | None, me: str, owner_alive: Callable[[str], bool]
) -> bool:
    """Whether engine `me` may execute a run: it has not finished, and no other live engine
    executes it."""
    if status.finished:
        return False
    return not (owner and owner != me and owner_alive(owner))


def may_retry(attempts: int, max_attempts: int, canceling: bool) -> bool:
    """Whether a step whose attempt `attempts` failed runs again (its failure aside)."""
    return attempts < max_attempts and not canceling


def retry_delay(base: float | None, attempts: int) -> float:
    """Seconds before the attempt after attempt `attempts`: `base` (1 s when the step's
    definition is gone), doubled at each attempt, capped at `MAX_RETRY_DELAY`."""
    delay: float = (1.0 if base is None else base) * 2 ** (attempts - 1)
    return min(delay, MAX_RETRY_DELAY)


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
class Ending:
    """How an attempt ended, before the retry policy has its say."""

    status: StepStatus
    error: str | None
    traceback: str | None
    retry: bool  # False when a retry cannot change the outcome


@dataclass(frozen=True)
class Outcome:
    """What an attempt's end does to its step: `Ending` with the retry policy applied."""

    end: Ending
    step_status: StepStatus  # the end's status, or RETRYING when the step runs again
    retry_in: float | None  # seconds until the next attempt, when there is one
    retry_at: float | None
    blocks: str | None  # why what is downstream may not run: a blocking check failed


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

    # --- which steps run, and which never will ------------------------------------------------

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

    def unrunnable(self) -> Updates:
        """The steps that end now without running, each with its reason: with a cancel
        requested, every step still waiting; then every step whose upstream failed, was
        skipped or canceled, or is blocked by a check (through the whole graph at once)."""
        updates: Updates = {}
        if self.canceling:
            for st in self.steps.values():
                if st.status in (StepStatus.QUEUED, StepStatus.RETRYING):
                    updates[st.key] = (StepStatus.CANCELED, "canceled by user")
        changed = True
        while changed:
            changed = False
            for st in self.steps.values():
                status = updates.get(st.key, (st.status, None))[0]
                if status != StepStatus.QUEUED:
                    continue
                reason = self.skip_reason(st, updates)
                if reason:
                    updates[st.key] = (StepStatus.SKIPPED, reason)
                    changed = True
        return updates

    def apply(self, updates: Updates) -> None:
        """The steps in `updates` were settled in storage."""
        for key, (status, _reason) in updates.items():
            self.steps[key].status = status

    def finished(self) -> bool:
        """Whether every step has finished (attempts may still be ending)."""
        return all(st.status.finished for st in self.steps.values())

    def next_retry(self) -> float | None:
        """When the first step waiting for a retry is due, if any."""
        due = [
            st.retry_at
            for st in self.steps.values()
            if st.status == StepStatus.RETRYING and st.retry_at is not None
        ]
        return min(due, default=None)

    def final_status(self) -> RunStatus:
        """How the run ends, once every step has finished."""
        statuses = [st.status for st in self.steps.values()]
        if self.canceling or StepStatus.CANCELED in statuses:
            return RunStatus.CANCELED
        if all(s == StepStatus.SUCCESS for s in statuses) and not self.blocked:
            return RunStatus.SUCCESS
        return RunStatus.FAILED

    # --- an attempt, from its start to its end ------------------------------------------------

    def started(self, st: StepState, attempt: int) -> None:
        """Attempt `attempt` of the step was recorded as running."""
        st.status, st.attempts, st.retry_at = StepStatus.RUNNING, attempt, None

    def outcome(
        self,
        st: StepState,
        end: Ending,
        manifest: Callable[[], Manifest],
        now: float,
        events: Sequence[Event] = (),
    ) -> Outcome:
        """What the end of the step's current attempt does: whether it runs again and when
        (a failure a retry can change, attempts left, no cancel), and which blocking check
        failed on a success (its `events`)."""
        retry_in = retry_at = None
        failed = end.status == StepStatus.FAILED and end.retry
        if failed and may_retry(st.attempts, st.max_attempts, self.canceling):
            base = self.definition(manifest(), st.key, "retry_delay")
            retry_in = retry_delay(base, st.attempts)
            retry_at = now + retry_in
        blocks = None
        if end.status == StepStatus.SUCCESS:
            for check in failed_blocking_checks(events):
                blocks = f"blocking check {check['name']} on {st.key} failed"
        status = StepStatus.RETRYING if retry_in is not None else end.status
        return Outcome(end, status, retry_in, retry_at, blocks)

    def ended(self, st: StepState, outcome: Outcome) -> None:
        """The attempt's outcome was recorded."""
        st.status = outcome.step_status
        if outcome.retry_at is not None:
            st.retry_at = outcome.retry_at
        if outcome.blocks is not None:
            self.blocked[st.key] = outcome.blocks

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


def failed_blocking_checks(events: Sequence[Event]) -> list[CheckEvent]:
    """The blocking checks that failed, in the order the worker reported them."""
    return [e for e in events if e["e"] == EventKind.CHECK and e["blocking"] and not e["passed"]]


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
    events: list[Event] = field(default_factory=list)
    canceled: bool = False
    remote: RemoteAttempt | None = None  # when it runs on a Dask worker
    created: float | None = None
    """The process's create time: with the pid, it names the process (pids are reused)."""
    orphaned: bool = False
    """Its fork server died: nobody reports its exit, the coordinator must look for it."""
    exited: tuple[Ending, int | None, TreeStats] | None = None
    """Once its own process is gone: how it ended, its exit status and resource totals."""
    leftovers: Leftovers | None = None
    """What its process left running, being ended once it exited; the attempt is over (and
    recorded) only when they are gone."""

    def reported_children(self) -> tuple[list[int] | None, float | None]:
        """The children the worker named in its last event, and when it sent it; None when
        it did not say (it died first, or could not tell)."""
        return reported_children(self.events)

    def reported_peak_rss(self) -> int:
        """The peak RSS the worker measured itself (VmHWM), which sampling can miss; 0 when
        it did not say."""
        return max(
            (
                e["peak_rss"] or 0
                for e in self.events
                if e["e"] == EventKind.FINISHED or e["e"] == EventKind.ERROR
            ),
            default=0,
        )

    def feed(self, chunk: bytes) -> int:
        """Take more of the event stream; returns how many complete lines were not events."""
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        malformed = 0
        for line in lines:
            if not line.strip():
                continue
            event = decode_event(line)
            if event is None:
                malformed += 1
            else:
                self.events.append(event)
        return malformed

    def ending(self, returncode: int | None, stats: TreeStats) -> Ending:
        """How the attempt ended, from its events, its exit status (None when it was lost) and
        its resource totals. The first that applies wins: a cancel, a limit the monitor
        enforced, a lost Dask worker, the error the worker reported, the exit status."""
        error_event: ErrorEvent | None = None
        finished = False
        for e in self.events:
            if e["e"] == EventKind.ERROR:
                error_event = e
            elif e["e"] == EventKind.FINISHED:
                finished = True
        status, error, tb = StepStatus.FAILED, None, None
        if self.canceled:
            status, error = StepStatus.CANCELED, "canceled by user"
        elif stats.violation:
            error = stats.violation
        elif self.remote is not None and self.remote.error:
            error = self.remote.error  # e.g. its Dask worker was lost
        elif error_event is not None:
            error, tb = error_event["message"], error_event["traceback"]
        elif returncode is None and not finished:
            error = "the worker's exit status was lost (its fork server died)"
        elif returncode is not None and returncode != 0:
            error = describe_exit(returncode)
            if self.launch.spec is None:
                error = f"command {error}"
        elif self.launch.spec is not None and not finished:
            error = "the worker exited without reporting a result"
        else:
            status = StepStatus.SUCCESS
        retry = error_event is None or error_event["kind"] not in NOT_RETRIED
        return Ending(status, error, tb, retry)
