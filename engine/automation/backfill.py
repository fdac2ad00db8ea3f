"""Backfills: one run per partition key (or per range, for assets with a BackfillPolicy), a
limit on how many run at once, cancel and resume.

Every run is recorded up front (queued) in the same transaction as the backfill, so a crash
at any moment loses nothing: the next engine finds the queued runs and continues.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.history.plan import RunRequest, record, record_many
from engine.history.run_control import cancel_unstarted
from engine.loading.manifest import Manifest
from engine.status import BackfillStatus, RunStatus, StepStatus
from engine.storage import repo
from engine.storage.models import Backfill

if TYPE_CHECKING:
    from sqlmodel import Session


def backfill_keys(
    manifest: Manifest,
    selection: Sequence[str],
    keys: Sequence[str] | None,
    first: str | None = None,
    last: str | None = None,
) -> list[str]:
    """A backfill's keys: `keys`, or the range `first`..`last` (inclusive) of the partitioned
    assets selected.

    Raises:
        EngineError: neither keys nor a range, or nothing selected is partitioned.
        SelectionError, PartitionError: the selection or a key of the range is invalid.
    """
    if keys is not None:
        return list(keys)
    from engine.authoring.partitions import InvalidPartitionKey
    from engine.errors import PartitionError
    from engine.loading.selection import resolve

    names = resolve(manifest, selection)
    pdefs = [manifest.assets[n].partitions_def for n in names]
    pdef = next((p for p in pdefs if p is not None), None)
    if first is None and last is None and pdef is not None and pdef.kind in ("static", "dynamic"):
        return pdef.keys()  # every key: static and dynamic keys have no open end
    if first is None or last is None:
        raise EngineError("give --from and --to, or --partitions k1,k2")
    if pdef is None:
        raise EngineError(f"none of {', '.join(names)} is partitioned: nothing to backfill")
    try:
        return pdef.keys_between(first, last)
    except InvalidPartitionKey as exc:
        raise PartitionError(str(exc)) from None


def create_backfill(
    session: Session,
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
    from engine.history.dynamic import bind
    from engine.history.plan import run_keys

    now = time.time() if now is None else now
    manifest = bind(session, manifest)
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
    request = RunRequest(
        selection=tuple(selection),
        trigger="backfill",
        trigger_ref=backfill_id,
        backfill_id=backfill_id,
    )
    record_many(session, manifest, request, [range_text(run[0], run[-1]) for run in runs], now)
    return backfill_id


def cancel_backfill(session: Session, backfill_id: str, now: float) -> str:
    """Ask a running backfill to stop: its unfinished runs are asked to cancel (in one
    statement); whoever admits its runs then cancels those not started (`cancel_queued`)."""
    backfill = repo.find_backfill(session, backfill_id)
    if backfill.status != BackfillStatus.RUNNING:
        raise EngineError(f"backfill {backfill.id} is already {backfill.status}")
    backfill.cancel_requested = True
    session.add(backfill)
    repo.set_backfill_runs_cancel(session, backfill.id, True, now)
    return backfill.id


def resume_backfill(session: Session, manifest: Manifest, backfill_id: str, now: float) -> str:
    """Continue a canceled or failed backfill: each key whose run failed or was canceled gets
    a new run, and the old run stays in the history as it ended. A new run runs only the steps
    the old one did not finish (their upstream values are read from storage, as for any run of
    part of a graph).

    Raises:
        EngineError: the backfill succeeded.
        SelectionError: an asset the old runs had is no longer defined (nothing recorded).
    """
    backfill = repo.find_backfill(session, backfill_id)
    if backfill.status == BackfillStatus.SUCCESS:
        raise EngineError(f"backfill {backfill.id} succeeded: nothing to resume")
    ended = [
        (run_id, partition)
        for run_id, status, partition, _owner, _created in repo.backfill_run_states(
            session, backfill.id
        )
        if status in (RunStatus.FAILED, RunStatus.CANCELED)
    ]
    steps = repo.step_states(session, [run_id for run_id, _ in ended])
    # Runs a cancel marked but nothing canceled yet (no engine was running) start as queued.
    repo.set_backfill_runs_cancel(session, backfill.id, False, now)
    for i, (run_id, partition) in enumerate(ended):
        left = [key for key, status in steps[run_id] if status != StepStatus.SUCCESS]
        request = RunRequest(
            selection=tuple(left or (key for key, _ in steps[run_id])),
            partition=partition,
            trigger="backfill",
            trigger_ref=backfill.id,
            backfill_id=backfill.id,
        )
        record(session, manifest, request, now + i * 1e-6)  # in key order, as at creation
    repo.detach_from_backfill(session, [run_id for run_id, _ in ended], now)
    backfill.status = BackfillStatus.RUNNING
    backfill.cancel_requested = False
    backfill.ended_at = None
    session.add(backfill)
    return backfill.id


def cancel_queued(session: Session, run_ids: Sequence[str], now: float) -> list[str]:
    """Cancel those of `run_ids` that are still queued and that no engine has taken; returns
    their ids. Callers pass at most a few hundred at a time (rows are loaded to change them)."""
    runs = repo.runs_by_id(session, run_ids)
    steps = repo.steps_of(session, list(runs))
    canceled = []
    for run_id in run_ids:
        run = runs.get(run_id)
        if run is not None and run.status == RunStatus.QUEUED and not run.owner:
            cancel_unstarted(session, run, now, steps=steps[run_id])
            canceled.append(run_id)
    return canceled


def finish_if_done(session: Session, backfill_id: str, now: float) -> str | None:
    """Close a running backfill none of whose runs is queued or running (one aggregate query):
    canceled if a cancel was asked, success if every run succeeded, else failed. Returns the
    status it closed with, or None."""
    backfill = repo.get_backfill(session, backfill_id)
    if backfill is None or backfill.status != BackfillStatus.RUNNING:
        return None
    statuses = {status for status, _, _ in run_counts(session, [backfill_id])[backfill_id]}
    if not statuses or any(not RunStatus(s).finished for s in statuses):
        return None
    if backfill.cancel_requested:
        backfill.status = BackfillStatus.CANCELED
    elif statuses == {RunStatus.SUCCESS}:
        backfill.status = BackfillStatus.SUCCESS
    else:
        backfill.status = BackfillStatus.FAILED
    backfill.ended_at = now
    session.add(backfill)
    return backfill.status


def advance_backfills(session: Session, now: float) -> list[str]:
    """What an engine does for its backfills, done once by a process that runs without one:
    cancel the unstarted runs of canceled backfills and close finished backfills. Returns the
    ids of backfills that closed. (A running engine keeps this in memory instead, see
    engine.service.admission: it never reads every run of a backfill at every pass.)"""
    return [
        backfill_id
        for backfill_id, _cap, cancel in repo.running_backfills(session)
        if advance_backfill(session, backfill_id, cancel, now) is not None
    ]


def advance_backfill(session: Session, backfill_id: str, cancel: bool, now: float) -> str | None:
    """`advance_backfills` for one backfill (`cancel`: a cancel was asked); returns the status
    it closed with, or None."""
    if cancel:
        queued = [
            run_id
            for run_id, status, _, owner, _ in repo.backfill_run_states(session, backfill_id)
            if status == RunStatus.QUEUED and not owner
        ]
        for i in range(0, len(queued), repo.ID_CHUNK):
            cancel_queued(session, queued[i : i + repo.ID_CHUNK], now)
    return finish_if_done(session, backfill_id, now)


def run_counts(
    session: Session, backfill_ids: Sequence[str]
) -> dict[str, list[tuple[str, str | None, int]]]:
    """Per backfill, its runs counted by status (see `repo.backfill_run_counts`)."""
    from engine.authoring.backfill_policy import RANGE_SEP

    return repo.backfill_run_counts(session, backfill_ids, RANGE_SEP)


def key_counts(rows: Sequence[tuple[str, str | None, int]], keys: Sequence[str]) -> dict[str, int]:
    """How many of the backfill's `keys` each status covers, from `run_counts` rows: a run of
    one key counts one, a run of a range counts its keys."""
    counts: dict[str, int] = {}
    position: dict[str, int] | None = None
    for status, ranged, n in rows:
        if ranged is not None:
            if position is None:
                position = {key: i for i, key in enumerate(keys)}
            n = covers_count(ranged, position)
        counts[status] = counts.get(status, 0) + n
    return {status: n for status, n in counts.items() if n}


def progress(session: Session, backfill_id: str, with_keys: bool = True) -> dict[str, Any]:
    """Counts of the backfill's partitions by the status of the run that covers them, plus
    its own row as plain data; one aggregate query, never every run.

    Args:
        with_keys: Include the key list (`partitions`); without it the dict says only how
            many there are (what a progress line needs).
    """
    backfill = repo.find_backfill(session, backfill_id)
    return describe(backfill, run_counts(session, [backfill.id])[backfill.id], with_keys)


def describe(
    backfill: Backfill, rows: Sequence[tuple[str, str | None, int]], with_keys: bool = True
) -> dict[str, Any]:
    """A backfill's row and its `run_counts` rows as the plain data `progress` returns."""
    keys = json.loads(backfill.partitions)
    info: dict[str, Any] = {
        "id": backfill.id,
        "status": backfill.status,
        "selection": json.loads(backfill.selection),
        "max_parallel": backfill.max_parallel,
        "total": len(keys),
        "first": keys[0] if keys else None,
        "last": keys[-1] if keys else None,
        "counts": key_counts(rows, keys),
        "created_at": backfill.created_at,
        "ended_at": backfill.ended_at,
    }
    if with_keys:
        info["partitions"] = keys
    return info


class ProgressReader:
    """The progress of the recent backfills for a reader that asks again and again (the UI's
    list, every second), without their key lists: a backfill's keys never change, so each list
    is parsed once per reader, and a finished backfill's counts change only when it is resumed,
    so they are counted once; only running backfills are counted at each read (in one aggregate
    query), or taken from `live` (an engine's memory) when it knows them."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[int, str | None, str | None]] = {}  # total, first, last
        self._finished: dict[str, tuple[tuple[str, float | None], dict[str, int]]] = {}

    def recent(
        self,
        session: Session,
        limit: int,
        live: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> list[dict[str, Any]]:
        heads = repo.recent_backfill_heads(session, limit)
        new = [head[0] for head in heads if head[0] not in self._keys]
        for backfill_id, text in repo.backfill_key_lists(session, new).items():
            keys = json.loads(text)
            self._keys[backfill_id] = (
                len(keys),
                keys[0] if keys else None,
                keys[-1] if keys else None,
            )
        counts: dict[str, dict[str, int]] = {}
        count = []
        for backfill_id, _sel, _cap, status, _created, ended in heads:
            known = self._finished.get(backfill_id)
            running = status == BackfillStatus.RUNNING
            if not running and known is not None and known[0] == (status, ended):
                counts[backfill_id] = known[1]
            elif running and (info := live and live(backfill_id)) is not None:
                counts[backfill_id] = info["counts"]
            else:
                count.append(backfill_id)
        for backfill_id, rows in run_counts(session, count).items():
            ranged_keys: Sequence[str] = ()  # needed only to count the keys of ranged runs
            if any(ranged is not None for _, ranged, _ in rows):
                text = repo.backfill_key_lists(session, [backfill_id])[backfill_id]
                ranged_keys = json.loads(text)
            counts[backfill_id] = key_counts(rows, ranged_keys)
        out = []
        for backfill_id, selection, cap, status, created, ended in heads:
            if status != BackfillStatus.RUNNING:
                self._finished[backfill_id] = ((status, ended), counts[backfill_id])
            total, first, last = self._keys.get(backfill_id, (0, None, None))
            out.append(
                {
                    "id": backfill_id,
                    "status": status,
                    "selection": json.loads(selection),
                    "max_parallel": cap,
                    "total": total,
                    "first": first,
                    "last": last,
                    "counts": dict(counts[backfill_id]),
                    "created_at": created,
                    "ended_at": ended,
                }
            )
        return out


def covers_count(partition: str | None, position: dict[str, int]) -> int:
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
