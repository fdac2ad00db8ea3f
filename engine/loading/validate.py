"""Turn per-file import results into one validated manifest.

Checks that need every file at once live here: an input naming no asset, a dependency cycle,
a name defined in two files, a check on an unknown asset, an invalid cron, a sensor on a
missing folder, a target naming nothing. Each problem becomes the error of the file(s) that
wrote it; removing a broken file can break a file that depended on it, so validation repeats
until nothing changes, and every other file still loads.
"""

from __future__ import annotations

import dataclasses
import graphlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import suggest
from engine.loading.manifest import (
    CheckSpec,
    CustomSensorSpec,
    FileError,
    FileInfo,
    Manifest,
    PipelineSpec,
    ResourceSpec,
    ScheduleSpec,
    SensorSpec,
    Target,
    asset_from_dict,
    task_from_dict,
)


@dataclasses.dataclass(frozen=True)
class ResourceSettings:
    """The `[resources.NAME]` tables of the project's settings, and where each one starts."""

    source: str  # the settings file's name (dagtop.toml or pyproject.toml)
    tables: Mapping[str, dict[str, Any]]
    lines: Mapping[str, int]


def build_manifest(
    root: Path,
    infos: dict[str, FileInfo],
    results: dict[str, dict[str, Any]],
    settings: ResourceSettings | None = None,
) -> Manifest:
    """The validated manifest of the files' results; `settings` gives each resource its
    `[resources.NAME]` table, and a table that names no resource is an error of that file."""
    errors: dict[str, FileError] = {}
    for rel, result in results.items():
        if result.get("error"):
            errors[rel] = FileError(**result["error"])
    _duplicates(results, errors)
    tables = settings.tables if settings is not None else {}
    while True:
        manifest = _assemble(root, infos, results, errors, tables)
        found = _graph_errors(manifest, results, errors)
        if not found:
            break
        errors.update(found)
    if settings is not None:
        _settings_errors(manifest, settings)
    return manifest


def _settings_errors(m: Manifest, settings: ResourceSettings) -> None:
    prefix = "tool.dagtop.resources" if settings.source == "pyproject.toml" else "resources"
    for name in settings.tables:
        if name in m.resources:
            continue
        owner = _probable_owner(m, name)
        if owner is not None:
            why = f"[{prefix}.{name}]: resource {name!r} is in {owner}, which failed to load"
        else:
            why = f"[{prefix}.{name}] names no resource" + suggest(name, m.resources)
        m.errors[settings.source] = FileError(
            file=settings.source,
            kind="unknown-resource",
            message=why,
            line=settings.lines.get(name),
        )
        return  # one error a file, as for pipeline files


def _duplicates(results: dict[str, dict[str, Any]], errors: dict[str, FileError]) -> None:
    # File sensors and custom sensors share one namespace (`dagtop sensor on|off NAME`).
    for sections, noun in (
        (("assets",), "asset"),
        (("pipelines",), "pipeline"),
        (("schedules",), "schedule"),
        (("sensors", "custom_sensors"), "sensor"),
        (("resources",), "resource"),
    ):
        owners: dict[str, list[tuple[str, int]]] = {}
        for rel, result in results.items():
            if result.get("error"):
                continue
            for section in sections:
                for item in result.get(section, ()):
                    owners.setdefault(item["name"], []).append((rel, item["line"]))
        for name, places in owners.items():
            if len(places) < 2:
                continue
            where = " and ".join(f"{f}:{line}" for f, line in places)
            for rel, line in places:
                errors.setdefault(
                    rel,
                    FileError(
                        file=rel,
                        kind="duplicate",
                        message=f"{noun} {name!r} is defined twice: {where}",
                        line=line,
                    ),
                )


def _assemble(
    root: Path,
    infos: dict[str, FileInfo],
    results: dict[str, dict[str, Any]],
    errors: dict[str, FileError],
    tables: Mapping[str, dict[str, Any]],
) -> Manifest:
    m = Manifest(root=str(root), files=dict(infos), errors=dict(errors))
    for rel in sorted(results):
        result = results[rel]
        if rel in errors or result.get("error"):
            continue
        for a in result["assets"]:
            m.assets[a["name"]] = asset_from_dict({**a, "file": rel})
        for c in result["checks"]:
            m.checks.setdefault(c["asset"], []).append(CheckSpec(**{**c, "file": rel}))
        for p in result["pipelines"]:
            tasks = {k: task_from_dict(t) for k, t in p["tasks"].items()}
            m.pipelines[p["name"]] = PipelineSpec(**{**p, "tasks": tasks, "file": rel})
        for s in result["schedules"]:
            m.schedules[s["name"]] = ScheduleSpec(**{**s, "file": rel})
        for s in result["sensors"]:
            m.sensors[s["name"]] = SensorSpec(**{**s, "file": rel})
        for s in result.get("custom_sensors", ()):
            m.custom_sensors[s["name"]] = CustomSensorSpec(**{**s, "file": rel})
        for r in result.get("resources", ()):
            config = dict(tables.get(r["name"], {}))
            m.resources[r["name"]] = ResourceSpec(**{**r, "file": rel, "config": config})
    if m.resources:
        # A parameter named after a resource is no upstream: it receives the resource. An
        # asset of the same name is a clash (an error found next), so it stays an input.
        for name, spec in m.assets.items():
            params = (*spec.inputs, *spec.optional_inputs)
            named = tuple(n for n in params if n in m.resources and n not in m.assets)
            if named:
                m.assets[name] = dataclasses.replace(
                    spec,
                    inputs=tuple(n for n in spec.inputs if n not in named),
                    optional_inputs=tuple(n for n in spec.optional_inputs if n not in named),
                    resources=named,
                )
    return m


def _owner_of(name: str, results: dict[str, dict[str, Any]]) -> str | None:
    for rel, result in results.items():
        for a in (*(result.get("assets") or ()), *(result.get("resources") or ())):
            if a["name"] == name:
                return rel
    return None


def _probable_owner(m: Manifest, name: str) -> str | None:
    """A broken file whose source seems to define `name` (its definitions are unknown, since
    it never finished importing): worth naming instead of "names no asset"."""
    pattern = re.compile(
        rf"(\bdef\s+{re.escape(name)}\s*\(|name\s*=\s*['\"]{re.escape(name)}['\"])"
    )
    for rel, err in m.errors.items():
        if err.kind not in ("syntax", "import", "crash", "timeout", "definition"):
            continue
        try:
            text = (Path(m.root) / rel).read_text(errors="replace")
        except OSError:
            continue
        if pattern.search(text):
            return rel
    return None


# Records a problem: (file, kind, message, line).
_Add = Callable[[str, str, str, int | None], None]


def _graph_errors(
    m: Manifest, results: dict[str, dict[str, Any]], errors: dict[str, FileError]
) -> dict[str, FileError]:
    found: dict[str, FileError] = {}

    def add(rel: str, kind: str, message: str, line: int | None) -> None:
        if rel not in errors and rel not in found:
            found[rel] = FileError(file=rel, kind=kind, message=message, line=line)

    for res in m.resources.values():
        clash = m.assets.get(res.name)
        if clash is not None:
            why = (
                f"resource {res.name!r} ({res.file}:{res.line}) and asset {res.name!r} "
                f"({clash.file}:{clash.line}) have the same name: rename one"
            )
            add(res.file, "clash", why, res.line)
            add(clash.file, "clash", why, clash.line)
    for spec in m.assets.values():
        for name in (*spec.inputs, *spec.deps):
            if name in m.assets:
                continue
            owner = _owner_of(name, results) or _probable_owner(m, name)
            if owner is not None and owner != spec.file:
                why = f"{name!r} is defined in {owner}, which failed to load"
            else:
                if name in spec.inputs:
                    why = f"asset {spec.name!r} has a parameter {name!r} that names no asset"
                    why += " or resource" + suggest(name, [*m.assets, *m.resources])
                else:
                    why = f"asset {spec.name!r} depends on {name!r} that names no asset"
                    why += suggest(name, m.assets)
            add(spec.file, "unknown-input", why, spec.line)
        if spec.auto is not None and spec.auto.get("kind") == "on_cron":
            from engine.authoring.cron import CronError, parse_cron

            try:
                parse_cron(spec.auto["cron"])
            except CronError as exc:
                add(spec.file, "cron", f"asset {spec.name!r}: Auto.on_cron: {exc}", spec.line)
    for asset, checks in m.checks.items():
        if asset not in m.assets:
            for c in checks:
                add(
                    c.file,
                    "unknown-asset",
                    f"check {c.name!r} is on {asset!r}, which names no asset"
                    + suggest(asset, m.assets),
                    c.line,
                )
    if not found:
        _cycles(m, add)
        for p in m.pipelines.values():
            _pipeline_cycles(p, add)
    for schedule in m.schedules.values():
        _schedule_errors(m, schedule, add)
    for sensor in m.sensors.values():
        _sensor_errors(m, sensor, add)
    for custom in m.custom_sensors.values():
        if custom.target is not None and (problem := _target_error(m, custom.target)):
            add(custom.file, "unknown-target", f"sensor {custom.name!r}: {problem}", custom.line)
    return found


def _cycles(m: Manifest, add: _Add) -> None:
    known = m.assets.keys()
    graph = {name: known & set(spec.upstream) for name, spec in m.assets.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        text = " -> ".join(cycle)
        for name in dict.fromkeys(cycle):
            spec = m.assets[name]
            add(spec.file, "cycle", f"dependency cycle: {text}", spec.line)


def _pipeline_cycles(p: PipelineSpec, add: _Add) -> None:
    graph = {t.id: set(t.upstream) for t in p.tasks.values()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        text = " >> ".join(reversed(exc.args[1]))
        add(p.file, "cycle", f"pipeline {p.name!r} has a dependency cycle: {text}", p.line)


def _target_error(m: Manifest, target: Target) -> str | None:
    if target["kind"] == "pipeline":
        name = target["name"]
        if name not in m.pipelines:
            return f"pipeline {name!r} does not exist" + suggest(name, m.pipelines)
        return None
    from engine.errors import SelectionError
    from engine.loading.selection import resolve  # local: selection imports nothing heavy either

    try:
        resolve(m, target["selection"])
    except SelectionError as exc:
        return exc.msg
    return None


def _schedule_errors(m: Manifest, s: ScheduleSpec, add: _Add) -> None:
    from engine.authoring.cron import CronError, parse_cron

    try:
        parse_cron(s.cron)
    except CronError as exc:
        add(s.file, "cron", f"schedule {s.name!r}: {exc}", s.line)
        return
    problem = _target_error(m, s.target)
    if problem:
        add(s.file, "unknown-target", f"schedule {s.name!r}: {problem}", s.line)


def _sensor_errors(m: Manifest, s: SensorSpec, add: _Add) -> None:
    if s.name == "auto":
        add(s.file, "duplicate", "sensor 'auto' is the built-in sensor of asset automation: "
            "name yours otherwise", s.line)  # fmt: skip
        return
    if not os.path.isdir(s.path):
        add(
            s.file,
            "missing-folder",
            f"sensor {s.name!r} watches {s.path}, which is not a folder",
            s.line,
        )
        return
    problem = _target_error(m, s.target)
    if problem:
        add(s.file, "unknown-target", f"sensor {s.name!r}: {problem}", s.line)
