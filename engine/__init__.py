"""dagtop's authoring API: everything a pipeline file imports.

    from engine import asset, check, CheckResult, DailyPartitions, Pipeline, task, shell

Importing this package stays cheap (no database, no UI): every step's worker process
imports it before running user code.
"""

from __future__ import annotations

from engine.context import StepContext, build_context
from engine.definitions import (
    AssetDef,
    CheckDef,
    CheckResult,
    Pipeline,
    TaskDef,
    asset,
    check,
    file_sensor,
    schedule,
    shell,
    task,
)
from engine.iomanager import IOManager, JsonIO, PickleIO
from engine.partitions import (
    DailyPartitions,
    HourlyPartitions,
    PartitionsDefinition,
    StaticPartitions,
)

__all__ = [
    "AssetDef",
    "CheckDef",
    "CheckResult",
    "DailyPartitions",
    "HourlyPartitions",
    "IOManager",
    "JsonIO",
    "PartitionsDefinition",
    "Pipeline",
    "PickleIO",
    "StaticPartitions",
    "StepContext",
    "TaskDef",
    "asset",
    "build_context",
    "check",
    "file_sensor",
    "schedule",
    "shell",
    "task",
]
