"""The status of every partition of an asset: what the partition matrix and
`dagtop partitions` show.

missing       never materialized
materialized  its newest value is current
stale         materialized, but out of date: its code changed since, or an upstream it reads
              was materialized after it or is stale itself (`reason` says which)
failed        its newest attempt failed (an older value may still exist)
running       a run is materializing it now
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.history.lineage import Staleness
from engine.loading.manifest import Manifest
from engine.storage import repo

ACTIVE_STEP = ("queued", "running", "retrying")


@dataclass(frozen=True, slots=True)
class PartitionState:
    key: str | None
    status: str
    materialized_at: float | None
    run_id: str | None
    reason: str | None = None


def partition_states(session: Any, manifest: Manifest, asset: str) -> list[PartitionState]:
    """One state per partition key in order (one state with key None if unpartitioned)."""
    spec = manifest.assets[asset]
    pdef = spec.partitions_def
    keys: list[str | None] = list(pdef.keys()) if pdef is not None else [None]
    staleness = Staleness(session, manifest)
    staleness.preload([asset])
    mats = staleness.latest(asset)
    steps = _per_key(repo.partition_states(session, asset), pdef)
    out = []
    for key in keys:
        mat = mats.get(key)
        step_status, step_time = steps.get(key, (None, 0.0))
        reason = None
        if step_status in ACTIVE_STEP:
            status = "running"
        elif step_status == "failed" and (mat is None or step_time >= mat.created_at):
            status = "failed"
        elif mat is None:
            status = "missing"
        else:
            status, reason = "materialized", ", ".join(staleness.reasons(asset, key)) or None
            if reason:
                status = "stale"
        out.append(
            PartitionState(
                key=key,
                status=status,
                materialized_at=mat.created_at if mat else None,
                run_id=mat.run_id if mat else None,
                reason=reason,
            )
        )
    return out


def _per_key(
    steps: dict[str | None, tuple[str, float]], pdef: Any
) -> dict[str | None, tuple[str, float]]:
    """Spread the steps of ranged runs (`FIRST...LAST`) over their keys; per key, the
    newest step wins."""
    from engine.authoring.backfill_policy import is_range, keys_of
    from engine.authoring.partitions import InvalidPartitionKey

    if pdef is None or not any(is_range(text) for text in steps):
        return steps
    out: dict[str | None, tuple[str, float]] = {}
    for text, state in steps.items():
        try:
            keys: list[str | None] = list(keys_of(pdef, text)) if is_range(text) else [text]
        except InvalidPartitionKey:
            keys = [text]  # a range from an older definition: shown nowhere
        for key in keys:
            if key not in out or out[key][1] <= state[1]:
                out[key] = state
    return out
