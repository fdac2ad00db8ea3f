"""One step attempt, in its own process: `python -m engine.executor.worker SPEC EVENTS_FD`.

The coordinator points stdout and stderr at the attempt's log file and hands us a pipe for
structured events (one JSON object per line). We import only the one pipeline module that
defines the step, load upstream values, call the function, store the result atomically, run
the asset's checks, and report exactly one of `finished` or `error` before exiting.

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
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_subreaper = False  # this process adopts its descendants' orphans


class Reporter:
    """Writes events to the coordinator; a vanished coordinator must not fail the step."""

    def __init__(self, fd: int) -> None:
        # User code may spawn processes; they must not hold our end of the pipe open.
        os.set_inheritable(fd, False)
        self._fh = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self.lost = False
        """An event could not be sent: the coordinator is gone."""

    def send(self, event: str, **data: Any) -> None:
        data["e"] = event
        data["t"] = time.time()
        try:
            self._fh.write(json.dumps(data, default=repr) + "\n")
        except (OSError, ValueError):  # BrokenPipeError: nobody reads the other end any more
            self.lost = True


class StepFailure(Exception):
    """A failure the worker explains itself (as opposed to an exception from user code)."""

    def __init__(self, kind: str, message: str, tb: str = "") -> None:
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
        self.reporter.send("log", level=record.levelname, message=record.getMessage()[:2000])


def _find(items: list[Any], cls: type, name: str, attr: str = "name") -> Any:
    for item in reversed(items):
        if isinstance(item, cls) and getattr(item, attr) == name:
            return item
    return None


def _import(spec: dict[str, Any], module_file: str) -> list[Any]:
    from engine.authoring import definitions
    from engine.loading.modules import import_pipeline_module

    definitions._registry.reset()
    try:
        import_pipeline_module(Path(spec["root"]), module_file)
    except BaseException as exc:  # noqa: BLE001 - whatever the module does, it is the step's error
        raise StepFailure(
            "import",
            f"could not import {module_file}: {type(exc).__name__}: {exc}",
            _user_traceback(exc),
        ) from exc
    return definitions._registry.reset()


def _input_io(spec: dict[str, Any], src: dict[str, Any]) -> Any:
    """The IO manager that stored an input: a built-in by name, or the upstream's own object."""
    from engine.authoring import iomanager
    from engine.authoring.definitions import AssetDef

    if src["io"] in iomanager.BUILTIN:
        return iomanager.BUILTIN[src["io"]]
    file = src.get("file")
    items = spec["_items"] if file == spec["file"] else _import(spec, file) if file else []
    upstream = _find(items, AssetDef, src.get("asset", ""))
    if upstream is None:
        raise ValueError(f"cannot find the IO manager {src['io']!r} of {src.get('asset')!r}")
    return iomanager.resolve(upstream.io)


def _load_inputs(spec: dict[str, Any]) -> dict[str, Any]:
    from engine.authoring import iomanager

    values: dict[str, Any] = {}
    for name, src in spec["inputs"].items():
        try:
            io = _input_io(spec, src)
            if src["mode"] == "single":
                values[name] = iomanager.load(io, src["path"])
            else:
                values[name] = {k: iomanager.load(io, p) for k, p in src["items"].items()}
        except StepFailure:
            raise
        except FileNotFoundError as exc:
            # Its value was recorded, but the file is gone (deleted, or a store that lost it).
            raise StepFailure(
                "input",
                f"upstream {name!r} has no stored value: {exc.filename or 'its file'} is gone; "
                "materialize it again",
            ) from exc
        except Exception as exc:  # noqa: BLE001
            raise StepFailure(
                "input", f"could not load input {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    return values


def _call(fn: Any, ctx: Any, takes_context: bool, kwargs: dict[str, Any], what: str) -> Any:
    try:
        return fn(ctx, **kwargs) if takes_context else fn(**kwargs)
    except SystemExit as exc:
        raise StepFailure(
            "exit", f"{what} called sys.exit({exc.code!r})", _user_traceback(exc)
        ) from exc
    except KeyboardInterrupt as exc:
        raise StepFailure("interrupt", f"{what} was interrupted (SIGINT)") from exc
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StepFailure(
            "exception", f"{type(exc).__name__}: {first}".rstrip(": "), _user_traceback(exc)
        ) from exc


def _check_type(fn: Any, value: Any, what: str, log: logging.Logger) -> None:
    from engine.authoring.output_types import OutputTypeError, check_output

    try:
        check_output(fn, value, what, log)
    except OutputTypeError as exc:
        raise StepFailure("type", str(exc)) from None


def _store(io: Any, value: Any, stem: str, what: str) -> tuple[str, int]:
    from engine.authoring import iomanager

    path = f"{stem}.{getattr(io, 'extension', 'bin')}"  # a path, or a URL (values_dir)
    try:
        size = iomanager.store(io, value, path)
    except Exception as exc:  # noqa: BLE001
        raise StepFailure(
            "output",
            f"output of {what} could not be stored: {type(exc).__name__}: {exc}",
            _user_traceback(exc),
        ) from exc
    return str(path), size


def _run_checks(spec: dict[str, Any], value: Any, ctx: Any, reporter: Reporter) -> None:
    from engine.authoring.definitions import CheckDef, CheckResult

    by_file: dict[str, list[Any]] = {}
    for c in spec.get("checks", []):
        by_file.setdefault(c["file"], []).append(c)
    for file, checks in by_file.items():
        items = _import(spec, file) if file != spec["file"] else spec["_items"]
        for c in checks:
            defn = _find(items, CheckDef, c["name"])
            passed, metadata, description, error = False, {}, None, None
            if defn is None or defn.asset != spec["name"]:
                error = f"check {c['name']!r} is no longer defined in {file}"
            else:
                try:
                    kwargs = {spec["name"]: value} if defn.takes_value else {}
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
                "check",
                name=c["name"],
                passed=passed and not error,
                metadata=metadata,
                description=description,
                error=error,
                blocking=c["blocking"],
            )


def run(spec: dict[str, Any], reporter: Reporter) -> None:
    from engine.authoring import iomanager
    from engine.authoring.context import StepContext
    from engine.authoring.definitions import AssetDef, Pipeline

    key = spec["key"]
    log = _setup_logging(key)
    log.addHandler(_WarningsToEvents(reporter))
    partition = spec.get("partition")
    keys = spec.get("partitions")  # a ranged asset's keys, even just one
    if keys is not None:
        partition = keys[0] if len(keys) == 1 else None
    partition_keys = list(keys) if keys is not None else [partition] if partition else []
    ctx = StepContext(
        log=log,
        partition=partition,
        partition_keys=partition_keys,
        run_id=spec["run_id"],
        attempt=spec["attempt"],
        params=spec.get("params") or {},
        key=key,
        home=Path(spec["home"]),
        _on_metadata=lambda data: reporter.send("metadata", data=data),
    )
    items = _import(spec, spec["file"])
    spec["_items"] = items
    if spec["kind"] == "asset":
        defn = _find(items, AssetDef, spec["name"])
        if defn is None:
            raise StepFailure(
                "import", f"asset {spec['name']!r} is no longer defined in {spec['file']}"
            )
        try:
            io = iomanager.resolve(defn.io)
        except ValueError as exc:
            raise StepFailure("output", str(exc)) from exc
        kwargs = _load_inputs(spec)
        fn, takes_context, what = defn.fn, defn.takes_context, f"asset {defn.name!r}"
    else:
        pipeline = _find(items, Pipeline, spec["pipeline"])
        task = pipeline.tasks.get(spec["name"]) if pipeline else None
        if task is None or task.fn is None:
            raise StepFailure(
                "import", f"task {spec['name']!r} is no longer defined in {spec['file']}"
            )
        io = iomanager.resolve("pickle")
        kwargs = _load_inputs(spec)
        fn, takes_context, what = task.fn, task.takes_context, f"task {task.id!r}"
    value = _call(fn, ctx, takes_context, kwargs, what)
    if spec["kind"] == "asset":
        _check_type(fn, value, what, log)  # before storing: downstream never sees a bad value
    if keys is not None:
        from engine.authoring.backfill_policy import RangeOutputError, range_values

        try:
            parts = range_values(value, keys, what)
        except RangeOutputError as exc:
            raise StepFailure("output", str(exc)) from None
        done: list[tuple[str, str, int]] = []
        try:
            for key_, part in parts.items():
                done.append((key_, *_store(io, part, spec["output_stems"][key_], what)))
        except StepFailure:
            # All keys or none: a failed attempt leaves no value without its record.
            for _key, path, _size in done:
                with contextlib.suppress(Exception):
                    iomanager.remove(path)
            raise
        for key_, path, size in done:
            reporter.send("output", path=path, size=size, partition=key_)
    else:
        path, size = _store(io, value, spec["output_stem"], what)
        reporter.send("output", path=path, size=size)
    if spec["kind"] == "asset":
        _run_checks(spec, value, ctx, reporter)


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
    spec = json.loads(Path(spec_path).read_text())
    reporter.send("started", pid=os.getpid())
    try:
        run(spec, reporter)
    except StepFailure as exc:
        # The traceback, then the coordinator's last line says why the step failed.
        if exc.tb:
            sys.stderr.write(exc.tb)
        sys.stderr.flush()
        reporter.send(
            "error", kind=exc.kind, message=exc.message, traceback=exc.tb, peak_rss=_peak_rss(),
            children=_children(),
        )  # fmt: skip
        code = 1
        cause = exc.__cause__
        if isinstance(cause, SystemExit) and isinstance(cause.code, int) and 0 < cause.code < 256:
            code = cause.code  # keep the user's exit code visible in the step row
        _exit(reporter, code)
    sys.stdout.flush()
    sys.stderr.flush()
    reporter.send("finished", peak_rss=_peak_rss(), children=_children())
    # Skip interpreter teardown (atexit of user libraries, GC of big values): the result is
    # stored and reported; nothing else the process does can matter.
    _exit(reporter, 0)


if __name__ == "__main__":
    main()
