"""Crash recovery: repair what a dead engine left behind, before anything else runs.

A run whose coordinating process is gone may still say "running". Its attempts that were
running become failed with "engine stopped while running" (their orphaned process trees are
killed: we cannot hear their events any more), their steps are queued for retry if attempts
remain, and the run goes back to "queued" so an engine resumes it. Value files that no
materialization references (a crash between the rename and the record) are deleted.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import psutil
from sqlalchemy.engine import Engine as SAEngine

from engine.config import Paths
from engine.executor.monitor import kill_tree
from engine.status import RunStatus, StepStatus, transition_run, transition_step
from engine.storage import repo
from engine.storage.db import session_scope

log = logging.getLogger(__name__)

ENGINE_STOPPED = "engine stopped while running"
MAX_INTERRUPTIONS = 3


def process_alive(pid: int | None, create_time: float | None) -> bool:
    """True when `pid` is the very process that was recorded (pids are reused)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    try:
        pid_text, ct_text = owner.split(":", 1)
        return process_alive(int(pid_text), float(ct_text))
    except ValueError:
        return False


def reconcile(db: SAEngine, now: float | None = None) -> list[str]:
    """Repair every active run whose owner is dead; returns the ids of runs left to resume."""
    now = time.time() if now is None else now
    resumable: list[str] = []
    with session_scope(db) as s:
        runs = [
            r
            for r in repo.active_runs(s)
            # A queued run no engine has taken yet has nothing to repair: it just waits.
            if not (r.status == RunStatus.QUEUED and r.owner is None) and not owner_alive(r.owner)
        ]
        for run in runs:
            steps = {st.key: st for st in repo.steps_of(s, [run.id])[run.id]}
            interrupted: dict[str, int] = {}
            for att in repo.attempts_of(s, run.id):
                if att.error == ENGINE_STOPPED:
                    interrupted[att.key] = interrupted.get(att.key, 0) + 1
            for att in repo.running_attempts(s, run.id):
                # A step on a Dask worker has a pid on another machine; its task stops it
                # when this engine's Dask client goes away.
                here = att.worker in (None, "local")
                if here and process_alive(att.pid, att.pid_create_time) and att.pid is not None:
                    log.warning(
                        "[run %s] killing orphaned step %s (pid %d)", run.id, att.key, att.pid
                    )
                    kill_tree(att.pid)
                att.status = StepStatus.FAILED.value
                att.error = ENGINE_STOPPED
                att.ended_at = now
                s.add(att)
                step = steps.get(att.key)
                if step is None or step.status != StepStatus.RUNNING:
                    continue
                step.error = ENGINE_STOPPED
                # The step did not fail: its engine died. Such an attempt does not use up the
                # retry budget, up to a few times (a step that keeps killing its engine must
                # still end).
                interrupted[att.key] = interrupted.get(att.key, 0) + 1
                if interrupted[att.key] <= MAX_INTERRUPTIONS:
                    step.max_attempts = max(step.max_attempts, step.attempts + 1)
                if step.attempts < step.max_attempts and not run.cancel_requested:
                    transition_step(step, StepStatus.RETRYING)
                    step.retry_at = now
                else:
                    transition_step(step, StepStatus.FAILED)
                    step.ended_at = now
                s.add(step)
            for step in steps.values():
                # A step marked running with no attempt row cannot happen (one transaction
                # writes both), but if storage says so, it is not running.
                if step.status == StepStatus.RUNNING and step.attempts == 0:
                    transition_step(step, StepStatus.FAILED)
                    step.error = ENGINE_STOPPED
                    s.add(step)
            if run.status == RunStatus.RUNNING:
                transition_run(run, RunStatus.QUEUED)
            run.owner = None
            run.updated_at = now
            s.add(run)
            repo.add_events(
                s, [{"run_id": run.id, "ts": now, "kind": "recovered", "message": ENGINE_STOPPED}]
            )
            resumable.append(run.id)
    if resumable:
        log.info("recovered %d interrupted run(s): %s", len(resumable), ", ".join(resumable))
    return resumable


def sweep_values(db: SAEngine, paths: Paths, values_dir: str | None = None) -> int:
    """Delete value files no materialization references (left by a crash mid-record).

    `values_dir` is the project's own values folder when it has one; a URL is not swept.

    Another process (a CLI running in-process) may be writing and recording values right now,
    so the order matters: list the files first, then read which runs are still going and which
    values are recorded. A file listed before that read belongs to a run that is either still
    going (left alone) or finished, in which case its record, if it has one, is already there.
    """
    if values_dir is not None and "://" in values_dir:
        return 0
    root = Path(values_dir) if values_dir else paths.values
    if not root.is_dir():
        return 0
    listed = []
    for dirpath, dirs, files in os.walk(root):
        if dirpath == str(root) and "@tasks" in dirs:
            dirs.remove("@tasks")  # task values: referenced by attempts, kept with their runs
        listed.extend((os.path.join(dirpath, name), name) for name in files)
    with session_scope(db) as s:
        active = {r.id for r in repo.active_runs(s)}
        referenced = repo.referenced_values(s)
    removed = 0
    for path, name in listed:
        if name.startswith(".tmp-"):
            try:
                if time.time() - os.path.getmtime(path) < 3600:
                    continue  # a worker may be writing it right now
            except FileNotFoundError:
                continue  # it was renamed into place meanwhile
        elif path in referenced or name.split(".", 1)[0] in active:
            continue
        Path(path).unlink(missing_ok=True)
        removed += 1
    return removed
