"""The authoring API: assets, checks and resources, and what every definition shares (the
registry, where a definition was written, its parameters, the checks of its arguments, its
hooks). Task pipelines are in `tasks.py`, schedules and file sensors in `schedules.py`,
custom sensors in `sensors.py`.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any, overload

from engine.authoring.auto import Auto
from engine.authoring.backfill_policy import BackfillPolicy
from engine.authoring.partitions import PartitionsDefinition
from engine.errors import DefinitionError
from engine.units import control_character, parse_size

if TYPE_CHECKING:
    from engine.authoring.schedules import Definition

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
