"""The child side of the loader: import pipeline modules and describe what they define.

Run as `python -m engine.loading.loader_child ROOT` with `{"files": [...], "all": [...]}` on stdin:
the relative paths to import, and every pipeline file of the folder. For
each file it writes `{"start": file}` and then the file's result as JSON lines on the original
stdout; anything the user's modules print goes to stderr instead, so it cannot corrupt the
protocol. The parent enforces the time limit per file and kills this process if one hangs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import json
import linecache
import os
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from engine.authoring import definitions as d
from engine.authoring import schedules, tasks
from engine.authoring import sensors as custom
from engine.authoring.typed_config import config_param, describe_config
from engine.errors import DefinitionError
from engine.loading.modules import NAMESPACE, import_pipeline_module, module_name_for


def _user_line(tb: traceback.StackSummary, path: str) -> int | None:
    lines = [frame.lineno for frame in tb if frame.filename == path]
    return lines[-1] if lines else None


def _trim_traceback(exc: BaseException) -> str:
    """The traceback from the user's code down, without the loader's or importlib's frames."""
    frames = traceback.extract_tb(exc.__traceback__)

    here = str(Path(__file__).parent) + os.sep
    machinery = os.path.dirname(importlib.__file__) + os.sep
    keep = [f for f in frames if not f.filename.startswith((here, machinery, "<frozen"))]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(keep)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _error(file: str, path: str, exc: BaseException, root: Path) -> dict[str, Any]:
    line = _user_line(traceback.extract_tb(exc.__traceback__), path)
    if isinstance(exc, SyntaxError):
        kind = "syntax"
        where = exc.filename or path
        if os.path.realpath(where) == os.path.realpath(path):
            line = exc.lineno
            message = f"{exc.msg} (line {exc.lineno})"
        else:
            # The error is in a module this file imports: name it, and point at the import.
            try:
                shown = os.path.relpath(where, root)
            except ValueError:
                shown = where
            message = f"{shown}: {exc.msg} (line {exc.lineno})"
    elif isinstance(exc, DefinitionError):
        kind = exc.kind
        line = exc.line or line
        message = exc.msg
    else:
        kind = "import"
        message = f"{type(exc).__name__}: {exc}"
    return {
        "file": file,
        "kind": kind,
        "message": message.splitlines()[0] if message else type(exc).__name__,
        "traceback": _trim_traceback(exc),
        "line": line,
    }


def _io_label(io: Any) -> str:
    if isinstance(io, str):
        return io
    return f"{type(io).__module__}.{type(io).__qualname__}"


def describe(item: Any, module: str) -> tuple[str, dict[str, Any]]:
    """The plain-data form of one registered definition, and which section it belongs to."""
    if isinstance(item, d.AssetDef):
        inputs, optional, config = list(item.inputs), list(item.optional_inputs), None
        typed = config_param(item.fn)
        if typed is not None:
            # The typed config is no upstream: it comes from the run's params.
            inputs = [n for n in inputs if n != typed[0]]
            optional = [n for n in optional if n != typed[0]]
            config = describe_config(*typed)
        return "assets", {
            "name": item.name,
            "module": module,
            "line": item.line,
            "group": item.group,
            "partitions": item.partitions.to_spec() if item.partitions else None,
            "inputs": inputs,
            "optional_inputs": optional,
            "deps": list(item.deps),
            "retries": item.retries,
            "retry_delay": item.retry_delay,
            "timeout": item.timeout,
            "memory_limit": item.memory_limit,
            "pool": item.pool,
            "description": item.description,
            "tags": item.tags,
            "io": _io_label(item.io),
            "code_version": item.code_version,
            "hooks": item.hooks,
            "partitions_per_run": (
                item.backfill_policy.max_partitions_per_run if item.backfill_policy else 1
            ),
            "config": config,
            "auto": item.auto.to_spec() if item.auto is not None else None,
        }
    if isinstance(item, d.ResourceDef):
        return "resources", {
            "name": item.name,
            "module": module,
            "line": item.line,
            "description": item.description,
        }
    if isinstance(item, d.CheckDef):
        return "checks", {
            "name": item.name,
            "asset": item.asset,
            "module": module,
            "line": item.line,
            "blocking": item.blocking,
            "description": item.description,
        }
    if isinstance(item, tasks.Pipeline):
        return "pipelines", _describe_pipeline(item, module)
    if isinstance(item, schedules.ScheduleDef):
        return "schedules", {
            "name": item.name,
            "line": item.line,
            "cron": item.cron,
            "target": schedules.target_spec(item.target),
            "catchup": item.catchup,
            "start": item.start,
            "hooks": item.hooks,
        }
    if isinstance(item, custom.SensorDef):
        return "custom_sensors", {
            "name": item.name,
            "module": module,
            "line": item.line,
            "function": item.name,
            "target": custom.target_of(item),
            "interval": item.interval,
            "timeout": item.timeout,
            "description": item.description,
        }
    if isinstance(item, schedules.SensorDef):
        return "sensors", {
            "name": item.name,
            "line": item.line,
            "path": item.path,
            "target": schedules.target_spec(item.target),
            "pattern": item.pattern,
            "recursive": item.recursive,
            "settle": item.settle,
        }
    raise TypeError(f"unknown definition {item!r}")


def _describe_pipeline(p: tasks.Pipeline, module: str) -> dict[str, Any]:
    tasks = {}
    for t in p.tasks.values():
        unknown = [name for name in t.inputs if name not in p.tasks]
        if unknown:
            raise DefinitionError(
                f"task {t.id!r} of pipeline {p.name!r} has a parameter {unknown[0]!r} "
                f"that names no task of the pipeline",
                line=t.line,
            )
        if t.expand_over is not None and p.tasks[t.expand_over[1]].expand_over is not None:
            raise DefinitionError(
                f"task {t.id!r} of pipeline {p.name!r} is expanded over {t.expand_over[1]!r}, "
                "itself a mapped task: map over a task that gathers its results instead",
                line=t.line,
            )
        tasks[t.id] = {
            "id": t.id,
            "kind": "python" if t.fn is not None else "shell",
            "upstream": list(t.upstream),
            "inputs": list(t.inputs),
            "command": t.command,
            "cwd": t.cwd,
            "env": t.env,
            "retries": p.retries if t.retries is None else t.retries,
            "retry_delay": p.retry_delay if t.retry_delay is None else float(t.retry_delay),
            "timeout": t.timeout,
            "memory_limit": t.memory_limit,
            "pool": t.pool,
            "line": t.line,
            "trigger_rule": t.trigger_rule,
            "branch": t.branch,
            "short_circuit": t.short_circuit,
            "expand": list(t.expand_over) if t.expand_over else None,
        }
    return {
        "name": p.name,
        "module": module,
        "line": p.line,
        "tasks": tasks,
        "schedule": p.schedule,
        "start": p.start,
        "catchup": p.catchup,
        "tags": p.tags,
        "description": p.description,
        "hooks": p.hooks,
    }


def load_file(
    root: Path, file: str, owned: dict[str, list[Any]], pipeline_paths: set[str]
) -> dict[str, Any]:
    """Import one file and return its definitions, or its error."""
    path = str(root / file)
    real = os.path.realpath(path)
    module = module_name_for(file)
    d._registry.reset()
    try:
        import_pipeline_module(root, file)
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is the file's error
        d._registry.reset()
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"file": file, "error": _error(file, path, exc, root)}
    # A module may import another pipeline module: keep each definition with the pipeline file
    # that wrote it (by its code's filename), so nothing is counted twice or in the wrong file.
    # Definitions made by code outside the pipeline files (a factory in a helper module)
    # belong to the file whose import made them.
    real_of: dict[str, str] = {}  # resolving a path costs a few stat calls: once per file
    for item in d._registry.reset():
        owner = real_of.get(item.file)
        if owner is None:
            owner = real_of[item.file] = os.path.realpath(item.file)
        owned.setdefault(owner if owner in pipeline_paths else real, []).append(item)
    result: dict[str, Any] = {
        "file": file,
        "error": None,
        "assets": [],
        "checks": [],
        "pipelines": [],
        "schedules": [],
        "sensors": [],
        "resources": [],
        "custom_sensors": [],
    }
    seen: dict[tuple[str, str], int] = {}
    try:
        for item in owned.get(real, []):
            section, data = describe(item, module)
            ident = (section, data.get("name") or "")
            if section == "checks":
                ident = (section, f"{data['asset']}.{data['name']}")
            if ident in seen:
                if seen[ident] == data["line"]:
                    continue  # the same definition seen again through a second import
                raise DefinitionError(
                    f"{section[:-1]} {ident[1]!r} is defined twice in this file "
                    f"(lines {seen[ident]} and {data['line']})",
                    line=data["line"],
                    kind="duplicate",
                )
            seen[ident] = data["line"]
            result[section].append(data)
    except Exception as exc:  # noqa: BLE001 - a bad definition is the file's error, never ours
        if not isinstance(exc, DefinitionError):
            exc = DefinitionError(f"{type(exc).__name__}: {exc}")
        if exc.line is None:
            exc.line = getattr(item, "line", None)  # the definition being described
        return {"file": file, "error": _error(file, path, exc, root)}
    return result


def become_fresh(root: Path, channel: int) -> None:
    """Make a child forked from the engine's side what user code would find in a fresh
    `python -m engine.loading.loader_child ROOT` (see `main`): a session of its own, the working
    folder and `sys.path` of that command, no terminal, no bytecode written, no module of the
    pipelines folder left over from its parent (a test process may have imported one), and no
    file descriptor of the parent's but `channel`, the result channel."""
    os.setsid()
    os.chdir(root.parent)
    # Every other inherited descriptor (a database, a socket, a pipe to another process)
    # becomes /dev/null: user code writing to any number it finds reaches nothing of ours.
    # Replaced rather than closed, so a number is never reused while the parent's object
    # for it still exists.
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in (channel, null):
            with contextlib.suppress(OSError):  # the listing's own, already closed
                os.dup2(null, fd)
    os.close(null)
    # The parent's stream objects may write elsewhere than fds 0-2 (a test's capture).
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    if faulthandler.is_enabled():  # a crash report goes where the child's stderr goes
        faulthandler.enable(sys.stderr)
    sys.argv = [__file__, str(root)]
    # What `python -m` puts first, then PYTHONPATH as it is now (it may have changed since this
    # process started: a missing package made available is a reason to load again).
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [str(root.parent), *(p for p in extra if p not in sys.path)]
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # and for whatever the imports start
    inside = str(root) + os.sep
    for name, module in list(sys.modules.items()):
        if (
            name == NAMESPACE
            or name.startswith(NAMESPACE + ".")
            or ((getattr(module, "__file__", None) or "").startswith(inside))
        ):
            del sys.modules[name]
    importlib.invalidate_caches()
    linecache.clearcache()
    d._registry.reset()
    tasks._pipeline_stack.clear()


def serve(root: Path, files: list[str], every: list[str], out: TextIO) -> None:
    """Import `files` one by one, writing `{"start": file}` and then its result to `out`.

    Args:
        root: The pipelines folder, absolute.
        files: The relative paths to import, in order.
        every: Every pipeline file of the folder, so definitions go to the file that wrote them.
        out: The result channel (line-buffered text), never the user's stdout.
    """
    owned: dict[str, list[Any]] = {}
    pipeline_paths = {os.path.realpath(root / f) for f in every}
    for file in files:
        out.write(json.dumps({"start": file}) + "\n")
        result = load_file(root, file, owned, pipeline_paths)
        out.write(json.dumps(result, default=str) + "\n")
    out.close()


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    request = json.loads(sys.stdin.read())
    # Results go to the original stdout; the user's prints are sent to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull)  # noqa: SIM115 - user code must not wait on our protocol
    serve(root, request["files"], request["all"], out)
    # Threads a module started (even non-daemon ones) must not keep the loader waiting.
    os._exit(0)


if __name__ == "__main__":
    main()
