"""The status of every partition of an asset: what the partition matrix and
`dagtop partitions` show.

missing       never materialized, or its stored value is gone (`reason` says so)
materialized  its newest value is current
stale         materialized, but out of date: its code changed since, or an upstream it reads
              was materialized after it or is stale itself (`reason` says which)
failed        its newest attempt failed (an older value may still exist)
running       a run is materializing it now

A materialized or stale partition whose value failed a check lists it in `failed_checks`.

Each read costs what its answer is made of: the newest step of each partition and the current
values, found through indexes, never every run behind them (see storage/repo.py). The
partition matrix polls `partition_changes`, which reads only what changed since its cursor.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.history.lineage import VALUE_MISSING, Staleness
from engine.history.views import PartitionState as PartitionState  # there: no storage needed
from engine.loading.manifest import AssetSpec, Manifest
from engine.status import PartitionStatus, StepStatus
from engine.storage import repo

if TYPE_CHECKING:
    from sqlmodel import Session

    from engine.authoring.partitions import PartitionsDefinition
# A run's `updated_at` is taken before its transaction waits for the write lock: a change
# committed late may carry a time older than one already read. Each poll reads this many
# seconds back again (skipping the changes it has seen), the busy timeout's length.
OVERLAP = 30.0


@dataclass(frozen=True, slots=True)
class PartitionCursor:
    """Where `partition_changes` left off: opaque to callers, handed back at the next poll."""

    updated: float  # the newest run change read
    seen: frozenset[tuple[str, float]]  # (run, updated_at) read within OVERLAP of `updated`
    definitions: tuple[Any, ...]  # what the states were judged against


@dataclass(frozen=True, slots=True)
class PartitionChanges:
    """States that changed since a cursor: every state of each asset when `full`, else only
    those of the keys that may have changed (assets with none are left out)."""

    states: dict[str, list[PartitionState]]
    full: bool
    cursor: PartitionCursor = field(repr=False)


@functools.lru_cache(maxsize=32)
def _every_key(partitions: str, last: str | None) -> tuple[str, ...]:
    # 8,760 hourly keys take ~20 ms to list: once per definition and newest ended period.
    from engine.authoring.partitions import PartitionsDefinition

    return tuple(PartitionsDefinition.from_spec(json.loads(partitions)).keys())


def every_key(spec: AssetSpec) -> tuple[str, ...]:
    """An asset's partition keys in order (cached: they change only when a period ends)."""
    from datetime import UTC, datetime

    pdef = spec.partitions_def
    if pdef is None or spec.partitions is None:
        return ()
    static = spec.partitions.get("kind") == "static"
    last = None if static else pdef.last_complete_key(datetime.now(UTC))
    return _every_key(json.dumps(spec.partitions, sort_keys=True), last)


def partition_states(
    session: Session, manifest: Manifest, asset: str, partitions: Iterable[str] | None = None
) -> list[PartitionState]:
    """One state per partition key in order (one state with key None if unpartitioned).

    With `partitions` (keys, or ranges `FIRST...LAST` as runs name them), only the states of
    the keys they cover.
    """
    spec = manifest.assets[asset]
    pdef = spec.partitions_def
    every: Sequence[str | None] = every_key(spec) if pdef is not None else [None]
    staleness = Staleness(session, manifest)
    if pdef is None:
        keys: Sequence[str | None] = [None]
        step = repo.newest_step(session, asset)
        steps: dict[str | None, Any] = {None: step} if step is not None else {}
        staleness.preload_keys(asset, keys)
    elif partitions is None:
        keys = every
        steps = _per_key(repo.newest_steps_per_partition(session, asset), pdef)
        staleness.preload([asset])
    else:
        texts = set(partitions)
        covered = {key for key in _per_key(dict.fromkeys(texts), pdef) if key is not None}
        keys = [key for key in every if key in covered]
        steps = _per_key(repo.newest_steps_per_partition(session, asset, texts | covered), pdef)
        staleness.preload_keys(asset, keys)
    current = {key: staleness.current(asset, key) for key in keys}
    checks: dict[tuple[str, str | None], list[str]] = {}
    if manifest.checks.get(asset):
        checks = repo.failed_checks(session, asset, {m.run_id for m in current.values() if m})
    out = []
    for key in keys:
        mat = current[key]
        step = steps.get(key)
        step_status = StepStatus(step.status) if step is not None else None
        step_time = (step.ended_at or step.started_at or 0.0) if step is not None else 0.0
        reason = None
        failed: tuple[str, ...] = ()
        if mat is not None and not staleness.present(mat):
            mat, reason = None, VALUE_MISSING
        if step_status is not None and not step_status.finished:
            status = PartitionStatus.RUNNING
        elif step_status == StepStatus.FAILED and (mat is None or step_time >= mat.created_at):
            status, reason = PartitionStatus.FAILED, None
        elif mat is None:
            status = PartitionStatus.MISSING
        else:
            reason = ", ".join(staleness.reasons(asset, key)) or None
            status = PartitionStatus.STALE if reason else PartitionStatus.MATERIALIZED
            failed = tuple(checks.get((mat.run_id, mat.partition), ()))
        out.append(
            PartitionState(
                key=key,
                status=status,
                materialized_at=mat.created_at if mat else None,
                run_id=mat.run_id if mat else None,
                reason=reason,
                failed_checks=failed,
            )
        )
    return out


def _closure(manifest: Manifest, asset: str) -> list[str]:
    """`asset` and everything upstream of it (what its states are judged by)."""
    out: list[str] = []
    todo = [asset]
    while todo:
        name = todo.pop()
        if name in out or name not in manifest.assets:
            continue
        out.append(name)
        todo.extend(manifest.assets[name].upstream)
    return out


def partition_changes(
    session: Session, manifest: Manifest, assets: Sequence[str], cursor: PartitionCursor | None
) -> PartitionChanges:
    """The states of `assets` that may have changed since `cursor` (all of them without one,
    or when a definition they depend on changed: code, partitions, a new period).

    A change is a run of one of them, or of an asset upstream, that changed after the cursor:
    it touches the keys that run covers (every key, for an upstream partitioned otherwise).
    """
    closures = {name: _closure(manifest, name) for name in assets}
    definitions = tuple(
        (name, spec.code_version, json.dumps(spec.partitions, sort_keys=True), every[-1:])
        for name in sorted({n for names in closures.values() for n in names})
        for spec in [manifest.assets[name]]
        for every in [every_key(spec)]
    )
    if cursor is None or cursor.definitions != definitions:
        # Read before the states: whatever changes while they are read shows at the next poll.
        newest = repo.last_update(session)
        recent = repo.asset_steps_changed_since(session, newest - OVERLAP)
        seen = frozenset((run, updated) for run, updated, *_ in recent)
        states = {name: partition_states(session, manifest, name) for name in assets}
        return PartitionChanges(states, True, PartitionCursor(newest, seen, definitions))
    changes = repo.asset_steps_changed_since(session, cursor.updated - OVERLAP)
    newest = max([cursor.updated, *(updated for _, updated, *_ in changes)])
    seen = frozenset((run, updated) for run, updated, *_ in changes if updated > newest - OVERLAP)
    touched: dict[str, set[str | None]] = {}
    for run, updated, key, partition in changes:
        if (run, updated) not in cursor.seen:
            touched.setdefault(key, set()).add(partition)
    states = {}
    for name in assets:
        spec = manifest.assets[name]
        texts: set[str] = set()
        whole = False
        for up in closures[name]:
            if up not in touched:
                continue
            if spec.partitions is None or manifest.assets[up].partitions != spec.partitions:
                whole = True
            else:
                texts |= {p for p in touched[up] if p is not None}
        if whole:
            states[name] = partition_states(session, manifest, name)
        elif texts:
            states[name] = partition_states(session, manifest, name, texts)
    return PartitionChanges(states, False, PartitionCursor(newest, seen, definitions))


def _per_key(
    steps: dict[str | None, Any], pdef: PartitionsDefinition | None
) -> dict[str | None, Any]:
    """Spread the steps of ranged runs (`FIRST...LAST`) over their keys; per key, the
    newest step wins."""
    from engine.authoring.backfill_policy import is_range, keys_of
    from engine.authoring.partitions import InvalidPartitionKey

    if pdef is None or not any(is_range(text) for text in steps if text):
        return steps
    out: dict[str | None, Any] = {}
    for text, step in steps.items():
        keys: list[str | None] = [text]
        if text is not None and is_range(text):
            # A range from an older definition, whose keys are gone, is shown nowhere.
            with contextlib.suppress(InvalidPartitionKey):
                keys = list(keys_of(pdef, text))
        for key in keys:
            if key not in out or _newer(step, out[key]):
                out[key] = step
    return out


def _newer(step: Any, than: Any) -> bool:
    if step is None or than is None:
        return than is None
    return (step.id or 0) >= (than.id or 0)
