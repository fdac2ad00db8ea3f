"""Backfills: one run per partition key (or per range, for assets with a BackfillPolicy), a
limit on how many run at once, cancel and resume.

Every run is recorded up front (queued) in the same transaction as the backfill, so a crash
at any moment loses nothing: the next engine finds the queued runs and continues.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from engine.errors import EngineError
from engine.history.plan import RunRequest, record
from engine.history.run_control import cancel_unstarted, requeue_failed
from engine.loading.manifest import Manifest
from engine.status import RunStatus
from engine.storage import repo
from engine.storage.models import Backfill


def create_backfill(
    session: Any,
    manifest: Manifest,
    selection: list[str],
    keys: list[str],
    max_parallel: int,
    now: float | None = None,
) -> str:
    """Record a backfill and one queued run per key (validated); returns the backfill id.

    Raises:
        SelectionError, PartitionError: the selection or a key is invalid (nothing recorded).
    """
    import time

    if not keys:
        raise EngineError("a backfill needs at least one partition key")
    if max_parallel < 1:
        raise EngineError("--max-parallel must be at least 1")
    from engine.authoring.backfill_policy import range_text
    from engine.history.plan import run_keys

    now = time.time() if now is None else now
    runs = run_keys(manifest, selection, keys)
    backfill_id = uuid.uuid4().hex[:12]
    session.add(
        Backfill(
            id=backfill_id,
            selection=json.dumps(list(selection)),
            partitions=json.dumps([key for run in runs for key in run]),
            max_parallel=max_parallel,
            created_at=now,
        )
    )
    session.flush()
    for i, run in enumerate(runs):
        request = RunRequest(
            selection=tuple(selection),
            partition=range_text(run[0], run[-1]),
            trigger="backfill",
            trigger_ref=backfill_id,
            backfill_id=backfill_id,
        )
        # A microsecond apart, so the queue runs the keys in order.
        record(session, manifest, request, now + i * 1e-6)
    return backfill_id


def cancel_backfill(session: Any, backfill_id: str, now: float) -> str:
    backfill = repo.find_backfill(session, backfill_id)
    if backfill.status != "running":
        raise EngineError(f"backfill {backfill.id} is already {backfill.status}")
    backfill.cancel_requested = True
    session.add(backfill)
    for run in repo.runs_of_backfill(session, backfill.id):
        if not RunStatus(run.status).finished:
            run.cancel_requested = True
            run.updated_at = now
            session.add(run)
    return backfill.id


def resume_backfill(session: Any, backfill_id: str, now: float) -> str:
    """Continue a canceled or failed backfill: its failed and canceled runs are queued again."""
    backfill = repo.find_backfill(session, backfill_id)
    if backfill.status == "success":
        raise EngineError(f"backfill {backfill.id} succeeded: nothing to resume")
    for run in repo.runs_of_backfill(session, backfill.id):
        if run.status in (RunStatus.FAILED, RunStatus.CANCELED):
            requeue_failed(session, run.id, now)
    backfill.status = "running"
    backfill.cancel_requested = False
    backfill.ended_at = None
    session.add(backfill)
    return backfill.id


def advance_backfills(session: Any, now: float) -> list[str]:
    """Cancel the unstarted runs of canceled backfills and close finished backfills.

    Returns the ids of backfills that changed state.
    """
    changed = []
    for backfill in repo.active_backfills(session):
        runs = repo.runs_of_backfill(session, backfill.id)
        if backfill.cancel_requested:
            for run in runs:
                if run.status == RunStatus.QUEUED and not run.owner:
                    cancel_unstarted(session, run, now)
        if all(RunStatus(r.status).finished for r in runs):
            if backfill.cancel_requested:
                backfill.status = "canceled"
            elif all(r.status == RunStatus.SUCCESS for r in runs):
                backfill.status = "success"
            else:
                backfill.status = "failed"
            backfill.ended_at = now
            session.add(backfill)
            changed.append(backfill.id)
    return changed


def progress(session: Any, backfill_id: str) -> dict[str, Any]:
    """Counts of the backfill's partitions by the status of the run that covers them, plus
    its own row as plain data."""
    backfill = repo.find_backfill(session, backfill_id)
    keys = json.loads(backfill.partitions)
    position = {key: i for i, key in enumerate(keys)}
    counts: dict[str, int] = {}
    for run in repo.runs_of_backfill(session, backfill.id):
        counts[run.status] = counts.get(run.status, 0) + _covers(run.partition, position)
    return {
        "id": backfill.id,
        "status": backfill.status,
        "selection": json.loads(backfill.selection),
        "partitions": keys,
        "max_parallel": backfill.max_parallel,
        "total": len(keys),
        "counts": counts,
        "created_at": backfill.created_at,
        "ended_at": backfill.ended_at,
    }


def _covers(partition: str | None, position: dict[str, int]) -> int:
    """How many of the backfill's keys (and their places) a run covers: one, or its range's
    (the runs of a ranged backfill are cut from its keys in order, so a range spans them
    without gaps)."""
    from engine.authoring.backfill_policy import RANGE_SEP

    if partition is None or partition in position or RANGE_SEP not in partition:
        return 1
    first, last = partition.split(RANGE_SEP, 1)
    if first not in position or last not in position:
        return 1
    return position[last] - position[first] + 1
