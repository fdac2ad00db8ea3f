"""Every status dagtop records or shows, and the one place where a run's or step's may change.

Nothing else assigns a run's or step's `.status`: every change goes through `transition`, which
checks it against the allowed table, so a bug that would move a finished step back to running
fails loudly instead of corrupting history.

The values are the words storage holds and `--json` prints; each enum is a `str`, so a value
read back from storage compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in _RUN_TERMINAL


class StepStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # failed an attempt, waiting for its backoff before the next one
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in _STEP_TERMINAL


class SkipKind(StrEnum):
    """Why a step was skipped, in the terms of Airflow's trigger rules, which tell an upstream
    that failed (`upstream_failed`) from one that was skipped."""

    UPSTREAM_FAILED = "upstream_failed"  # an upstream failed, or was blocked by a check
    BRANCH = "branch"  # a branch task did not choose it
    SHORT_CIRCUIT = "short_circuit"  # a short-circuit task returned a falsy value
    SKIPPED = "skipped"  # its trigger rule skips it (upstream skipped, or a rule not met)

    @property
    def failed(self) -> bool:
        """Whether it counts as a failure: for downstream trigger rules, and for the run."""
        return self is SkipKind.UPSTREAM_FAILED


class BackfillStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"  # every run it made succeeded
    FAILED = "failed"  # every run ended, some did not succeed
    CANCELED = "canceled"


class CommandStatus(StrEnum):
    """A request in the command table, for an engine on another host that shares PostgreSQL."""

    PENDING = "pending"
    TAKEN = "taken"  # an engine is carrying it out
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"  # its sender stopped waiting before an engine took it


class TickStatus(StrEnum):
    """What a schedule's tick (or a sensor's evaluation) did."""

    STARTED = "started"  # it requested a run
    SKIPPED = "skipped"  # nothing to request (paused, a skip reason, a run of it still going)
    FAILED = "failed"  # its request could not be planned: the reason is recorded with it


class PartitionStatus(StrEnum):
    """One partition of an asset (or an unpartitioned asset) in the partition matrix."""

    MISSING = "missing"  # never materialized, or its stored value is gone
    MATERIALIZED = "materialized"  # its newest value is current
    STALE = "stale"  # materialized, but out of date
    FAILED = "failed"  # its newest attempt failed (an older value may still exist)
    RUNNING = "running"  # a run is materializing it now


class Freshness(StrEnum):
    """Whether an asset partition must be materialized to be up to date (`--stale`)."""

    MISSING = "missing"
    STALE = "stale"
    CURRENT = "current"


_RUN_TERMINAL = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED})
_STEP_TERMINAL = frozenset(
    {StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED}
)

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.QUEUED}
    ),
    # A finished run can be re-opened only by a re-run from failure, which resumes it.
    RunStatus.FAILED: frozenset({RunStatus.QUEUED}),
    RunStatus.CANCELED: frozenset({RunStatus.QUEUED}),
    RunStatus.SUCCESS: frozenset(),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.QUEUED: frozenset(
        {StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELED, StepStatus.FAILED}
    ),
    StepStatus.RUNNING: frozenset(
        {StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.RETRYING, StepStatus.CANCELED}
    ),
    StepStatus.RETRYING: frozenset(
        {StepStatus.RUNNING, StepStatus.CANCELED, StepStatus.FAILED, StepStatus.SKIPPED}
    ),
    # Re-running from failure puts failed, skipped and canceled steps back in the queue.
    StepStatus.FAILED: frozenset({StepStatus.QUEUED}),
    StepStatus.SKIPPED: frozenset({StepStatus.QUEUED}),
    StepStatus.CANCELED: frozenset({StepStatus.QUEUED}),
    StepStatus.SUCCESS: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug in the engine: a status change the table does not allow."""


class _HasRunStatus(Protocol):
    status: str


def transition_run(run: _HasRunStatus, new: RunStatus) -> None:
    old = RunStatus(run.status)
    if new != old and new not in RUN_TRANSITIONS[old]:
        raise IllegalTransition(f"run cannot go from {old} to {new}")
    run.status = new


def transition_step(step: _HasRunStatus, new: StepStatus) -> None:
    old = StepStatus(step.status)
    if new != old and new not in STEP_TRANSITIONS[old]:
        raise IllegalTransition(f"step cannot go from {old} to {new}")
    step.status = new
