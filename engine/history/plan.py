"""Planning: a run request becomes a run row and its step rows, before anything executes."""

from __future__ import annotations

import graphlib
import json
import shlex
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError, PartitionError, SelectionError
from engine.units import control_character

if TYPE_CHECKING:
    from sqlmodel import Session

    from engine.authoring.partitions import PartitionsDefinition
    from engine.loading.manifest import Manifest
    from engine.protocol.commands import RunCommand
    from engine.storage.models import Run, Step


@dataclass(frozen=True)
class RunRequest:
    """What to run. Exactly one of `selection` (assets) or `pipeline` (tasks) is set."""

    selection: tuple[str, ...] = ()
    pipeline: str | None = None
    partition: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    trigger: str = "manual"
    trigger_ref: str | None = None
    backfill_id: str | None = None
    reason: str | None = None  # why automation asked for it, shown with the run

    def to_command(self) -> RunCommand:
        """The request as the `run` command carries it to an engine (engine.protocol)."""
        return {
            "selection": list(self.selection),
            "pipeline": self.pipeline,
            "partition": self.partition,
            "params": self.params,
            "trigger": self.trigger,
        }

    @classmethod
    def from_command(cls, command: RunCommand) -> RunRequest:
        return cls(
            selection=tuple(command["selection"] or ()),
            pipeline=command["pipeline"],
            partition=command["partition"],
            params=dict(command["params"] or {}),
            trigger=command["trigger"] or "manual",
        )


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _toposort(nodes: dict[str, list[str]]) -> list[str]:
    order = list(graphlib.TopologicalSorter(nodes).static_order())
    return [n for n in order if n in nodes]


def validate_partition(
    manifest: Manifest,
    names: list[str],
    partition: str | None,
    pdefs: dict[str, PartitionsDefinition] | None = None,
) -> None:
    """Check the partition key against every partitioned asset in `names`.

    `pdefs` keeps each asset's partitions definition between calls (a backfill checks
    thousands of keys against the same few assets).

    Raises:
        PartitionError: a key is missing, malformed, or out of range.
    """
    partitioned = [n for n in names if manifest.assets[n].partitions is not None]
    if partition is None:
        if partitioned:
            example = manifest.assets[partitioned[0]].partitions_def
            keys = example.keys() if example else []
            # Quoted: a MultiPartitions key has a "|", which a shell reads as a pipe.
            hint = f" (e.g. --partition {shlex.quote(keys[-1])})" if keys else ""
            raise PartitionError(
                f"asset {partitioned[0]!r} is partitioned: pass --partition KEY{hint}"
            )
        return
    if not partitioned:
        raise PartitionError(
            f"--partition {partition!r} given, but none of {', '.join(names)} is partitioned"
        )
    from engine.authoring.backfill_policy import is_range, keys_of
    from engine.authoring.partitions import InvalidPartitionKey

    for name in partitioned:
        spec = manifest.assets[name]
        pdef = pdefs.get(name) if pdefs is not None else None
        if pdef is None:
            pdef = spec.partitions_def
            assert pdef is not None
            if pdefs is not None:
                pdefs[name] = pdef
        try:
            if spec.ranged:
                keys_of(pdef, partition)  # one key, or FIRST...LAST
            else:
                pdef.validate_key(partition)
        except InvalidPartitionKey as exc:
            if is_range(partition) and not spec.ranged:
                raise PartitionError(
                    f"asset {name!r} materializes one partition per run: a range needs "
                    "@asset(backfill_policy=BackfillPolicy.single_run()), or use "
                    "`dagtop backfill`"
                ) from None
            raise PartitionError(f"asset {name!r}: {exc}") from None


def check_params(params: dict[str, Any]) -> None:
    """Refuse a parameter name with a control character: names are keys, printed inside one
    line of text (`dagtop lineage`, the UI). Values are data and may hold anything; they are
    escaped where they are printed.

    Raises:
        EngineError: a name contains one.
    """
    for name in params:
        found = control_character(name) if isinstance(name, str) else None
        if found is not None:
            raise EngineError(
                f"parameter name {name!r} contains a control character ({found})",
                title="Bad parameter",
            )


# Params the engine itself gives a run of each trigger: never an unknown config field.
ENGINE_PARAMS = {"schedule": frozenset({"scheduled_for"}), "sensor": frozenset({"path"})}


def check_config(
    manifest: Manifest, names: Sequence[str], params: dict[str, Any], trigger: str = "manual"
) -> dict[str, Any]:
    """Check the params against the typed config of each asset in `names` (its schema in the
    manifest: no pipeline module is imported); the params with those values as validated
    (`"0.5"` for a float field is 0.5). Unchanged when no asset has a typed config.

    Raises:
        ConfigParamError: a value does not validate, a required field is missing, or a param
            is a field of no typed config (unless a model allows extras).
    """
    typed = [(n, c) for n in names if (c := manifest.assets[n].config) is not None]
    if not typed:
        return params
    from engine.authoring.typed_config import check_run_params

    return check_run_params(typed, params, ENGINE_PARAMS.get(trigger, frozenset()))


def plan(
    manifest: Manifest, request: RunRequest, now: float | None = None
) -> tuple[Run, list[Step]]:
    """The run and steps for `request`, validated against the manifest (nothing written).

    Raises:
        SelectionError: the selection or pipeline names nothing.
        PartitionError: the partition key does not fit the selected assets.
        ConfigParamError: the params do not validate against a selected asset's typed config.
        EngineError: a parameter name contains a control character.
    """
    from engine.storage.models import Run, Step  # storage costs ~0.3 s to import: only here

    check_params(request.params)
    params = request.params
    now = time.time() if now is None else now
    run_id = new_run_id()
    if request.pipeline is not None:
        pipeline = manifest.pipelines.get(request.pipeline)
        if pipeline is None:
            from engine.errors import suggest

            hint = suggest(request.pipeline, manifest.pipelines)
            if request.pipeline in manifest.assets:
                hint = f" ({request.pipeline!r} is an asset: use `dagtop materialize`)"
            from engine.loading.selection import broken_cause

            cause = broken_cause(manifest, request.pipeline)
            raise SelectionError(cause or f"unknown pipeline {request.pipeline!r}{hint}")
        if request.partition is not None:
            raise PartitionError("task pipelines are not partitioned: drop --partition")
        graph = {t.id: list(t.upstream) for t in pipeline.tasks.values()}
        steps = [
            Step(
                run_id=run_id,
                key=key,
                # A mapped task's step stands for its instances until its list is known, when
                # the executor replaces it by one step per element (`process[0]`, ...).
                kind="map" if pipeline.tasks[key].expand is not None else pipeline.tasks[key].kind,
                position=i,
                upstream=json.dumps(graph[key]),
                max_attempts=pipeline.tasks[key].retries + 1,
            )
            for i, key in enumerate(_toposort(graph))
        ]
        kind, target, selection = "pipeline", pipeline.name, json.dumps(pipeline.name)
    else:
        from engine.loading.selection import resolve

        names = resolve(manifest, request.selection)
        validate_partition(manifest, names, request.partition)
        params = check_config(manifest, names, params, request.trigger)
        chosen = set(names)
        graph = {n: [u for u in manifest.assets[n].upstream if u in chosen] for n in names}
        steps = [
            Step(
                run_id=run_id,
                key=key,
                kind="asset",
                partition=request.partition,
                position=i,
                upstream=json.dumps(graph[key]),
                max_attempts=manifest.assets[key].retries + 1,
            )
            for i, key in enumerate(_toposort(graph))
        ]
        kind, target, selection = "assets", ", ".join(request.selection), json.dumps(names)
    run = Run(
        id=run_id,
        kind=kind,
        target=target,
        selection=selection,
        partition=request.partition,
        params=json.dumps(params),
        trigger=request.trigger,
        trigger_ref=request.trigger_ref,
        backfill_id=request.backfill_id,
        reason=request.reason,
        created_at=now,
        updated_at=now,
    )
    return run, steps


def record(
    session: Session, manifest: Manifest, request: RunRequest, now: float | None = None
) -> str:
    """Plan `request` and add its run and steps to `session` (the caller commits); returns the id.

    Callers that must record something else atomically with the run (a schedule tick, a
    sensor's cursor row) do it in the same session.
    """
    from engine.history.dynamic import bind
    from engine.storage import repo

    run, steps = plan(bind(session, manifest), request, now)
    repo.add_run(session, run, steps)
    return run.id


def record_many(
    session: Session,
    manifest: Manifest,
    request: RunRequest,
    partitions: Sequence[str],
    now: float,
) -> list[str]:
    """`record` of `request` once per partition (a backfill's runs, created a microsecond apart
    so the queue takes them in order), planned once and inserted in bulk: a year of hourly keys
    is 8,760 runs, and planning and flushing them one by one took seconds. Returns the ids.

    Raises:
        SelectionError, PartitionError: a partition is invalid (nothing is added).
    """
    from dataclasses import replace

    from engine.history.dynamic import bind
    from engine.storage import repo

    if not partitions:
        return []
    manifest = bind(session, manifest)
    run, steps = plan(manifest, replace(request, partition=partitions[0]), now)
    names = json.loads(run.selection)
    pdefs: dict[str, PartitionsDefinition] = {}
    for partition in partitions[1:]:
        validate_partition(manifest, names, partition, pdefs)
    run_row = run.model_dump()
    step_rows = [step.model_dump(exclude={"id", "run_id"}) for step in steps]
    runs, all_steps = [], []
    for i, partition in enumerate(partitions):
        created = now + i * 1e-6
        run_id = run.id if i == 0 else new_run_id()
        runs.append({**run_row, "id": run_id, "partition": partition, "created_at": created,
                     "updated_at": created})  # fmt: skip
        all_steps += [{**row, "run_id": run_id, "partition": partition} for row in step_rows]
    repo.insert_runs(session, runs, all_steps)
    return [row["id"] for row in runs]


def run_keys(manifest: Manifest, selection: Sequence[str], keys: Sequence[str]) -> list[list[str]]:
    """The keys of each run of the backfill: one per run, or ranges of consecutive keys in
    order when the partitioned assets selected have a BackfillPolicy.

    Raises:
        SelectionError, PartitionError: the selection is invalid, or mixes the two kinds.
    """
    from engine.authoring.backfill_policy import chunks
    from engine.loading.selection import resolve

    specs = [manifest.assets[n] for n in resolve(manifest, selection)]
    partitioned = [spec for spec in specs if spec.partitions is not None]
    ranged = [spec for spec in partitioned if spec.ranged]
    if not ranged:
        return [[key] for key in keys]
    if len(ranged) < len(partitioned):
        single = next(spec for spec in partitioned if not spec.ranged)
        raise PartitionError(
            f"asset {ranged[0].name!r} backfills ranges (its BackfillPolicy) and "
            f"{single.name!r} one partition per run: backfill them separately"
        )
    pdef = ranged[0].partitions_def
    assert pdef is not None
    order = pdef.keys()
    known = set(order)
    unknown = [key for key in keys if key not in known]
    if unknown:
        from engine.authoring.partitions import InvalidPartitionKey

        try:
            pdef.validate_key(unknown[0])  # says why in one line
        except InvalidPartitionKey as exc:
            raise PartitionError(str(exc)) from None
        raise PartitionError(f"partition {unknown[0]!r} does not exist")
    limits = [spec.partitions_per_run for spec in ranged if spec.partitions_per_run]
    return chunks(keys, order, min(limits) if limits else None)
