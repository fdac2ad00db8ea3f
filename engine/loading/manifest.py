"""The manifest: every definition as plain data, plus one error per broken file.

The loader builds it in a child process (user code never runs in the engine) and everything
else (planning, the CLI, the UI) reads only this. It round-trips through JSON so it can be
cached in the home folder and passed between processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from engine.authoring.partitions import PartitionsDefinition


@dataclass(frozen=True, slots=True)
class FileError:
    """Why one pipeline file did not load."""

    file: str  # path relative to the pipelines folder
    kind: str  # syntax | import | timeout | definition | unknown-input | cycle | duplicate | ...
    message: str
    traceback: str = ""
    line: int | None = None


@dataclass(frozen=True, slots=True)
class AssetSpec:
    name: str
    file: str
    module: str
    line: int
    group: str
    partitions: dict[str, Any] | None
    inputs: tuple[str, ...]
    optional_inputs: tuple[str, ...]
    deps: tuple[str, ...]
    retries: int
    retry_delay: float
    timeout: float | None
    memory_limit: int | None
    pool: str | None
    description: str | None
    tags: dict[str, str]
    io: str
    code_version: str
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # event -> hook
    # Its BackfillPolicy: 1 is a run per partition (the default), None no limit.
    partitions_per_run: int | None = 1
    # The resources its parameters name (built in its step's process), in parameter order.
    resources: tuple[str, ...] = ()
    # Its typed config (`engine.authoring.typed_config.describe_config`): the parameter, the
    # class, its JSON schema; None when no parameter has one.
    config: dict[str, Any] | None = None
    # Its automation condition (`Auto.to_spec()`), evaluated by the engine's `auto` sensor.
    auto: dict[str, Any] | None = None

    @property
    def ranged(self) -> bool:
        """Called with a range of partitions (`context.partition_keys`), returning {key: value}."""
        return self.partitions is not None and self.partitions_per_run != 1

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every asset that must be materialized before this one."""
        return tuple(dict.fromkeys((*self.inputs, *self.optional_inputs, *self.deps)))

    @property
    def partitions_def(self) -> PartitionsDefinition | None:
        return None if self.partitions is None else PartitionsDefinition.from_spec(self.partitions)


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    file: str
    module: str
    line: int
    description: str | None
    # Its `[resources.NAME]` table from the project's settings (filled in at validation).
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckSpec:
    name: str
    asset: str
    file: str
    module: str
    line: int
    blocking: bool
    description: str | None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    id: str
    kind: str  # "python" | "shell"
    upstream: tuple[str, ...]
    inputs: tuple[str, ...]
    command: str | None
    cwd: str | None
    env: dict[str, str] | None
    retries: int
    retry_delay: float
    timeout: float | None
    memory_limit: int | None
    pool: str | None
    line: int
    trigger_rule: str = "all_success"  # as Airflow defines it (authoring.TRIGGER_RULES)
    branch: bool = False  # returns the ids of the direct downstream tasks to run
    short_circuit: bool = False  # a falsy return skips everything downstream
    # Mapped over an upstream's list: (the parameter that gets each element, that task's id).
    expand: tuple[str, str] | None = None

    def downstream_of(self, tasks: dict[str, TaskSpec]) -> list[str]:
        """The ids of the tasks directly downstream of this one, in definition order."""
        return [t.id for t in tasks.values() if self.id in t.upstream]


def mapped_key(task_id: str, index: int) -> str:
    """The step key of a mapped task's instance: `process[0]`, as Airflow shows map indexes."""
    return f"{task_id}[{index}]"


def split_key(key: str) -> tuple[str, int | None]:
    """A task step's key as (task id, map index): `process[2]` -> ("process", 2); a task that
    is not a mapped instance has no index. Task ids are identifiers, so `[` never is part."""
    task_id, bracket, rest = key.partition("[")
    if not bracket or not rest.endswith("]") or not rest[:-1].isdigit():
        return key, None
    return task_id, int(rest[:-1])


def task_from_dict(raw: dict[str, Any]) -> TaskSpec:
    """A task from its JSON form (the loader's result, the manifest cache)."""
    expand = raw.get("expand")
    return TaskSpec(
        **{
            **raw,
            "upstream": tuple(raw["upstream"]),
            "inputs": tuple(raw["inputs"]),
            "expand": (expand[0], expand[1]) if expand else None,
        }
    )


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    name: str
    file: str
    module: str
    line: int
    tasks: dict[str, TaskSpec]
    schedule: str | None
    start: str | None
    catchup: bool
    tags: dict[str, str]
    description: str | None
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)


class AssetsTarget(TypedDict):
    """What a schedule or sensor runs: a selection of assets (as `dagtop materialize` takes)."""

    kind: Literal["assets"]
    selection: list[str]


class PipelineTarget(TypedDict):
    """What a schedule or sensor runs: a task pipeline."""

    kind: Literal["pipeline"]
    name: str


# A TypedDict, not a dataclass: the manifest's JSON (its cache, `dagtop list --json`) carries
# a target as this very dict.
Target = AssetsTarget | PipelineTarget


def target_label(target: Target) -> str:
    """How a target reads in a list: the pipeline's name, or the selection."""
    if target["kind"] == "pipeline":
        return target["name"]
    return ", ".join(target["selection"])


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    name: str
    file: str
    line: int
    cron: str
    target: Target
    catchup: bool
    start: str | None
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SensorSpec:
    name: str
    file: str
    line: int
    path: str
    target: Target
    pattern: str
    recursive: bool
    settle: float = 1.0  # seconds a file must stay unchanged before it starts a run


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One discovered pipeline file and the fingerprint its cached result is keyed on."""

    file: str
    module: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class Manifest:
    root: str  # the pipelines folder, absolute
    files: dict[str, FileInfo] = field(default_factory=dict)
    errors: dict[str, FileError] = field(default_factory=dict)
    assets: dict[str, AssetSpec] = field(default_factory=dict)
    checks: dict[str, list[CheckSpec]] = field(default_factory=dict)  # by asset
    pipelines: dict[str, PipelineSpec] = field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = field(default_factory=dict)
    sensors: dict[str, SensorSpec] = field(default_factory=dict)
    resources: dict[str, ResourceSpec] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for spec in self.assets.values():
            out.setdefault(spec.group, []).append(spec.name)
        return out

    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {name: [] for name in self.assets}
        for spec in self.assets.values():
            for up in spec.upstream:
                if up in out:
                    out[up].append(spec.name)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        def tasks(raw: dict[str, Any]) -> dict[str, TaskSpec]:
            return {k: task_from_dict(v) for k, v in raw.items()}

        return cls(
            root=data["root"],
            files={k: FileInfo(**v) for k, v in data["files"].items()},
            errors={k: FileError(**v) for k, v in data["errors"].items()},
            assets={k: asset_from_dict(v) for k, v in data["assets"].items()},
            checks={k: [CheckSpec(**c) for c in v] for k, v in data["checks"].items()},
            pipelines={
                k: PipelineSpec(**{**v, "tasks": tasks(v["tasks"])})
                for k, v in data["pipelines"].items()
            },
            schedules={k: ScheduleSpec(**v) for k, v in data["schedules"].items()},
            sensors={k: SensorSpec(**v) for k, v in data["sensors"].items()},
            resources={k: ResourceSpec(**v) for k, v in data.get("resources", {}).items()},
        )


def asset_from_dict(v: dict[str, Any]) -> AssetSpec:
    return AssetSpec(
        **{
            **v,
            "inputs": tuple(v["inputs"]),
            "optional_inputs": tuple(v["optional_inputs"]),
            "deps": tuple(v["deps"]),
            "resources": tuple(v.get("resources", ())),
        }
    )
