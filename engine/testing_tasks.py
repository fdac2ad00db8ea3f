"""Unit-testing task pipelines without the orchestrator: `engine.testing.run_pipeline`.

    from engine.testing import load_module, run_pipeline

    flow = load_module("pipelines/ml_training_tasks.py")
    result = run_pipeline(flow, "training_tasks", params={"min_images": 5000})
    assert result.success
    assert result.skipped["train"] == "not chosen by validate"

The tasks run in this process, one after another, in an order their trigger rules allow, with
the executor's own rules (`executor/state.py`): trigger rules, what a branch did not choose or
a short-circuit skips, mapped tasks expanded into one call per element (`process[0]`, ...). Each
return value goes through pickle and back, as between two steps' processes. Shell tasks run with
/bin/sh. No database, no engine, no retries.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.authoring.context import build_context
from engine.status import StepStatus

if TYPE_CHECKING:
    from engine.authoring.tasks import Pipeline, TaskDef
    from engine.executor.state import RunState


@dataclass
class PipelineResult:
    """What `run_pipeline` ran.

    Attributes:
        values: Each step's return value (`process[0]` for a mapped task's instances).
        statuses: Each step's status, in the run's order.
        skipped: Steps skipped, and why ("not chosen by choose", "upstream a failed").
        failures: Steps whose task raised (or whose shell command failed).
        success: Whether the run succeeded, as an engine would judge it: no failed step, and
            no step skipped because of a failure.
        home: The home folder the run used (`context.home`).
    """

    values: dict[str, Any] = field(default_factory=dict)
    statuses: dict[str, StepStatus] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)
    success: bool = False
    home: Path = field(default_factory=Path)


class TaskFailed(Exception):
    """A task failed in a way the engine explains itself (a branch's or a mapping's value)."""


def find_pipeline(where: Pipeline | TaskDef | types.ModuleType, name: str | None) -> Pipeline:
    """The pipeline `where` is, a task of it belongs to, or a module defines (by `name`).

    Raises:
        ValueError: the module defines no such pipeline, or several and no name was given.
    """
    from engine.authoring.tasks import Pipeline, TaskDef

    if isinstance(where, Pipeline):
        return where
    if isinstance(where, TaskDef):
        return where.pipeline
    found = {
        v.pipeline.name: v.pipeline for v in vars(where).values() if isinstance(v, TaskDef)
    } | {v.name: v for v in vars(where).values() if isinstance(v, Pipeline)}
    if name is None and len(found) == 1:
        return next(iter(found.values()))
    if name is None or name not in found:
        raise ValueError(f"name one of the pipelines {sorted(found)}, not {name!r}")
    return found[name]


def run_pipeline(
    pipeline: Pipeline | TaskDef | types.ModuleType,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    home: str | Path | None = None,
    raise_on_error: bool = False,
) -> PipelineResult:
    """Run a task pipeline's tasks in this process, with the engine's rules.

    Args:
        pipeline: The `Pipeline`, one of its tasks, or a module (`load_module`) that
            defines it.
        name: Which of the module's pipelines, when it defines several.
        params: The run's parameters (`context.params`).
        home: The home folder (`context.home`); a new temporary folder by default.
        raise_on_error: Raise a task's exception instead of recording it in `failures`.
    """
    from engine.executor.state import MAP, RunState, StepState, Updates
    from engine.loading.manifest import split_key
    from engine.status import RunStatus

    pipeline = find_pipeline(pipeline, name)
    home_dir = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="dagtop-test-"))
    tasks = pipeline.tasks
    run = RunState(
        id="test", pipeline=pipeline.name, partition=None, schedule=None,
        steps={
            t.id: StepState(0, t.id, list(t.upstream), StepStatus.QUEUED, 0, 1, None,
                            kind=MAP if t.expand_over else ("python" if t.fn else "shell"))
            for t in tasks.values()
        },
        rules={t.id: t.trigger_rule for t in tasks.values()},
        maps={t.id: t.expand_over[1] for t in tasks.values() if t.expand_over},
    )  # fmt: skip
    result = PipelineResult(home=home_dir)

    def settle(updates: Updates) -> None:
        run.apply(updates)
        for k, how in updates.items():
            if how.status == StepStatus.SKIPPED:
                result.skipped[k] = how.reason or ""

    while not run.finished():
        settle(run.unrunnable())
        for key, source in run.expansions():
            count = len(result.values[source])
            run.expanded(key, [(0, i) for i in range(count)], kind="python")
        ready = [st for st in run.steps.values() if run.ready(st, 0.0)]
        if not ready:
            break  # nothing can move: what is left stays queued
        for st in ready:
            task = tasks[split_key(st.key)[0]]
            try:
                value = _call(task, st.key, run, result, params or {}, home_dir)
            except Exception as exc:
                if raise_on_error:
                    raise
                st.status = StepStatus.FAILED
                result.failures[st.key] = exc
            else:
                st.status = StepStatus.SUCCESS
                result.values[st.key] = value
                settle(run.chosen_skips(st.key, _decided(task, value)))
    result.statuses = {st.key: st.status for st in run.steps.values()}
    result.success = run.finished() and run.final_status() == RunStatus.SUCCESS
    return result


def _decided(task: TaskDef, value: Any) -> list[str] | bool | None:
    """What the value decides for the rules, as the worker reports it (`_task_result`)."""
    if task.short_circuit:
        return bool(value)
    if task.branch:
        return [] if value is None else [value] if isinstance(value, str) else list(value)
    return None


def tasks_of(task: TaskDef) -> list[TaskDef]:
    return list(task.pipeline.tasks.values())


def _call(
    task: TaskDef,
    key: str,
    run: RunState,
    result: PipelineResult,
    params: dict[str, Any],
    home: Path,
) -> Any:
    from engine.loading.manifest import split_key

    if task.fn is None:
        done = subprocess.run(
            ["/bin/sh", "-c", task.command or ""], cwd=task.cwd, check=False,
            env={**os.environ, **(task.env or {}), "DAGTOP_TASK": key},
        )  # fmt: skip
        if done.returncode != 0:
            raise TaskFailed(f"command exited with code {done.returncode}")
        return None
    kwargs: dict[str, Any] = {}
    for name in task.inputs:
        up = task.pipeline.tasks.get(name)
        if up is not None and up.expand_over is not None:
            found = sorted(
                (i, k)
                for k in result.values
                if (s := split_key(k))[0] == name and (i := s[1]) is not None
            )
            kwargs[name] = [result.values[k] for _i, k in found]
        elif name in result.values:
            kwargs[name] = result.values[name]
        else:
            raise TaskFailed(f"upstream task {name!r} returned no value in this run")
    if task.expand_over is not None:
        param, source = task.expand_over
        index = split_key(key)[1]
        assert index is not None
        kwargs[param] = result.values[source][index]
    ctx = build_context(params=params, key=key, home=home, run_id="test")
    value = task.fn(ctx, **kwargs) if task.takes_context else task.fn(**kwargs)
    value = pickle.loads(pickle.dumps(value))  # as between two steps' processes
    what = f"task {task.id!r}"
    mapped_over = any(t.expand_over and t.expand_over[1] == task.id for t in tasks_of(task))
    if task.branch:
        chosen = _decided(task, value)
        downstream = [t.id for t in tasks_of(task) if task.id in t.upstream]
        unknown = sorted(set(chosen if isinstance(chosen, list) else []) - set(downstream))
        if unknown:
            raise TaskFailed(f"{what} chose {unknown[0]!r}, which is not a direct downstream task")
    elif mapped_over and not isinstance(value, list | tuple):
        raise TaskFailed(f"{what} is mapped over: it must return a list")
    return value
