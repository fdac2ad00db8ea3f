"""Custom sensors: a function the engine calls every `interval` seconds, in a child process, to
decide which runs to request.

    from engine import RunRequest, SkipReason, sensor

    @sensor(target="group:sales", interval=30, timeout=60)
    def new_exports(context):
        names = list_exports(after=context.cursor)
        if not names:
            return SkipReason("no new exports")
        context.update_cursor(names[-1])
        return [RunRequest(run_key=n, params={"path": n}) for n in names]

What the function returns (or yields) is turned into plain data here, in the child
(`evaluate`); the engine records it (engine/automation/custom_sensors.py).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, overload

from engine.authoring.definitions import _check_text, _fn_location, _registry, _seconds
from engine.authoring.partitions import DynamicPartitions, InvalidPartitionKey, check_dynamic_key
from engine.authoring.schedules import Target, target_spec
from engine.errors import DefinitionError
from engine.units import control_character

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 60.0
MAX_REQUESTS = 10_000  # per tick: more is a sensor that forgot its cursor


@dataclass(frozen=True)
class RunRequest:
    """A run a sensor asks for.

    Args:
        run_key: Starts at most one run, ever, per sensor: a key the sensor requested before is
            skipped (also after a restart). None: every request starts a run.
        params: The run's `context.params`.
        partition: The partition key to materialize.
        target: What to run instead of the sensor's target (asset names, `group:x`, an asset,
            or a Pipeline).
    """

    run_key: str | None = None
    params: dict[str, Any] | None = None
    partition: str | None = None
    target: Target | None = None


@dataclass(frozen=True)
class SkipReason:
    """A sensor's answer when it requests nothing, with why (shown in its tick history)."""

    message: str = ""


@dataclass(eq=False)
class SensorDef:
    """A custom sensor, as `@sensor` registers it."""

    name: str
    fn: Callable[..., Any]
    target: Target | None
    interval: float
    timeout: float
    description: str | None
    file: str
    line: int

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


@overload
def sensor(fn: Callable[..., Any], /) -> SensorDef: ...


@overload
def sensor(
    fn: None = None,
    /,
    *,
    target: Target | None = None,
    name: str | None = None,
    interval: float = DEFAULT_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], SensorDef]: ...


def sensor(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    target: Target | None = None,
    name: str | None = None,
    interval: float = DEFAULT_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    description: str | None = None,
) -> SensorDef | Callable[[Callable[..., Any]], SensorDef]:
    """Make a function a sensor the engine evaluates every `interval` seconds.

    The function takes a `SensorContext` (`context.cursor`, `context.update_cursor()`,
    `context.last_tick_at`, `context.log`, `context.add_partitions()`) and returns a
    `RunRequest`, a list of them, a `SkipReason` or None, or yields `RunRequest`s. It runs in a
    child process, never in the engine, and is stopped after `timeout` seconds.

    Args:
        target: What its requests run (a request's own `target` overrides it): asset names,
            `"group:NAME"`, an asset, a list of them, or a Pipeline.
        name: The sensor's name (default: the function's), for `dagtop sensor on|off NAME`.
        interval: Seconds between two evaluations.
        timeout: Seconds an evaluation may take before it is stopped and recorded as failed.
        description: Shown in `dagtop sensors` (default: the docstring's first line).

    Raises:
        DefinitionError: a bad interval or timeout, or a target that is not asset names or a
            Pipeline.
    """

    def wrap(func: Callable[..., Any]) -> SensorDef:
        file, line = _fn_location(func)
        sensor_name = name or func.__name__
        what = f"sensor {sensor_name!r}"
        _check_text(what, "its name", sensor_name)
        if target is not None:
            target_spec(target)  # refused at load time, with the file and line
        doc = (inspect.getdoc(func) or "").strip().splitlines()
        defn = SensorDef(
            name=sensor_name,
            fn=func,
            target=target,
            interval=_seconds(what, "interval", interval),
            timeout=_seconds(what, "timeout", timeout),
            description=description or (doc[0] if doc else None),
            file=file,
            line=line,
        )
        _registry.add(defn)  # type: ignore[arg-type]  # a Definition of its own module
        return defn

    return wrap(fn) if fn is not None else wrap


class SensorContext:
    """What a sensor's function gets: its cursor, its last tick, a logger, and dynamic keys.

    Attributes:
        sensor: The sensor's name.
        cursor: What the last recorded tick left with `update_cursor` (None at first).
        last_tick_at: When the last recorded tick started (epoch seconds), or None.
        log: A logger; its lines are kept with the tick.
    """

    def __init__(self, sensor: str, cursor: str | None, last_tick_at: float | None) -> None:
        self.sensor = sensor
        self.cursor = cursor
        self.last_tick_at = last_tick_at
        self.log = logging.getLogger(f"dagtop.sensor.{sensor}")
        self._cursor_changed = False
        self._partitions: dict[str, list[str]] = {}

    def update_cursor(self, cursor: str | None) -> None:
        """Set the cursor the next tick sees; recorded with this tick's runs, or not at all."""
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError(f"a cursor is a string (JSON, say), not {type(cursor).__name__}")
        self.cursor = cursor
        self._cursor_changed = True

    def add_partitions(self, partitions: DynamicPartitions | str, keys: Iterable[str]) -> None:
        """Add keys to dynamic partitions, in the same transaction as this tick's runs (so a
        request may name a key added here). A key that exists is left as it is."""
        self._partitions.setdefault(_dynamic_name(partitions), []).extend(_keys(keys))


def _dynamic_name(partitions: DynamicPartitions | str) -> str:
    if isinstance(partitions, DynamicPartitions):
        return partitions.name
    if isinstance(partitions, str):
        return DynamicPartitions(partitions).name
    raise TypeError(f"add_partitions takes a DynamicPartitions, not {type(partitions).__name__}")


def _keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        raise TypeError("add_partitions takes a list of keys, not one string")
    out = []
    for key in keys:
        try:
            out.append(check_dynamic_key(key))
        except InvalidPartitionKey as exc:
            raise ValueError(str(exc)) from None
    return out


class SensorResultError(Exception):
    """What a sensor returned is not what a sensor may return (said in one line)."""


def evaluate(defn: SensorDef, context: SensorContext) -> dict[str, Any]:
    """Call the sensor and turn its answer into plain data (JSON), checked.

    Returns:
        `{"requests": [...], "skip": str | None, "cursor_changed": bool, "cursor": ...,
        "partitions": {name: [keys]}}`; each request is `{"run_key", "params", "partition",
        "target"}` with `target` in plain form (or None for the sensor's).

    Raises:
        SensorResultError: a malformed answer. Whatever the function raises passes through.
    """
    answer = defn.fn(context)
    skip: str | None = None
    items: list[Any]
    if answer is None:
        items = []
    elif isinstance(answer, SkipReason):
        items, skip = [], str(answer.message)
    elif isinstance(answer, RunRequest):
        items = [answer]
    elif isinstance(answer, Iterable) and not isinstance(answer, str | bytes | dict):
        items = []
        for item in answer:  # a generator runs here, inside the time limit
            if isinstance(item, SkipReason):
                skip = str(item.message)
                continue
            items.append(item)
            if len(items) > MAX_REQUESTS:
                raise SensorResultError(f"more than {MAX_REQUESTS} requests in one tick")
    else:
        raise SensorResultError(
            "a sensor returns a RunRequest, a list of them, a SkipReason or None, "
            f"not {type(answer).__name__}"
        )
    requests = [_request(defn, item) for item in items]
    return {
        "requests": requests,
        "skip": skip if not requests else None,
        "cursor_changed": context._cursor_changed,
        "cursor": context.cursor,
        "partitions": context._partitions,
    }


def _request(defn: SensorDef, item: object) -> dict[str, Any]:
    if not isinstance(item, RunRequest):
        raise SensorResultError(f"a sensor yields RunRequests, not {type(item).__name__}")
    key = item.run_key
    if key is not None:
        if not isinstance(key, str) or not key:
            raise SensorResultError(f"a run key is a non-empty string, not {key!r}")
        found = control_character(key)
        if found is not None:
            raise SensorResultError(f"run key {key!r} contains a control character ({found})")
    params = item.params or {}
    if not isinstance(params, dict):
        raise SensorResultError(f"a request's params are a dict, not {type(params).__name__}")
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise SensorResultError(f"a request's params must be JSON: {exc}") from None
    partition = item.partition
    if partition is not None and not isinstance(partition, str):
        raise SensorResultError(f"a partition key is a string, not {partition!r}")
    target = item.target
    try:
        spec = target_spec(target) if target is not None else None
    except DefinitionError as exc:
        raise SensorResultError(exc.msg) from None
    if spec is None and defn.target is None:
        raise SensorResultError(
            f"sensor {defn.name!r} has no target: "
            "give @sensor(target=...) or RunRequest(target=...)"
        )
    return {"run_key": key, "params": params, "partition": partition, "target": spec}


def target_of(defn: SensorDef) -> dict[str, Any] | None:
    """The sensor's target in plain form, or None."""
    return target_spec(defn.target) if defn.target is not None else None


__all__ = [
    "RunRequest",
    "SensorContext",
    "SensorDef",
    "SkipReason",
    "evaluate",
    "sensor",
]
