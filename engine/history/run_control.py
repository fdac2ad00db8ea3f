"""Changing runs that are not executing: re-queue after a failure, cancel before they start.

Both are used by the CLI in-process, by the engine's commands and by backfills, and both go
through the status chokepoint like everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.errors import EngineError
from engine.executor.recovery import owner_alive
from engine.status import RunStatus, SkipKind, StepStatus, transition_run, transition_step
from engine.storage import repo

if TYPE_CHECKING:
    from sqlmodel import Session

    from engine.storage.models import Run, Step


def requeue_failed(session: Session, run_id: str, now: float) -> str:
    """Put a finished (or interrupted) run's failed, skipped and canceled steps back in the
    queue, keeping its successful steps and their stored values. Returns the full run id.

    Raises:
        RunNotFound: no such run.
        EngineError: the run succeeded, or is still running.
    """
    run = repo.find_run(session, run_id)
    if run.status == RunStatus.SUCCESS:
        raise EngineError(f"run {run.id} succeeded: nothing to re-run", title="Nothing to do")
    if run.status == RunStatus.RUNNING and owner_alive(run.owner):
        raise EngineError(f"run {run.id} is still running", title="Run is running")
    for step in repo.steps_of(session, [run.id])[run.id]:
        if step.status in (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED):
            if step.status == StepStatus.SKIPPED and step.skip and not SkipKind(step.skip).failed:
                # Skipped by a branch, a short-circuit or a trigger rule: the task that chose
                # so succeeded and stays so; the skip stays with it.
                continue
            transition_step(step, StepStatus.QUEUED)
            step.error, step.ended_at, step.retry_at, step.skip = None, None, None, None
            # Give the step its retry budget again on top of the attempts it already used.
            step.max_attempts = step.attempts + max(1, step.max_attempts - step.attempts)
            session.add(step)
    if RunStatus(run.status).finished:
        transition_run(run, RunStatus.QUEUED)
        run.ended_at = None
    run.cancel_requested = False
    run.owner = None
    run.updated_at = now
    session.add(run)
    return run.id


def fail_unstarted(session: Session, run: Run, now: float, reason: str) -> None:
    """Fail a queued run that cannot start (its executor cannot be reached): the user is told
    it failed, so it must never run later. Its steps are skipped with the reason."""
    for step in repo.steps_of(session, [run.id])[run.id]:
        if not StepStatus(step.status).finished and step.status != StepStatus.RUNNING:
            transition_step(step, StepStatus.SKIPPED)
            step.error, step.ended_at = f"not started: {reason}", now
            session.add(step)
    transition_run(run, RunStatus.FAILED)
    run.error = reason
    run.ended_at = now
    run.updated_at = now
    session.add(run)


def cancel_unstarted(
    session: Session,
    run: Run,
    now: float,
    reason: str = "canceled by user",
    steps: Sequence[Step] | None = None,
) -> None:
    """Cancel a queued run that no engine has picked up: every unfinished step is canceled.

    `steps` are the run's step rows when the caller has read them already (a backfill cancels
    its runs by the hundred, with one query for all their steps)."""
    for step in repo.steps_of(session, [run.id])[run.id] if steps is None else steps:
        if not StepStatus(step.status).finished and step.status != StepStatus.RUNNING:
            transition_step(step, StepStatus.CANCELED)
            step.error, step.ended_at = reason, now
            session.add(step)
    transition_run(run, RunStatus.CANCELED)
    run.ended_at = now
    run.updated_at = now
    session.add(run)
