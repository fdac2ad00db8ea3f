"""The authoring API's Airflow-style task pipelines: `Pipeline`, `@task`, `shell`, `>>` and
`<<`, trigger rules, `expand`, branches and short-circuits. Each definition registers itself
as `engine.authoring.definitions` describes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, overload

from engine.authoring.definitions import (
    _caller_location,
    _check_memory,
    _check_retries,
    _check_timeout,
    _fn_location,
    _inputs_of,
    _registry,
    hooks_of,
)
from engine.errors import DefinitionError

_pipeline_stack: list[Pipeline] = []


_Linked = TypeVar("_Linked", bound="TaskDef | Sequence[TaskDef]")


class _Chainable:
    """`>>` and `<<` between tasks and lists of tasks, as in Airflow: each returns its right
    side, so that `a >> b >> [c, d]` links a to b and b to c and d."""

    def _targets(self) -> list[TaskDef]:
        raise NotImplementedError

    def __rshift__(self, other: _Linked) -> _Linked:
        _link(self._targets(), _as_tasks(other))
        return other

    def __rrshift__(self, other: Sequence[TaskDef]) -> Self:
        _link(_as_tasks(other), self._targets())
        return self

    def __lshift__(self, other: _Linked) -> _Linked:
        _link(_as_tasks(other), self._targets())
        return other

    def __rlshift__(self, other: Sequence[TaskDef]) -> Self:
        _link(self._targets(), _as_tasks(other))
        return self


def _as_tasks(value: Any) -> list[TaskDef]:
    if isinstance(value, TaskDef):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, TaskDef) for v in value):
        return list(value)
    raise DefinitionError(f">> and << link tasks or lists of tasks, not {value!r}")


def _link(upstream: list[TaskDef], downstream: list[TaskDef]) -> None:
    for down in downstream:
        for up in upstream:
            if up.pipeline is not down.pipeline:
                raise DefinitionError(
                    f"cannot link task {up.id!r} to {down.id!r}: they are in different pipelines"
                )
            if up.id not in down.upstream:
                down.upstream.append(up.id)


@dataclass(eq=False)
class TaskDef(_Chainable):
    """One task of a `Pipeline`: a Python function or a shell command."""

    id: str
    pipeline: Pipeline
    fn: Callable[..., Any] | None = None
    command: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    takes_context: bool = False
    inputs: tuple[str, ...] = ()
    upstream: list[str] = field(default_factory=list)
    retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    memory_limit: int | None = None
    pool: str | None = None
    file: str = ""
    line: int = 0
    trigger_rule: str = "all_success"
    branch: bool = False
    short_circuit: bool = False
    expand_over: tuple[str, str] | None = None  # (parameter, upstream task id)

    def _targets(self) -> list[TaskDef]:
        return [self]

    def expand(self, **mapping: TaskDef) -> TaskDef:
        """Run this task once per element of an upstream task's return value (a list), as
        Airflow's dynamic task mapping does: `process.expand(item=list_files)` makes one step
        per file, `process[0]`, `process[1]`, ..., each with its own process, log, retries and
        status, created when `list_files` has returned. `item` receives the element; a task
        taking `process` as a parameter receives the instances' return values as a list, in
        order (`[]` when the list was empty). Returns the task.

        Raises:
            DefinitionError: not exactly one parameter, a parameter the function does not
                take, or a value that is not a task of the same pipeline.
        """
        what = f"task {self.id!r}"
        if self.fn is None:
            raise DefinitionError(f"{what}: a shell task cannot be expanded")
        if self.expand_over is not None:
            raise DefinitionError(f"{what}: expand() was already called")
        if len(mapping) != 1:
            raise DefinitionError(
                f"{what}: expand() takes exactly one parameter=upstream_task, got {len(mapping)}"
            )
        ((param, source),) = mapping.items()
        if param not in self.inputs:
            raise DefinitionError(
                f"{what}: expand({param}=...) names no required parameter of the function"
            )
        if not isinstance(source, TaskDef):
            raise DefinitionError(
                f"{what}: expand({param}=...) takes a task, not {type(source).__name__} "
                "(a literal list needs no mapping task: return it from one)"
            )
        if source.pipeline is not self.pipeline:
            raise DefinitionError(f"{what}: expand() over task {source.id!r} of another pipeline")
        if source is self:
            raise DefinitionError(f"{what}: a task cannot be expanded over itself")
        if source.fn is None:
            raise DefinitionError(
                f"{what}: expand() over shell task {source.id!r}, which returns no value"
            )
        if self.branch or self.short_circuit:
            raise DefinitionError(f"{what}: a mapped task cannot be a branch or a short-circuit")
        self.inputs = tuple(n for n in self.inputs if n != param)
        if param in self.upstream and param not in self.pipeline.tasks:
            self.upstream.remove(param)  # a parameter that names no task was not an edge
        if source.id not in self.upstream:
            self.upstream.append(source.id)
        self.expand_over = (param, source.id)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise TypeError(f"shell task {self.id!r} is not callable")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.pipeline.name}.{self.id}>"


class Pipeline:
    """An Airflow-style DAG of tasks, built inside a `with` block.

    Args:
        name: The pipeline's name (`dagtop run NAME`).
        schedule: A cron string or `@daily`-style alias; makes a schedule named after it.
        start: The first moment the schedule applies (ISO date or datetime); catchup starts here.
        catchup: Run every tick missed since `start` or the last run, not only the latest.
            Without it a new schedule begins with its next tick: a first start runs nothing.
        retries: Default extra attempts of each task.
        retry_delay: Default seconds before a task's first retry.
        tags: Free-form labels.
        description: Shown in `dagtop list` and the UI.
        on_failure, on_retry, on_success: Hooks for every task (see `asset`).
    """

    def __init__(
        self,
        name: str,
        schedule: str | None = None,
        start: str | None = None,
        catchup: bool = False,
        retries: int = 0,
        retry_delay: float = 1.0,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        on_failure: Any = None,
        on_retry: Any = None,
        on_success: Any = None,
    ) -> None:
        what = f"pipeline {name!r}"
        if not isinstance(name, str) or not name.isidentifier():
            raise DefinitionError(f"{what}: a name must be a Python identifier")
        _check_retries(what, retries, retry_delay)
        self.name = name
        self.schedule = schedule
        self.start = None if start is None else str(start)
        self.catchup = bool(catchup)
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.tags = dict(tags or {})
        self.description = description
        self.tasks: dict[str, TaskDef] = {}
        self.hooks = hooks_of(what, on_failure=on_failure, on_retry=on_retry, on_success=on_success)
        self.file, self.line = _caller_location()

    def __enter__(self) -> Pipeline:
        _pipeline_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _pipeline_stack.remove(self)
        if exc[0] is None:
            _registry.add(self)
            if self.schedule is not None:
                from engine.authoring.schedules import ScheduleDef  # it imports this module

                _registry.add(
                    ScheduleDef(
                        name=self.name,
                        cron=self.schedule,
                        target=self,
                        catchup=self.catchup,
                        start=self.start,
                        file=self.file,
                        line=self.line,
                    )
                )

    def add(self, t: TaskDef) -> TaskDef:
        if t.id in self.tasks:
            raise DefinitionError(f"pipeline {self.name!r}: two tasks with id {t.id!r}")
        self.tasks[t.id] = t
        return t

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"


def _current_pipeline(what: str) -> Pipeline:
    if not _pipeline_stack:
        raise DefinitionError(f"{what} must be created inside a `with Pipeline(...):` block")
    return _pipeline_stack[-1]


@overload
def task(
    fn: Callable[..., Any],
    /,
    *,
    id: str | None = None,  # noqa: A002
    retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    memory_limit: int | str | None = None,
    pool: str | None = None,
    trigger_rule: str = "all_success",
    branch: bool = False,
    short_circuit: bool = False,
) -> TaskDef: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    id: str | None = None,  # noqa: A002
    retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    memory_limit: int | str | None = None,
    pool: str | None = None,
    trigger_rule: str = "all_success",
    branch: bool = False,
    short_circuit: bool = False,
) -> Callable[[Callable[..., Any]], TaskDef]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    id: str | None = None,  # noqa: A002 - Airflow users know it as task_id/id
    retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    memory_limit: int | str | None = None,
    pool: str | None = None,
    trigger_rule: str = "all_success",
    branch: bool = False,
    short_circuit: bool = False,
) -> TaskDef | Callable[[Callable[..., Any]], TaskDef]:
    """A Python task in the enclosing `Pipeline`: `task(fn, id="x")` or `@task`.

    The function may take `context` first and parameters named after upstream task ids, which
    receive those tasks' return values (and make them upstream if `>>` did not).

    Args:
        trigger_rule: When the task runs, given its direct upstream tasks, as Airflow defines
            it: "all_success" (the default), "all_done", "one_success", "one_failed",
            "none_failed" or "none_failed_min_one_success".
        branch: The task returns the id (or a list of ids, or None) of the direct downstream
            tasks to run; the others are skipped.
        short_circuit: A falsy return value skips every task downstream, whatever its
            trigger rule (Airflow's `ignore_downstream_trigger_rules=True`).
    """

    def wrap(func: Callable[..., Any]) -> TaskDef:
        task_id = id or func.__name__
        what = f"task {task_id!r}"
        pipeline = _current_pipeline(what)
        _check_retries(
            what, 0 if retries is None else retries, 0.0 if retry_delay is None else retry_delay
        )
        if not task_id.isidentifier():
            raise DefinitionError(f"{what}: an id must be a Python identifier")
        takes_context, required, _ = _inputs_of(func, what)
        if branch and short_circuit:
            raise DefinitionError(f"{what}: a task is a branch or a short-circuit, not both")
        file, line = _fn_location(func)
        return pipeline.add(
            TaskDef(
                id=task_id,
                pipeline=pipeline,
                fn=func,
                takes_context=takes_context,
                inputs=required,
                upstream=list(required),
                retries=retries,
                retry_delay=retry_delay,
                timeout=_check_timeout(what, timeout),
                memory_limit=_check_memory(what, memory_limit),
                pool=pool,
                file=file,
                line=line,
                trigger_rule=_check_trigger_rule(what, trigger_rule),
                branch=bool(branch),
                short_circuit=bool(short_circuit),
            )
        )

    return wrap(fn) if fn is not None else wrap


TRIGGER_RULES = (
    "all_success",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
)
"""The trigger rules a task may have, as Airflow names and defines them."""


def _check_trigger_rule(what: str, rule: object) -> str:
    rule = getattr(rule, "value", rule)  # an enum of the same words works too
    if not isinstance(rule, str) or rule not in TRIGGER_RULES:
        from engine.errors import suggest

        hint = suggest(rule, TRIGGER_RULES) if isinstance(rule, str) else ""
        raise DefinitionError(
            f"{what}: unknown trigger_rule {rule!r}{hint} (one of {', '.join(TRIGGER_RULES)})"
        )
    return rule


def shell(
    command: str,
    id: str,  # noqa: A002
    cwd: str | None = None,
    env: Mapping[str, object] | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    memory_limit: int | str | None = None,
    pool: str | None = None,
    trigger_rule: str = "all_success",
) -> TaskDef:
    """A shell command task in the enclosing `Pipeline`; it fails when the command exits non-zero.

    Relative `cwd` is resolved against the folder of the file that defines the task; `env`
    values are passed as their `str()`. The command sees DAGTOP_RUN_ID, DAGTOP_TASK,
    DAGTOP_ATTEMPT and DAGTOP_PARTITION in its environment.
    """
    what = f"shell task {id!r}"
    pipeline = _current_pipeline(what)
    _check_retries(
        what, 0 if retries is None else retries, 0.0 if retry_delay is None else retry_delay
    )
    if not isinstance(command, str) or not command.strip():
        raise DefinitionError(f"{what}: the command must be a non-empty string")
    if not isinstance(id, str) or not id.isidentifier():
        raise DefinitionError(f"{what}: an id must be a Python identifier")
    file, line = _caller_location()
    if cwd is not None and not Path(cwd).is_absolute():
        cwd = str(Path(file).parent / cwd)
    return pipeline.add(
        TaskDef(
            id=id,
            pipeline=pipeline,
            command=command,
            cwd=cwd,
            env={str(k): str(v) for k, v in (env or {}).items()},
            retries=retries,
            retry_delay=retry_delay,
            timeout=_check_timeout(what, timeout),
            memory_limit=_check_memory(what, memory_limit),
            pool=pool,
            file=file,
            line=line,
            trigger_rule=_check_trigger_rule(what, trigger_rule),
        )
    )
