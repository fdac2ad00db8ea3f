"""The authoring API: assets, checks, task pipelines, schedules and sensors.

Decorators only describe; they never run anything. While the loader (or a worker) imports a
pipeline module, every definition made registers itself in `_registry`, tagged with the file and
line it was written at, so a module that imports another pipeline module does not steal its
definitions, and a module imported twice under two names is still counted once.
"""

from __future__ import annotations

import inspect
import linecache
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from inspect import CO_VARARGS, CO_VARKEYWORDS
from pathlib import Path
from types import CodeType, FunctionType
from typing import Any, Self, TypeVar, overload

from engine.authoring.auto import Auto
from engine.authoring.backfill_policy import BackfillPolicy
from engine.authoring.partitions import PartitionsDefinition
from engine.errors import DefinitionError
from engine.units import control_character, parse_size

CONTEXT_PARAM = "context"
CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass
class _Registry:
    """Every definition made since the last `reset`, in the order made."""

    items: list[Definition] = field(default_factory=list)

    def add(self, item: Definition) -> None:
        self.items.append(item)

    def reset(self) -> list[Definition]:
        items, self.items = self.items, []
        return items


_registry = _Registry()


def _caller_location(depth: int = 2) -> tuple[str, int]:
    frame = sys._getframe(depth)
    return frame.f_code.co_filename, frame.f_lineno


def _fn_location(fn: Callable[..., Any]) -> tuple[str, int]:
    code = getattr(fn, "__code__", None)
    if code is None:
        return _caller_location(3)
    return code.co_filename, code.co_firstlineno


def _parameters(fn: Callable[..., Any], what: str) -> list[tuple[str, bool, bool]]:
    """(name, has a default, is *args or **kwargs) for each parameter of `fn`, in order."""
    code = getattr(fn, "__code__", None)
    plain = not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__")
    if type(fn) is FunctionType and plain and code is not None:
        # Read from the code object: the same answer as inspect.signature for a plain
        # function, at a tenth of its cost, which adds up over a module of many assets.
        n_pos = code.co_argcount
        names = code.co_varnames
        first_default = n_pos - len(fn.__defaults__ or ())
        kw_defaults = fn.__kwdefaults__ or {}
        params = [(names[i], i >= first_default, False) for i in range(n_pos)]
        if code.co_flags & CO_VARARGS:
            params.append(("*", False, True))
        kwonly = names[n_pos : n_pos + code.co_kwonlyargcount]
        params += [(name, name in kw_defaults, False) for name in kwonly]
        if code.co_flags & CO_VARKEYWORDS:
            params.append(("**", False, True))
        return params
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{what}: cannot read the signature of {fn!r}: {exc}") from exc
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        (p.name, p.default is not p.empty, p.kind in variadic)
        for p in signature.parameters.values()
    ]


def _inputs_of(fn: Callable[..., Any], what: str) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """Split a function's parameters into (takes_context, required inputs, optional inputs)."""
    params = _parameters(fn, what)
    takes_context = bool(params) and params[0][0] == CONTEXT_PARAM
    if takes_context:
        params = params[1:]
    required: list[str] = []
    optional: list[str] = []
    for name, has_default, variadic in params:
        if variadic:
            raise DefinitionError(f"{what}: *args and **kwargs are not supported")
        if name == CONTEXT_PARAM:
            raise DefinitionError(f"{what}: `context` must be the first parameter")
        (optional if has_default else required).append(name)
    return takes_context, tuple(required), tuple(optional)


def _code_version(fn: Callable[..., Any]) -> str:
    """A short hash of a function's source, for staleness: it changes when the code does.

    Hashes the same text `inspect.getsource` gives for nearly every function, so versions
    recorded by earlier releases stay valid, at a tenth of the cost: it slices the file's
    lines (read once per file through linecache) where `getsource` tokenizes every function
    again. The slice runs from the first decorator to the last line that compiled to code, so
    it can end before `getsource` would (trailing comments, a body that is only a docstring),
    never before a line whose edit changes what the function does.
    """
    import hashlib

    return hashlib.sha256(_source_text(fn).encode()).hexdigest()[:12]


def _source_text(fn: Callable[..., Any]) -> str:
    try:
        target = inspect.unwrap(fn)  # what `getsource` hashes for a functools.wraps wrapper
    except ValueError:
        target = fn
    code = getattr(target, "__code__", None)
    if not isinstance(code, CodeType):
        try:
            return inspect.getsource(fn)
        except (OSError, TypeError):
            return ""
    linecache.checkcache(code.co_filename)  # an edited file is read again
    lines = linecache.getlines(code.co_filename, getattr(target, "__globals__", None))
    if not lines:  # no source (code made by exec): its bytecode is all there is to hash
        return code.co_code.hex()
    return "".join(lines[code.co_firstlineno - 1 : _last_line(code)])


def _last_line(code: CodeType) -> int:
    """The last source line any instruction of `code` (or a function nested in it) came from."""
    last = code.co_firstlineno
    for line, end, _, _ in code.co_positions():
        end = end or line  # no end positions under `python -X no_debug_ranges`
        if end is not None and end > last:
            last = end
    for const in code.co_consts:
        if isinstance(const, CodeType):
            last = max(last, _last_line(const))
    return last


def _check_retries(what: str, retries: int, retry_delay: float) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise DefinitionError(f"{what}: retries must be a whole number >= 0, got {retries!r}")
    if not isinstance(retry_delay, int | float) or retry_delay < 0:
        raise DefinitionError(f"{what}: retry_delay must be seconds >= 0, got {retry_delay!r}")


def _check_backfill_policy(
    what: str, policy: object, partitions: PartitionsDefinition | None
) -> None:
    if policy is None:
        return
    if not isinstance(policy, BackfillPolicy):
        raise DefinitionError(
            f"{what}: backfill_policy must be BackfillPolicy.single_run() or "
            f".multi_run(n), got {policy!r}"
        )
    if partitions is None:
        raise DefinitionError(f"{what}: backfill_policy needs partitions= (it splits their runs)")
    if partitions.kind == "multi":
        # Runs of consecutive keys mean nothing across two dimensions.
        raise DefinitionError(f"{what}: backfill_policy does not apply to MultiPartitions")


def hook_spec(hook: Any, what: str) -> dict[str, Any] | None:
    """The plain-data form of a hook given to `on_failure=` and friends (at definition time).

    Raises:
        DefinitionError: the hook is not a command, a URL or a module-level function.
    """
    if hook is None:
        return None
    if isinstance(hook, str):
        if not hook.strip():
            raise DefinitionError(f"{what}: an empty hook")
        if hook.startswith(("http://", "https://")):
            return {"kind": "webhook", "url": hook}
        return {"kind": "shell", "command": hook}
    if callable(hook):
        qualname = getattr(hook, "__qualname__", "")
        code = getattr(hook, "__code__", None)
        if code is None or "<" in qualname:
            raise DefinitionError(f"{what}: a Python hook must be a module-level function")
        return {"kind": "python", "path": code.co_filename, "qualname": qualname}
    raise DefinitionError(f"{what}: a hook is a shell command, a URL or a function, not {hook!r}")


def hooks_of(what: str, **events: Any) -> dict[str, dict[str, Any]]:
    """The hooks given as on_failure=/on_retry=/on_success=, in plain-data form."""
    out = {}
    for event, hook in events.items():
        spec = hook_spec(hook, f"{what}: {event}")
        if spec is not None:
            out[event] = spec
    return out


def _check_timeout(what: str, timeout: float | None) -> float | None:
    return None if timeout is None else _seconds(what, "timeout", timeout)


def _seconds(what: str, arg: str, value: object) -> float:
    """`value` as a positive, finite number of seconds.

    Raises:
        DefinitionError: it is not one.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise DefinitionError(f"{what}: {arg} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _check_text(what: str, part: str, value: object) -> None:
    """Refuse a name printed one per line (`dagtop list`, `runs`, the UI) that holds a control
    character: a newline would forge a line there, an escape would drive the terminal.

    Raises:
        DefinitionError: it holds one.
    """
    found = control_character(value) if isinstance(value, str) else None
    if found is not None:
        raise DefinitionError(f"{what}: {part} contains a control character ({found})")


def _check_memory(what: str, memory_limit: int | str | None) -> int | None:
    try:
        return parse_size(memory_limit)
    except ValueError as exc:
        raise DefinitionError(f"{what}: memory_limit: {exc}") from exc


@dataclass(eq=False)
class AssetDef:
    """A software-defined asset: a function whose return value is stored and tracked."""

    name: str
    fn: Callable[..., Any]
    group: str
    partitions: PartitionsDefinition | None
    inputs: tuple[str, ...]
    optional_inputs: tuple[str, ...]
    deps: tuple[str, ...]
    takes_context: bool
    retries: int
    retry_delay: float
    timeout: float | None
    memory_limit: int | None
    pool: str | None
    description: str | None
    tags: dict[str, str]
    io: Any
    file: str
    line: int
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    pinned_version: str | None = None
    """The `code_version=` given, which replaces the hash of the source."""
    backfill_policy: BackfillPolicy | None = None
    auto: Auto | None = None
    """When the engine's `auto` sensor materializes it on its own (`Auto.eager()`, ...)."""

    @cached_property
    def code_version(self) -> str:
        """What staleness compares: `code_version=` if given, else a hash of the source.

        Computed on first use, because only the loader reads it: a step's worker imports the
        whole module to run one asset and never pays for hashing every asset in it.
        """
        return self.pinned_version or _code_version(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Calling the asset calls the function, so users can unit-test it directly.
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<asset {self.name}>"


@overload
def asset(fn: Callable[..., Any], /) -> AssetDef: ...


@overload
def asset(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    group: str | None = None,
    partitions: PartitionsDefinition | None = None,
    backfill_policy: BackfillPolicy | None = None,
    auto: Auto | None = None,
    deps: Iterable[str | AssetDef] = (),
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    memory_limit: int | str | None = None,
    pool: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    io: Any = "pickle",
    code_version: str | None = None,
    on_failure: Any = None,
    on_retry: Any = None,
    on_success: Any = None,
) -> Callable[[Callable[..., Any]], AssetDef]: ...


def asset(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    group: str | None = None,
    partitions: PartitionsDefinition | None = None,
    backfill_policy: BackfillPolicy | None = None,
    auto: Auto | None = None,
    deps: Iterable[str | AssetDef] = (),
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    memory_limit: int | str | None = None,
    pool: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    io: Any = "pickle",
    code_version: str | None = None,
    on_failure: Any = None,
    on_retry: Any = None,
    on_success: Any = None,
) -> AssetDef | Callable[[Callable[..., Any]], AssetDef]:
    """Declare a software-defined asset.

    Parameters named after other assets are its upstream inputs; an optional first parameter
    named `context` receives the run context.

    Args:
        name: The asset's name (default: the function's name).
        group: A group shown together in the UI and selectable as `group:NAME`.
        partitions: A `DailyPartitions`, `HourlyPartitions` or `StaticPartitions`.
        backfill_policy: `BackfillPolicy.single_run()` to backfill a range in one run (or
            `multi_run(n)`: runs of n partitions). The function is then always called with a
            range: `context.partition_keys` lists it and it returns `{key: value}`.
        auto: When the engine materializes it on its own: `Auto.eager()` (whenever an
            upstream updates), `Auto.on_cron("0 9 * * *")` (once per tick, after every upstream
            updated since it) or `Auto.on_missing()` (once, while missing). Off by default.
        deps: Upstream assets that must run first but whose values are not passed in.
        retries: Extra attempts after a failure.
        retry_delay: Seconds before the first retry; doubles each attempt (capped).
        timeout: Seconds after which the step's process tree is terminated.
        memory_limit: Bytes, or a string like "512MiB"; the tree is killed above it.
        pool: A named concurrency pool (sizes are set in dagtop.toml).
        description: Shown in `dagtop list` and the UI (default: the docstring).
        tags: Free-form labels.
        io: How the value is stored: "pickle" (default), "json", or an IO manager object.
        code_version: Overrides the hash of the function's source used for staleness.
        on_failure: A hook called when the step fails for good: a shell command, a webhook
            URL, or a module-level function taking an `engine.executor.alerts.Alert`.
        on_retry: A hook called when an attempt fails and a retry is scheduled.
        on_success: A hook called when the step succeeds.

    Returns:
        The `AssetDef` (callable like the function).

    Raises:
        DefinitionError: an argument is invalid.
    """

    def wrap(func: Callable[..., Any]) -> AssetDef:
        if not callable(func):
            raise DefinitionError(f"@asset must decorate a function, got {func!r}")
        asset_name = name or func.__name__
        what = f"asset {asset_name!r}"
        if not asset_name.isidentifier():
            raise DefinitionError(f"{what}: a name must be a Python identifier")
        if partitions is not None and not isinstance(partitions, PartitionsDefinition):
            raise DefinitionError(f"{what}: partitions must be a PartitionsDefinition")
        _check_text(what, f"group {group!r}", group)
        _check_retries(what, retries, retry_delay)
        _check_backfill_policy(what, backfill_policy, partitions)
        if auto is not None and not isinstance(auto, Auto):
            raise DefinitionError(
                f"{what}: auto must be Auto.eager(), Auto.on_cron(CRON) or Auto.on_missing(), "
                f"got {auto!r}"
            )
        takes_context, required, optional = _inputs_of(func, what)
        dep_names = tuple(d.name if isinstance(d, AssetDef) else str(d) for d in deps)
        file, line = _fn_location(func)
        defn = AssetDef(
            name=asset_name,
            fn=func,
            group=group or "default",
            partitions=partitions,
            backfill_policy=backfill_policy,
            auto=auto,
            inputs=required,
            optional_inputs=optional,
            deps=dep_names,
            takes_context=takes_context,
            retries=retries,
            retry_delay=float(retry_delay),
            timeout=_check_timeout(what, timeout),
            memory_limit=_check_memory(what, memory_limit),
            pool=pool,
            description=description or inspect.getdoc(func),
            tags=dict(tags or {}),
            io=io,
            file=file,
            line=line,
            hooks=hooks_of(what, on_failure=on_failure, on_retry=on_retry, on_success=on_success),
            pinned_version=code_version,
        )
        _registry.add(defn)
        return defn

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What an asset check returns when a bare bool is not enough."""

    passed: bool
    metadata: dict[str, Any] | None = None
    description: str | None = None


@dataclass(eq=False)
class CheckDef:
    name: str
    asset: str
    fn: Callable[..., Any]
    blocking: bool
    takes_context: bool
    takes_value: bool
    description: str | None
    file: str
    line: int

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<check {self.asset}.{self.name}>"


def check(
    asset: str | AssetDef,
    *,
    name: str | None = None,
    blocking: bool = False,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], CheckDef]:
    """Declare an asset check, run right after the asset is materialized.

    The function receives the asset's value (a parameter named after the asset) and an optional
    first `context`; it returns a bool or a `CheckResult`.

    Args:
        asset: The checked asset's name.
        name: The check's name (default: the function's name).
        blocking: When True, a failing check skips everything downstream of the asset.
        description: Shown with the result (default: the docstring).
    """
    asset_name = asset.name if isinstance(asset, AssetDef) else asset

    def wrap(func: Callable[..., Any]) -> CheckDef:
        check_name = name or func.__name__
        what = f"check {check_name!r}"
        _check_text(what, "its name", check_name)
        takes_context, required, _ = _inputs_of(func, what)
        if required not in ((), (asset_name,)):
            raise DefinitionError(
                f"{what}: its only parameter besides `context` must be named {asset_name!r}"
            )
        file, line = _fn_location(func)
        defn = CheckDef(
            name=check_name,
            asset=asset_name,
            fn=func,
            blocking=bool(blocking),
            takes_context=takes_context,
            takes_value=bool(required),
            description=description or inspect.getdoc(func),
            file=file,
            line=line,
        )
        _registry.add(defn)
        return defn

    return wrap


# --- resources --------------------------------------------------------------------------------


@dataclass(eq=False)
class ResourceDef:
    """A resource: a client or connection built once per step that names it, torn down after."""

    name: str
    fn: Callable[..., Any]
    takes_context: bool
    description: str | None
    file: str
    line: int

    def __repr__(self) -> str:
        return f"<resource {self.name}>"


@overload
def resource(fn: Callable[..., Any], /) -> ResourceDef: ...


@overload
def resource(
    fn: None = None, /, *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], ResourceDef]: ...


def resource(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> ResourceDef | Callable[[Callable[..., Any]], ResourceDef]:
    """Declare a resource: an asset parameter named after it receives what the function gives.

    The function may take `context` (`context.config` is the `[resources.NAME]` table of
    dagtop.toml; `context.log`, `context.home`). It returns the resource, or yields it once:
    code after the `yield` is its teardown, run after the step whether it succeeded or failed.
    A resource is built in the step's own process, only for a step that names it.

    Args:
        name: The resource's name (default: the function's name).
        description: Shown in `dagtop list` (default: the docstring).

    Raises:
        DefinitionError: the name is not an identifier, or the function takes other parameters.
    """

    def wrap(func: Callable[..., Any]) -> ResourceDef:
        if not callable(func):
            raise DefinitionError(f"@resource must decorate a function, got {func!r}")
        resource_name = name or func.__name__
        what = f"resource {resource_name!r}"
        if not resource_name.isidentifier():
            raise DefinitionError(f"{what}: a name must be a Python identifier")
        takes_context, required, _ = _inputs_of(func, what)
        if required:
            raise DefinitionError(
                f"{what}: a resource takes only `context`, not {required[0]!r} "
                "(its settings come from [resources." + resource_name + "] in dagtop.toml)"
            )
        file, line = _fn_location(func)
        defn = ResourceDef(
            name=resource_name,
            fn=func,
            takes_context=takes_context,
            description=description or inspect.getdoc(func),
            file=file,
            line=line,
        )
        _registry.add(defn)
        return defn

    return wrap(fn) if fn is not None else wrap


# --- Airflow-style task pipelines -------------------------------------------------------------

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


# --- schedules and sensors --------------------------------------------------------------------

Target = str | AssetDef | Pipeline | Sequence[str | AssetDef]


@dataclass(eq=False)
class ScheduleDef:
    name: str
    cron: str
    target: Target
    catchup: bool
    start: str | None
    file: str
    line: int
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)


def schedule(
    cron: str,
    target: Target,
    name: str | None = None,
    catchup: bool = False,
    on_failure: Any = None,
    on_success: Any = None,
) -> None:
    """Run `target` on a cron schedule (`0 3 * * *`, `@daily`, ...).

    Args:
        cron: Five-field cron, or `@hourly`, `@daily`, `@weekly`, `@monthly`.
        target: An asset name, a list of names or selections, `"group:NAME"`, or a Pipeline.
        name: The schedule's name (default: derived from the target).
        catchup: Run every missed tick on start, not only the latest. Without it a new
            schedule begins with its next tick: a first start runs nothing.
        on_failure, on_success: Hooks for every step of the runs this schedule starts.
    """
    file, line = _caller_location()
    if name is None:
        name = _target_label(target).replace(":", "_").replace(" ", "") + "_schedule"
    _check_text(f"schedule {name!r}", "its name", name)
    hooks = hooks_of(f"schedule {name!r}", on_failure=on_failure, on_success=on_success)
    _registry.add(
        ScheduleDef(
            name=name,
            cron=cron,
            target=target,
            catchup=catchup,
            start=None,
            file=file,
            line=line,
            hooks=hooks,
        )
    )


@dataclass(eq=False)
class SensorDef:
    name: str
    path: str
    target: Target
    pattern: str
    recursive: bool
    file: str
    line: int
    settle: float = 1.0


def file_sensor(
    name: str,
    path: str,
    target: Target,
    pattern: str = "*",
    recursive: bool = False,
    settle: float = 1.0,
) -> None:
    """Start one run of `target` for every new file under `path` matching `pattern`.

    The run's `context.params["path"]` is the file's absolute path. A relative `path` is
    resolved against the folder of the file that defines the sensor.

    Args:
        name: The sensor's name (`dagtop sensor on|off NAME`).
        path: The folder to watch.
        target: An asset name, a list of names or selections, or a Pipeline.
        pattern: A glob the file's name must match.
        recursive: Watch the folders under `path` too.
        settle: Seconds a file must stay unchanged (size and modification time) before it
            starts its run: longer than the longest pause of whatever writes the files, or a
            run starts on a partial file (and another on the whole one).

    Raises:
        DefinitionError: `settle` is not a positive number of seconds, or the name or the
            folder contains a control character.
    """
    file, line = _caller_location()
    _check_text(f"sensor {name!r}", "its name", name)
    _check_text(f"sensor {name!r}", f"folder {path!r}", path)
    settle = _seconds(f"sensor {name!r}", "settle", settle)
    folder = Path(path)
    if not folder.is_absolute():
        folder = Path(file).parent / folder
    _registry.add(
        SensorDef(
            name=name,
            path=str(folder),
            target=target,
            pattern=pattern,
            recursive=recursive,
            file=file,
            line=line,
            settle=settle,
        )
    )


def _target_label(target: Target) -> str:
    if isinstance(target, Pipeline):
        return target.name
    if isinstance(target, AssetDef):
        return target.name
    if isinstance(target, str):
        return target
    return "_".join(_target_label(t) for t in target)


def target_spec(target: Target) -> dict[str, Any]:
    """The plain-data form of a schedule's or sensor's target.

    Raises:
        DefinitionError: the target is not asset names, AssetDefs or a Pipeline.
    """
    if isinstance(target, Pipeline):
        return {"kind": "pipeline", "name": target.name}
    # What a user passes is checked here, not trusted to match `Target`: a pipeline module is
    # not type-checked.
    items: object = [target] if isinstance(target, AssetDef | str) else target
    if not isinstance(items, list | tuple):
        raise DefinitionError(f"a target must be asset names or a Pipeline, not {target!r}")
    selection: list[str] = []
    for item in items:
        if isinstance(item, AssetDef):
            selection.append(item.name)
        elif isinstance(item, str):
            selection.append(item)
        else:
            raise DefinitionError(f"a target must be asset names or a Pipeline, not {item!r}")
    if not selection:
        raise DefinitionError("a target must name at least one asset")
    return {"kind": "assets", "selection": selection}


Definition = AssetDef | CheckDef | Pipeline | ResourceDef | ScheduleDef | SensorDef
"""What a pipeline module registers while it is imported."""
