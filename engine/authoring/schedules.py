"""The authoring API's schedules (`schedule`) and file sensors (`file_sensor`), and their
targets: asset names, assets, selections or a task pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.authoring.definitions import (
    AssetDef,
    CheckDef,
    ResourceDef,
    _caller_location,
    _check_text,
    _registry,
    _seconds,
    hooks_of,
)
from engine.authoring.tasks import (
    Pipeline,
)
from engine.errors import DefinitionError

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
