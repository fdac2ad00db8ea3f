"""Preparing one step attempt: the worker's spec, its log file, its command and environment.

Everything here runs in the engine process and only prepares (`spawn` starts the process); the
user's code runs in the child. Inputs are resolved to concrete value files now, so the worker
never touches the database and the materializations it consumed are known (for lineage).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import Session

from engine.authoring.backfill_policy import keys_of
from engine.authoring.multi_partitions import link
from engine.authoring.partitions import safe_key
from engine.executor.spawn import Launch, worker_argv
from engine.loading.config import Paths
from engine.loading.manifest import AssetSpec, Manifest, PipelineSpec, TaskSpec, split_key
from engine.processes import child_environ
from engine.status import StepStatus
from engine.storage import repo
from engine.storage.models import Run

if TYPE_CHECKING:
    from engine.protocol.worker import (
        AssetStepSpec,
        Input,
        PartitionsInput,
        SingleInput,
        TaskStepSpec,
    )


class InputMissing(Exception):
    """An upstream value the step needs is not stored."""


def _gone(path: str | None) -> bool:
    """A value recorded but no longer on disk (deleted by hand, say). A URL is taken on trust:
    the worker says so clearly if it cannot read it."""
    return bool(path) and "://" not in str(path) and not os.path.exists(str(path))


def _value_gone(name: str, key: str | None, path: str, spec: AssetSpec) -> InputMissing:
    where = f" partition {key}" if key is not None else ""
    return InputMissing(
        f"upstream {name!r}{where} has no stored value: its file {path} is gone; "
        f"materialize it again (or select +{spec.name})"
    )


def _single(mat_path: str, io: str, up: AssetSpec | None = None) -> SingleInput:
    src: SingleInput = {"mode": "single", "path": mat_path, "io": io}
    if up is not None:
        # The upstream's file and name let the worker find a custom IO manager object.
        src["file"], src["asset"] = up.file, up.name
    return src


def asset_inputs(
    session: Session,
    manifest: Manifest,
    spec: AssetSpec,
    partition: str | None,
    keys: list[str] | None = None,
) -> tuple[dict[str, Input], list[int]]:
    """Value files for each upstream input of an asset, and the materializations they are.

    `keys` is the range a ranged asset is called with: an upstream partitioned alike comes
    as {key: value} over exactly those keys."""
    inputs: dict[str, Input] = {}
    ids: list[int] = []
    for name in (*spec.inputs, *spec.optional_inputs):
        up = manifest.assets.get(name)
        if up is None:
            if name in spec.optional_inputs:
                continue
            raise InputMissing(f"upstream asset {name!r} is no longer defined")
        same_partitions = up.partitions is not None and up.partitions == spec.partitions
        by_dimension = None if partition is None else link(up.partitions, spec.partitions)
        picked = None if by_dimension is None else by_dimension.upstream_key(partition or "")
        if keys is not None and same_partitions:
            mats = repo.latest_per_partition(session, name)
            items = {k: path for k in keys if k in mats and (path := mats[k].value_path)}
            missing = [k for k in keys if k not in items]
            if missing and name not in spec.optional_inputs:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise InputMissing(
                    f"upstream {name!r} has no stored value for partition "
                    f"{', '.join(missing[:3])}{more}: materialize it first (or select +{spec.name})"
                )
            gone = next((k for k, path in items.items() if _gone(path)), None)
            if gone is not None and name not in spec.optional_inputs:
                raise _value_gone(name, gone, items[gone], spec)
            if not missing and gone is None:
                inputs[name] = _partitions(items, up)
                ids.extend(mats[k].id or 0 for k in keys)
        elif up.partitions is None or (same_partitions and partition is not None) or picked:
            # A MultiPartitions asset reads the upstream key that is its dimension's part.
            key = picked or (partition if up.partitions is not None else None)
            mat = repo.latest_materialization(session, name, key)
            if mat is None or mat.value_path is None:
                if name in spec.optional_inputs:
                    continue
                where = f" for partition {key}" if key else ""
                raise InputMissing(
                    f"upstream {name!r} has no stored value{where}: materialize it first "
                    f"(or select +{spec.name})"
                )
            if _gone(mat.value_path):
                if name in spec.optional_inputs:
                    continue
                raise _value_gone(name, key, mat.value_path, spec)
            inputs[name] = _single(mat.value_path, up.io, up)
            ids.append(mat.id or 0)
        else:
            # An unpartitioned (or differently partitioned) asset sees every materialized
            # partition of its upstream as {key: value}.
            # A partition whose value file is gone is missing, as if never materialized.
            mats = repo.latest_per_partition(session, name)
            found = {k: m for k, m in mats.items() if k is not None and not _gone(m.value_path)}
            if by_dimension is not None:
                # Partitioned by one dimension of its MultiPartitions upstream: the keys that
                # have this partition's key in that dimension.
                found = {k: m for k, m in found.items() if by_dimension.reads(k, partition)}
            items = {k: path for k, m in found.items() if (path := m.value_path)}
            inputs[name] = _partitions(items, up)
            ids.extend(m.id or 0 for m in found.values())
    return inputs, ids


def _partitions(items: dict[str, str], up: AssetSpec) -> PartitionsInput:
    src: PartitionsInput = {
        "mode": "partitions", "items": items, "io": up.io, "file": up.file, "asset": up.name,
    }  # fmt: skip
    return src


def task_inputs(
    session: Session,
    run_id: str,
    pipeline: PipelineSpec,
    task: TaskSpec,
    index: int | None = None,
) -> dict[str, Input]:
    """Value files for each input of a task (instance `index` of a mapped one): an upstream's
    return value, the element `index` of the list a mapped task is expanded over, or the
    values of a mapped upstream's instances as a list, in order."""
    outputs: dict[str, str] = {}
    for att in repo.attempts_of(session, run_id):  # in order: the newest attempt wins
        if att.output_path:
            outputs[att.key] = att.output_path

    def value_of(name: str) -> str:
        if name not in outputs:
            up = repo.step(session, run_id, name)
            if up is not None and up.status in (StepStatus.SKIPPED, StepStatus.FAILED):
                # Its trigger rule let this task run without it: it has no value to pass.
                why = f" ({up.error})" if up.error else ""
                raise InputMissing(
                    f"upstream task {name!r} {up.status}{why}: it returned no value to pass "
                    f"as parameter {name!r}; a task whose trigger rule lets it run without an "
                    "upstream should not take that upstream's value"
                )
            raise InputMissing(f"upstream task {name!r} has no stored return value in this run")
        return outputs[name]

    inputs: dict[str, Input] = {}
    for name in task.inputs:
        up = pipeline.tasks.get(name)
        if up is not None and up.expand is not None:
            # Every instance that exists: all ran, or the trigger rule lets this run without.
            keys = sorted(
                (i, key)
                for key in outputs
                if (split := split_key(key))[0] == name and (i := split[1]) is not None
            )
            inputs[name] = {"mode": "list", "paths": [outputs[k] for _i, k in keys], "io": "pickle"}
        else:
            inputs[name] = _single(value_of(name), "pickle")
    if task.expand is not None:
        param, source = task.expand
        if index is None:
            raise InputMissing(f"task {task.id!r} is mapped, but this step is no instance of it")
        inputs[param] = {"mode": "item", "path": value_of(source), "io": "pickle", "index": index}
    return inputs


SHARED = "@shared"
"""`context.shared_dir`, under the values folder (a name no asset can have: the value sweep
leaves it alone)."""


def _step_env(
    run_id: str, key: str, attempt: int, partition: str | None, home: Path
) -> dict[str, str]:
    env = child_environ(os.environ)
    # NUL cannot travel in an environment variable; such a key is still in the spec intact.
    partition = (partition or "").replace("\x00", "\\0")
    env.update(
        PYTHONUNBUFFERED="1",
        DAGTOP_RUN_ID=run_id,
        DAGTOP_TASK=key,
        DAGTOP_ATTEMPT=str(attempt),
        DAGTOP_PARTITION=partition,
        DAGTOP_HOME=str(home),
    )
    return env


def log_path_for(paths: Paths, run_id: str, key: str, attempt: int) -> Path:
    return paths.logs / run_id / f"{safe_key(key)}.{attempt}.log"


def prepare(
    session: Session,
    manifest: Manifest,
    paths: Paths,
    run: Run,
    key: str,
    attempt: int,
    values: str | None = None,
) -> Launch:
    """Build the launch of attempt `attempt` of step `key` of `run`.

    `values` is where values are stored (the config's `values_dir`: a folder every executor
    worker can reach, or an fsspec URL); None keeps them in the home folder.

    Raises:
        InputMissing: an upstream value is not stored.
        KeyError: the step's definition is gone from the manifest.
    """
    params = json.loads(run.params or "{}")
    log_path = log_path_for(paths, run.id, key, attempt)
    spec_dir = paths.runs / run.id
    worker = worker_argv()
    if run.kind == "assets":
        aspec = manifest.assets[key]
        partition = run.partition if aspec.partitions is not None else None
        keys = None
        if aspec.ranged and partition is not None and aspec.partitions_def is not None:
            keys = keys_of(aspec.partitions_def, partition)
        inputs, ids = asset_inputs(session, manifest, aspec, partition, keys)
        base = f"{values or paths.values}/{key}"
        part_dir = f"{base}/{safe_key(partition) if partition else '_'}"
        spec: AssetStepSpec = {
            "kind": "asset",
            "key": key,
            "root": manifest.root,
            "file": aspec.file,
            "run_id": run.id,
            "attempt": attempt,
            "partition": partition,
            "params": params,
            "home": str(paths.home),
            "inputs": inputs,
            "output_stem": f"{part_dir}/{run.id}.{attempt}",
            "shared_dir": f"{values or paths.values}/{SHARED}",
            "checks": [
                {"file": c.file, "name": c.name, "blocking": c.blocking}
                for c in manifest.checks.get(key, [])
            ],
        }
        if aspec.resources:
            spec["resources"] = {
                name: {"file": res.file, "config": res.config}
                for name in aspec.resources
                if (res := manifest.resources.get(name)) is not None
            }
        if aspec.config is not None:
            spec["config_param"] = aspec.config["param"]
        if keys is not None:
            # A ranged asset: the keys it is called with, and where each key's value goes.
            spec["partitions"] = keys
            spec["output_stems"] = {k: f"{base}/{safe_key(k)}/{run.id}.{attempt}" for k in keys}
        return Launch(
            argv=worker,
            cwd=str(paths.project),
            env=_step_env(run.id, key, attempt, partition, paths.home),
            log_path=log_path,
            spec=spec,
            timeout=aspec.timeout,
            memory_limit=aspec.memory_limit,
            pool=aspec.pool,
            partition=partition,
            code_version=aspec.code_version,
            input_ids=ids,
        )
    pipeline = manifest.pipelines[json.loads(run.selection)]
    task_id, index = split_key(key)
    task = pipeline.tasks[task_id]
    env = _step_env(run.id, key, attempt, None, paths.home)
    if task.kind == "shell":
        env.update(task.env or {})
        return Launch(
            argv=["/bin/sh", "-c", task.command or ""],
            cwd=task.cwd or str(paths.project),
            env=env,
            log_path=log_path,
            spec=None,
            timeout=task.timeout,
            memory_limit=task.memory_limit,
            pool=task.pool,
        )
    task_spec: TaskStepSpec = {
        "kind": "task",
        "key": key,
        "pipeline": pipeline.name,
        "root": manifest.root,
        "file": pipeline.file,
        "run_id": run.id,
        "attempt": attempt,
        "partition": None,
        "params": params,
        "home": str(paths.home),
        "inputs": task_inputs(session, run.id, pipeline, task, index),
        "shared_dir": f"{values or paths.values}/{SHARED}",
        # "@tasks" cannot be an asset's name, so the value sweep can tell these apart.
        "output_stem": (
            f"{values}/@tasks/{run.id}/{safe_key(key)}.{attempt}"
            if values
            else str(spec_dir / "values" / f"{safe_key(key)}.{attempt}")
        ),
    }
    if task.branch:
        task_spec["result"] = "branch"
        task_spec["downstream"] = task.downstream_of(pipeline.tasks)
    elif task.short_circuit:
        task_spec["result"] = "short_circuit"
    elif any(t.expand is not None and t.expand[1] == task.id for t in pipeline.tasks.values()):
        task_spec["result"] = "count"
    return Launch(
        argv=worker,
        cwd=str(paths.project),
        env=env,
        log_path=log_path,
        spec=task_spec,
        timeout=task.timeout,
        memory_limit=task.memory_limit,
        pool=task.pool,
    )
