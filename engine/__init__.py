"""dagtop's authoring API: everything a pipeline file imports.

    from engine import asset, check, CheckResult, DailyPartitions, Pipeline, task, shell

Importing this package stays cheap (no database, no UI): every step's worker process
imports it before running user code. The names load on first use (PEP 562), so a command
that never touches definitions (`dagtop materialize` handed to a running daemon) does not
pay for importing them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "engine.authoring.auto": ("Auto",),
    "engine.authoring.backfill_policy": ("BackfillPolicy",),
    "engine.authoring.context": ("ResourceContext", "StepContext", "build_context"),
    "engine.authoring.definitions": (
        "AssetDef",
        "CheckDef",
        "CheckResult",
        "ResourceDef",
        "asset",
        "check",
        "resource",
    ),
    "engine.authoring.schedules": ("file_sensor", "schedule"),
    "engine.authoring.tasks": ("Pipeline", "TaskDef", "shell", "task"),
    "engine.authoring.iomanager": ("IOManager", "JsonIO", "PickleIO"),
    "engine.authoring.multi_partitions": ("MultiPartitions",),
    "engine.authoring.partitions": (
        "DailyPartitions",
        "DynamicPartitions",
        "HourlyPartitions",
        "PartitionsDefinition",
        "StaticPartitions",
    ),
    "engine.authoring.sensors": ("RunRequest", "SensorContext", "SkipReason", "sensor"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

if TYPE_CHECKING:
    from engine.authoring.auto import Auto
    from engine.authoring.backfill_policy import BackfillPolicy
    from engine.authoring.context import ResourceContext, StepContext, build_context
    from engine.authoring.definitions import (
        AssetDef,
        CheckDef,
        CheckResult,
        ResourceDef,
        asset,
        check,
        resource,
    )
    from engine.authoring.iomanager import IOManager, JsonIO, PickleIO
    from engine.authoring.multi_partitions import MultiPartitions
    from engine.authoring.partitions import (
        DailyPartitions,
        DynamicPartitions,
        HourlyPartitions,
        PartitionsDefinition,
        StaticPartitions,
    )
    from engine.authoring.schedules import file_sensor, schedule
    from engine.authoring.sensors import RunRequest, SensorContext, SkipReason, sensor
    from engine.authoring.tasks import Pipeline, TaskDef, shell, task


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "AssetDef",
    "Auto",
    "BackfillPolicy",
    "CheckDef",
    "CheckResult",
    "DailyPartitions",
    "DynamicPartitions",
    "HourlyPartitions",
    "IOManager",
    "JsonIO",
    "MultiPartitions",
    "PartitionsDefinition",
    "Pipeline",
    "PickleIO",
    "ResourceContext",
    "ResourceDef",
    "RunRequest",
    "SensorContext",
    "SkipReason",
    "StaticPartitions",
    "StepContext",
    "TaskDef",
    "asset",
    "build_context",
    "check",
    "file_sensor",
    "resource",
    "schedule",
    "sensor",
    "shell",
    "task",
]
