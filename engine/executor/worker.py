"""One step attempt, in its own process: `python -m engine.executor.worker SPEC EVENTS_FD`.

The coordinator points stdout and stderr at the attempt's log file and hands us a pipe for
structured events (one JSON object per line; `engine.protocol` has the spec and the events).
We import only the one pipeline module that defines the step, load upstream values, call the
function, store the result atomically, run the asset's checks, and report exactly one of
`finished` or `error` before exiting.

This module must stay cheap to import: no database, no psutil, no UI. It is on every step's
critical path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.protocol.worker import EventKind, FailureKind, encode_event

if TYPE_CHECKING:
    from engine.authoring.resources import OpenResources
    from engine.protocol.worker import (
        AssetStepSpec,
        CheckRef,
        Event,
        Input,
        OutputEvent,
        ResultEvent,
        TaskStepSpec,
        WorkerSpec,
    )

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_subreaper = False  # this process adopts its descendants' orphans
_opened: OpenResources | None = None  # the resources built for the step, torn down at its end


class Reporter:
    """Writes events to the coordinator; a vanished coordinator must not fail the step."""

    def __init__(self, fd: int) -> None:
        # User code may spawn processes; they must not hold our end of the pipe open.
        os.set_inheritable(fd, False)
        self._fh = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self.lost = False
        """An event could not be sent: the coordinator is gone."""

    def send(self, event: Event) -> None:
        try:
            self._fh.write(encode_event(event))
        except (OSError, ValueError):  # BrokenPipeError: nobody reads the other end any more
            self.lost = True


class StepFailure(Exception):
    """A failure the worker explains itself (as opposed to an exception from user code)."""

    def __init__(self, kind: FailureKind, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.tb = tb


def _user_traceback(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(os.path.dirname(__file__))
    keep = [f for f in frames if not f.filename.startswith(here)] or frames
    return "".join(
        [
            "Traceback (most recent call last):\n",
            *traceback.format_list(keep),
            *traceback.format_exception_only(type(exc), exc),
        ]
    )


def _setup_logging(key: str) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", "%H:%M:%S")
    )
    logger = logging.getLogger(f"dagtop.step.{key}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False
    return logger


class _WarningsToEvents(logging.Handler):
    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.WARNING)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        self.reporter.send(
            {
                "e": EventKind.LOG, "t": time.time(), "level": record.levelname,
                "message": record.getMessage()[:2000],
            }
        )  # fmt: skip


def _find(items: list[Any], cls: type, name: str, attr: str = "name") -> Any:
    for item in reversed(items):
        if isinstance(item, cls) and getattr(item, attr) == name:
            return item
    return None


def _import(root: str, module_file: str) -> list[Any]:
    """What one pipeline file defines (imported again: a file may be the step's own, or one
    that an input or a check comes from)."""
    from engine.authoring import definitions
    from engine.loading.modules import import_pipeline_module

    definitions._registry.reset()
    try:
        import_pipeline_module(Path(root), module_file)
    except BaseException as exc:  # noqa: BLE001 - whatever the module does, it is the step's error
        raise StepFailure(
            FailureKind.IMPORT,
            f"could not import {module_file}: {type(exc).__name__}: {exc}",
            _user_traceback(exc),
        ) from exc
    return definitions._registry.reset()


def _input_io(src: Input, own_file: str, own_items: list[Any], root: str) -> Any:
    """The IO manager that stored an input: a built-in by name, or the upstream's own object
    (found in its file: the step's own, already imported, or another)."""
    from engine.authoring import iomanager
    from engine.authoring.definitions import AssetDef

    if src["io"] in iomanager.BUILTIN:
        return iomanager.BUILTIN[src["io"]]
    if src["mode"] == "item" or src["mode"] == "list":
        raise ValueError(f"a task's value has no IO manager {src['io']!r}")  # always pickle
    file = src.get("file")
    items = own_items if file == own_file else _import(root, file) if file else []
    upstream = _find(items, AssetDef, src.get("asset", ""))
    if upstream is None:
        raise ValueError(f"cannot find the IO manager {src['io']!r} of {src.get('asset')!r}")
    return iomanager.resolve(upstream.io)


def _load_inputs(spec: WorkerSpec, items: list[Any]) -> dict[str, Any]:
    from engine.authoring import iomanager

    values: dict[str, Any] = {}
    for name, src in spec["inputs"].items():
        try:
            io = _input_io(src, spec["file"], items, spec["root"])
            if src["mode"] == "single":
                values[name] = iomanager.load(io, src["path"])
            elif src["mode"] == "item":
                values[name] = iomanager.load(io, src["path"])[src["index"]]
            elif src["mode"] == "list":
                values[name] = [iomanager.load(io, p) for p in src["paths"]]
            else:
                values[name] = {k: iomanager.load(io, p) for k, p in src["items"].items()}
        except StepFailure:
            raise
        except FileNotFoundError as exc:
            # Its value was recorded, but the file is gone (deleted, or a store that lost it).
            raise StepFailure(
                FailureKind.INPUT,
                f"upstream {name!r} has no stored value: {exc.filename or 'its file'} is gone; "
                "materialize it again",
            ) from exc
        except Exception as exc:  # noqa: BLE001
            raise StepFailure(
                FailureKind.INPUT, f"could not load input {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    return values


def _call(fn: Any, ctx: Any, takes_context: bool, kwargs: dict[str, Any], what: str) -> Any:
    try:
        return fn(ctx, **kwargs) if takes_context else fn(**kwargs)
    except SystemExit as exc:
        raise StepFailure(
            FailureKind.EXIT, f"{what} called sys.exit({exc.code!r})", _user_traceback(exc)
        ) from exc
    except KeyboardInterrupt as exc:
        raise StepFailure(FailureKind.INTERRUPT, f"{what} was interrupted (SIGINT)") from exc
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StepFailure(
            FailureKind.EXCEPTION,
            f"{type(exc).__name__}: {first}".rstrip(": "),
            _user_traceback(exc),
        ) from exc


def _check_type(fn: Any, value: Any, what: str, log: logging.Logger) -> None:
    from engine.authoring.output_types import OutputTypeError, check_output

    try:
        check_output(fn, value, what, log)
    except OutputTypeError as exc:
        raise StepFailure(FailureKind.TYPE, str(exc)) from None


def _store(io: Any, value: Any, stem: str, what: str) -> tuple[str, int]:
    from engine.authoring import iomanager

    path = f"{stem}.{getattr(io, 'extension', 'bin')}"  # a path, or a URL (values_dir)
    try:
        size = iomanager.store(io, value, path)
    except Exception as exc:  # noqa: BLE001
        raise StepFailure(
            FailureKind.OUTPUT,
            f"output of {what} could not be stored: {type(exc).__name__}: {exc}",
            _user_traceback(exc),
        ) from exc
    return str(path), size


def _run_checks(
    spec: AssetStepSpec, items: list[Any], value: Any, ctx: Any, reporter: Reporter
) -> None:
    from engine.authoring.definitions import CheckDef, CheckResult

    by_file: dict[str, list[CheckRef]] = {}
    for c in spec["checks"]:
        by_file.setdefault(c["file"], []).append(c)
    for file, checks in by_file.items():
        in_file = _import(spec["root"], file) if file != spec["file"] else items
        for c in checks:
            defn = _find(in_file, CheckDef, c["name"])
            passed, metadata, description, error = False, {}, None, None
            if defn is None or defn.asset != spec["key"]:
                error = f"check {c['name']!r} is no longer defined in {file}"
            else:
                try:
                    kwargs = {spec["key"]: value} if defn.takes_value else {}
                    result = defn.fn(ctx, **kwargs) if defn.takes_context else defn.fn(**kwargs)
                    if isinstance(result, CheckResult):
                        passed, metadata = bool(result.passed), dict(result.metadata or {})
                        description = result.description
                    elif isinstance(result, bool):
                        passed = result
                    else:
                        error = f"a check must return a bool or CheckResult, got {result!r:.80}"
                except Exception as exc:  # noqa: BLE001
                    error = f"{type(exc).__name__}: {exc}"
                    ctx.log.error("check %s raised:\n%s", c["name"], _user_traceback(exc))
            state = "passed" if passed and not error else "FAILED"
            ctx.log.info("check %s %s%s", c["name"], state, f": {error}" if error else "")
            reporter.send(
                {
                    "e": EventKind.CHECK, "t": time.time(), "name": c["name"],
                    "passed": passed and not error, "metadata": metadata,
                    "description": description, "error": error, "blocking": c["blocking"],
                }
            )  # fmt: skip


def _task_result(spec: TaskStepSpec, value: Any, what: str) -> ResultEvent | None:
    """The `result` event a task's return value makes, when the coordinator needs one: the
    ids a branch chose, whether a short-circuit passes, the length of a list mapped over.

    Raises:
        StepFailure: a branch returned something other than ids of its direct downstream
            tasks, or a task mapped over returned something other than a list.
    """
    wanted = spec.get("result")
    result: list[str] | bool | int
    if wanted == "short_circuit":
        result = bool(value)
    elif wanted == "branch":
        chosen = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(chosen, list | tuple | set | frozenset) or not all(
            isinstance(x, str) for x in chosen
        ):
            raise StepFailure(
                FailureKind.OUTPUT,
                f"{what} is a branch: it must return a task id, a list of ids or None, "
                f"not {type(value).__name__}",
            )
        downstream = spec.get("downstream", [])
        unknown = sorted(set(chosen) - set(downstream))
        if unknown:
            raise StepFailure(
                FailureKind.OUTPUT,
                f"{what} chose {', '.join(map(repr, unknown))}, which is not a direct downstream "
                f"task (one of: {', '.join(downstream) or 'none'})",
            )
        result = list(dict.fromkeys(chosen))
    elif wanted == "count":
        if not isinstance(value, list | tuple):
            raise StepFailure(
                FailureKind.OUTPUT,
                f"{what} is mapped over: it must return a list, not {type(value).__name__}",
            )
        result = len(value)
    else:
        return None
    return {"e": EventKind.RESULT, "t": time.time(), "value": result}


def _open_resources(spec: AssetStepSpec, items: list[Any], ctx: Any) -> dict[str, Any]:
    """Build the resources the step names (its spec lists only those), once each, in this
    process; their teardowns run when the step is over (`_close_resources`)."""
    global _opened
    from engine.authoring.definitions import ResourceDef
    from engine.authoring.resources import OpenResources, ResourceBuildError

    _opened = opened = OpenResources(ctx.log, ctx.home, ctx.shared_dir)
    for name, ref in spec.get("resources", {}).items():
        in_file = items if ref["file"] == spec["file"] else _import(spec["root"], ref["file"])
        defn = _find(in_file, ResourceDef, name)
        if defn is None:
            raise StepFailure(
                FailureKind.RESOURCE, f"resource {name!r} is no longer defined in {ref['file']}"
            )
        try:
            opened.build(defn, ref["config"])
        except ResourceBuildError as exc:
            tb = _user_traceback(exc.cause) if exc.cause is not None else ""
            raise StepFailure(FailureKind.RESOURCE, str(exc), tb) from exc
    ctx.resources.update(opened.values)
    return opened.values


def _close_resources() -> None:
    if _opened is not None:
        _opened.close()


def _typed_config(fn: Any, param: str, params: dict[str, Any]) -> Any:
    """The step's typed config, from the run's params (checked when the run was planned)."""
    from engine.authoring.typed_config import config_param, instantiate

    try:
        found = config_param(fn)
        if found is None or found[0] != param:
            raise TypeError(f"parameter {param!r} no longer has a typed config")
        return instantiate(found[1], params)
    except Exception as exc:  # noqa: BLE001 - the class refused the values, or is gone
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StepFailure(
            FailureKind.CONFIG, f"config {param!r}: {type(exc).__name__}: {first}".rstrip(": ")
        ) from exc


def _output(path: str, size: int, partition: str | None = None) -> OutputEvent:
    event: OutputEvent = {"e": EventKind.OUTPUT, "t": time.time(), "path": path, "size": size}
    if partition is not None:
        event["partition"] = partition
    return event


def run(spec: WorkerSpec, reporter: Reporter) -> None:
    from engine.authoring import iomanager
    from engine.authoring.context import StepContext
    from engine.authoring.definitions import AssetDef

    key = spec["key"]
    log = _setup_logging(key)
    log.addHandler(_WarningsToEvents(reporter))
    partition = spec["partition"]
    keys = spec.get("partitions") if spec["kind"] == "asset" else None  # a range, even of one
    if keys is not None:
        partition = keys[0] if len(keys) == 1 else None
    partition_keys = list(keys) if keys is not None else [partition] if partition else []
    ctx = StepContext(
        log=log,
        partition=partition,
        partition_keys=partition_keys,
        run_id=spec["run_id"],
        attempt=spec["attempt"],
        params=spec["params"] or {},
        key=key,
        home=Path(spec["home"]),
        shared_dir=_shared_dir(spec.get("shared_dir")),
        _on_metadata=lambda data: reporter.send(
            {"e": EventKind.METADATA, "t": time.time(), "data": data}
        ),
        _on_partitions=lambda name, keys: reporter.send(
            {"e": EventKind.PARTITIONS, "t": time.time(), "name": name, "keys": keys}
        ),
    )
    items = _import(spec["root"], spec["file"])
    if spec["kind"] == "asset":
        defn = _find(items, AssetDef, key)
        if defn is None:
            raise StepFailure(
                FailureKind.IMPORT, f"asset {key!r} is no longer defined in {spec['file']}"
            )
        try:
            io = iomanager.resolve(defn.io)
        except ValueError as exc:
            raise StepFailure(FailureKind.OUTPUT, str(exc)) from exc
        kwargs = _load_inputs(spec, items)
        if "config_param" in spec:
            kwargs[spec["config_param"]] = _typed_config(defn.fn, spec["config_param"], ctx.params)
        if "resources" in spec:
            kwargs.update(_open_resources(spec, items, ctx))
        fn, takes_context, what = defn.fn, defn.takes_context, f"asset {defn.name!r}"
        if defn.partitions is not None and defn.partitions.kind == "multi" and partition:
            # The pipeline file imported MultiPartitions already: this import costs nothing.
            from engine.authoring.multi_partitions import dimensions_of

            ctx.dimensions = dimensions_of(defn.partitions, partition)
    else:
        # Only here: a file of assets alone never imports the task module (~1 ms a step).
        from engine.authoring.tasks import Pipeline

        pipeline = _find(items, Pipeline, spec["pipeline"])
        task = pipeline.tasks.get(key.partition("[")[0]) if pipeline else None  # process[0]
        if task is None or task.fn is None:
            raise StepFailure(
                FailureKind.IMPORT, f"task {key!r} is no longer defined in {spec['file']}"
            )
        io = iomanager.resolve("pickle")
        kwargs = _load_inputs(spec, items)
        fn, takes_context, what = task.fn, task.takes_context, f"task {task.id!r}"
    value = _call(fn, ctx, takes_context, kwargs, what)
    result = None
    if spec["kind"] == "asset":
        _check_type(fn, value, what, log)  # before storing: downstream never sees a bad value
    else:
        result = _task_result(spec, value, what)  # before storing too: a bad one fails the step
    if spec["kind"] == "asset" and keys is not None:
        from engine.authoring.backfill_policy import RangeOutputError, range_values

        try:
            parts = range_values(value, keys, what)
        except RangeOutputError as exc:
            raise StepFailure(FailureKind.OUTPUT, str(exc)) from None
        stems = spec.get("output_stems", {})
        done: list[tuple[str, str, int]] = []
        try:
            for key_, part in parts.items():
                done.append((key_, *_store(io, part, stems[key_], what)))
        except StepFailure:
            # All keys or none: a failed attempt leaves no value without its record.
            for _key, path, _size in done:
                with contextlib.suppress(Exception):
                    iomanager.remove(path)
            raise
        for key_, path, size in done:
            reporter.send(_output(path, size, key_))
    else:
        path, size = _store(io, value, spec["output_stem"], what)
        reporter.send(_output(path, size))
    if result is not None:
        reporter.send(result)
    if spec["kind"] == "asset":
        _run_checks(spec, items, value, ctx, reporter)


def _peak_rss() -> int | None:
    """This process's peak RSS since exec (VmHWM), which sampling can miss on short steps."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _become_subreaper() -> None:
    """Adopt the orphans of our descendants (Linux), instead of init.

    A process the step started whose parent exited then stays in the step's tree, where the
    monitor finds it and where `_children` names it at the end; without this, a helper that
    a short-lived shell put in a session of its own would be nobody's. (The cost: such an
    orphan that exits stays a zombie under us until the step ends.)
    """
    global _subreaper
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes  # already imported by the fork server: free in its children

        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (ImportError, AttributeError, OSError):
        pass


def _children() -> list[int] | None:
    """The pids of our children now, from /proc; None where that cannot be known.

    As a subreaper, no child means no descendant at all (an orphan would be our child): the
    coordinator then need not look for leftovers. Not when a thread of the step still runs:
    it could start a process between this look and our exit.
    """
    if not _subreaper:
        return None
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
        if len(tasks) > 1:
            return None
        for tid in tasks:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                pids += [int(pid) for pid in fh.read().split()]
    except (OSError, ValueError):
        return None
    return pids


def _exit(reporter: Reporter, code: int) -> None:
    """Exit now. When the coordinator is gone (it crashed), nobody will end what the step
    left running: end it here first (SIGTERM, a grace period, SIGKILL)."""
    if reporter.lost:
        try:
            import psutil

            from engine.executor.leftovers import Leftovers

            left = Leftovers(psutil.Process().children(recursive=True))
            if left.procs:
                left.wait()
                sys.stderr.write(left.line() + "\n")
                sys.stderr.flush()
        except Exception:  # noqa: BLE001 - exiting matters more
            pass
    os._exit(code)


def main(spec_path: str | None = None, fd: int | None = None) -> None:
    """Run one attempt and exit the process (never returns).

    The last event (`finished` or `error`) names the children the step left (`children`):
    the coordinator ends them, with the rest of what the step started, once we are gone.
    """
    if spec_path is None or fd is None:
        spec_path, fd = sys.argv[1], int(sys.argv[2])
    _become_subreaper()
    reporter = Reporter(fd)
    spec: WorkerSpec = json.loads(Path(spec_path).read_text())
    reporter.send({"e": EventKind.STARTED, "t": time.time(), "pid": os.getpid()})
    try:
        try:
            run(spec, reporter)
        finally:
            _close_resources()  # after the step, whether it succeeded or failed
    except StepFailure as exc:
        # The traceback, then the coordinator's last line says why the step failed.
        if exc.tb:
            sys.stderr.write(exc.tb)
        sys.stderr.flush()
        reporter.send(
            {
                "e": EventKind.ERROR, "t": time.time(), "kind": exc.kind, "message": exc.message,
                "traceback": exc.tb, "peak_rss": _peak_rss(), "children": _children(),
            }
        )  # fmt: skip
        code = 1
        cause = exc.__cause__
        if isinstance(cause, SystemExit) and isinstance(cause.code, int) and 0 < cause.code < 256:
            code = cause.code  # keep the user's exit code visible in the step row
        _exit(reporter, code)
    sys.stdout.flush()
    sys.stderr.flush()
    reporter.send(
        {
            "e": EventKind.FINISHED,
            "t": time.time(),
            "peak_rss": _peak_rss(),
            "children": _children(),
        }
    )
    # Skip interpreter teardown (atexit of user libraries, GC of big values): the result is
    # stored and reported; nothing else the process does can matter.
    _exit(reporter, 0)


def _shared_dir(location: str | None) -> Path | str:
    """`context.shared_dir`: a Path for a folder, the URL itself for an fsspec store."""
    if not location:
        return ""  # the context falls back to the home folder
    return location if "://" in location else Path(location)


if __name__ == "__main__":
    main()
