"""Load pipeline files into a manifest, in a child process, with a time limit per file.

User code never runs in the engine's process: a syntax error, an exception at import, or an
import that hangs costs that one file. Results are cached in the home folder by each file's
size, mtime and content hash, so most commands load nothing at all and a reload imports only
the files that changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.loading import validate
from engine.loading.manifest import FileError, FileInfo, Manifest
from engine.loading.modules import module_name_for

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
CACHE_NAME = "manifest-cache.json"
# Bump when the shape or the meaning of a file's result changes, so old caches are ignored
# (6: code versions no longer come from inspect.getsource, and can differ for a few functions;
# 7: assets carry their backfill policy; 8: sensors carry their settle time; 9: tasks carry
# their trigger rule, branch, short-circuit and mapping; 10: resources, and assets' typed
# config; 11: assets' automation condition).
CACHE_FORMAT = 11
# Results worth importing again next time: the cause may be outside the file (a package being
# installed, a slow machine), so its unchanged content proves nothing.
RETRY_KINDS = frozenset({"import", "crash", "timeout"})


def discover(root: Path) -> tuple[list[str], list[str]]:
    """Pipeline files and helper files under `root`, as sorted relative paths.

    Files and folders whose names start with `_` or `.` are helpers: never loaded as pipelines
    themselves, but a change to one reloads everything (a pipeline may import it).
    """
    pipelines: list[str] = []
    helpers: list[str] = []
    if not root.is_dir():
        return pipelines, helpers
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(n for n in dirnames if n != "__pycache__" and not n.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        hidden_dir = any(part.startswith("_") for part in rel_dir.parts)
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("."):
                continue
            rel = str(rel_dir / name) if rel_dir.parts else name
            (helpers if hidden_dir or name.startswith("_") else pipelines).append(rel)
    return pipelines, helpers


def fingerprint(root: Path, rel: str) -> FileInfo:
    path = root / rel
    st = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return FileInfo(
        file=rel,
        module=module_name_for(rel),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        sha256=digest,
    )


@dataclass
class _Cache:
    root: str
    helpers: str
    results: dict[str, dict[str, Any]]  # rel -> {"sha256": ..., "result": ...}


_SECTIONS = ("assets", "checks", "pipelines", "schedules", "sensors")


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return False
    result = entry.get("result")
    if not isinstance(result, dict) or "file" not in result:
        return False
    if result.get("error") is not None:
        return isinstance(result["error"], dict)
    return all(isinstance(result.get(k), list) for k in _SECTIONS)


def _read_cache(path: Path) -> _Cache | None:
    """The cache, or None when it is missing, foreign, old or damaged in any way."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    results = data.get("results")
    if not isinstance(results, dict) or not isinstance(data.get("helpers"), str):
        return None
    return _Cache(
        root=str(data.get("root")),
        helpers=data["helpers"],
        results={k: v for k, v in results.items() if _valid_entry(v)},
    )


def _write_cache(path: Path, cache: _Cache) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the home, the user's only
        tmp.write_text(
            json.dumps(
                {
                    "format": CACHE_FORMAT,
                    "root": cache.root,
                    "helpers": cache.helpers,
                    "results": cache.results,
                }
            )
        )
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home still loads, just without the cache
        log.warning("could not write the manifest cache %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def import_files(
    root: Path, files: list[str], timeout: float, every: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Import `files` in child processes; a file that hangs past `timeout` is an error.

    `every` lists all pipeline files of the folder (default: `files`), so definitions are
    attributed to the right file even when one imports another.
    """
    results: dict[str, dict[str, Any]] = {}
    pending = list(files)
    while pending:
        results.update(_run_child(root, pending, timeout, every or files))
        pending = [f for f in pending if f not in results]
    return results


class _Child:
    """A running loader child: its pid (also its process group) and the read end of its
    result channel."""

    def __init__(self, pid: int, fd: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.fd = fd
        self._popen = popen
        self._code: int | None = None  # once the forked child is reaped

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code (negative: killed by that signal), or None if still running."""
        if self._popen is not None:
            try:
                return self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._code is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:  # reaped by someone else; its code is lost (as Popen)
                pid, status = self.pid, 0
            if pid:
                self._code = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() >= deadline:
                return None
            else:
                time.sleep(0.002)
        return self._code

    def kill(self) -> None:
        """Kill the child and everything it started, reap it, close the channel."""
        # Whatever the imports started (a process, a server) dies with the child's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        popen = self._popen
        reaped = self._code is not None or (popen is not None and popen.returncode is not None)
        if not reaped:  # (a forked child may not have made its group yet)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
        self.wait()
        if self._popen is not None and self._popen.stdout is not None:
            self._popen.stdout.close()
        else:
            os.close(self.fd)


def _can_fork() -> bool:
    """Whether this process may fork the loader child instead of starting an interpreter.

    A fork skips the interpreter's start and the engine's imports (~80 ms of a cold `dagtop
    check`). Only on Linux, and only with no other thread: a thread holding a lock at the
    moment of the fork (the TUI's, the daemon's) would leave it held forever in the child.
    """
    return (
        sys.platform == "linux"
        and threading.active_count() == 1
        and threading.current_thread() is threading.main_thread()
    )


def _start_child(root: Path, files: list[str], every: list[str]) -> _Child:
    if _can_fork():
        return _fork_child(root, files, every)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.loading.loader_child", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(root.parent),
        env=env,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"files": files, "all": every}).encode())
    proc.stdin.close()
    return _Child(proc.pid, proc.stdout.fileno(), proc)


def _fork_child(root: Path, files: list[str], every: list[str]) -> _Child:
    from engine.loading import loader_child

    read, write = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would write our pending output too
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid:
        os.close(write)
        return _Child(pid, read)
    try:
        os.close(read)
        loader_child.become_fresh(root, write)
        loader_child.serve(root, files, every, os.fdopen(write, "w", buffering=1))
    finally:
        # Never return into the parent's code; threads an import started must not keep us.
        os._exit(0)


def _run_child(
    root: Path, files: list[str], timeout: float, every: list[str]
) -> dict[str, dict[str, Any]]:
    child = _start_child(root, files, every)
    results: dict[str, dict[str, Any]] = {}
    current: str | None = None
    deadline = time.monotonic() + timeout
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(child.fd, selectors.EVENT_READ)
    try:
        while True:
            wait = deadline - time.monotonic()
            if current is not None and wait <= 0:
                results[current] = _failure(
                    current, "timeout", f"import took longer than {timeout:g} s"
                )
                return results
            if not sel.select(timeout=max(wait, 0.01) if current else timeout):
                if current is None:
                    continue
                continue
            chunk = os.read(child.fd, 1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    # Something in user code wrote to our pipe; the file it came from ends
                    # without a result and is reported as a crash below.
                    log.warning("ignoring garbage on the loader's result pipe")
                    continue
                if not isinstance(msg, dict) or not isinstance(
                    msg.get("start", msg.get("file")), str
                ):
                    continue
                if "start" in msg:
                    current = msg["start"]
                    deadline = time.monotonic() + timeout
                else:
                    results[msg["file"]] = msg
                    current = None
        code = child.wait(timeout=max(timeout, 1.0))
        if code is None:
            code = -9  # it answered everything but would not exit: killed below
        if current is not None:
            from engine.processes import describe_exit

            results[current] = _failure(
                current, "crash", f"the import crashed the loader: {describe_exit(code)}"
            )
        elif not results and files:
            for f in files:
                results[f] = _failure(f, "crash", f"the loader could not start (exit code {code})")
        return results
    finally:
        sel.close()
        child.kill()


def _failure(file: str, kind: str, message: str) -> dict[str, Any]:
    return {
        "file": file,
        "error": {"file": file, "kind": kind, "message": message, "traceback": "", "line": None},
    }


def load(
    root: Path,
    cache_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    files: Iterable[str] | None = None,
) -> Manifest:
    """Load every pipeline file under `root` into a validated manifest.

    Args:
        root: The pipelines folder.
        cache_dir: Where to keep the manifest cache (the home folder); None disables it.
        timeout: Seconds one file's import may take.
        files: Only these relative paths (default: everything discovered).

    Returns:
        The manifest; broken files are in `manifest.errors`, never raised.
    """
    root = root.resolve()
    pipeline_files, helper_files = discover(root)
    clashes = _module_clashes(pipeline_files)
    if files is not None:
        wanted = set(files)
        pipeline_files = [f for f in pipeline_files if f in wanted]
    infos = {rel: fingerprint(root, rel) for rel in pipeline_files}
    helpers = hashlib.sha256(
        "".join(f"{h}:{fingerprint(root, h).sha256}\n" for h in helper_files).encode()
    ).hexdigest()
    cache_path = cache_dir / CACHE_NAME if cache_dir else None
    cache = _read_cache(cache_path) if cache_path else None
    fresh = cache is not None and cache.helpers == helpers and cache.root == str(root)
    reusable = cache.results if cache is not None and fresh else {}
    results: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for rel, info in infos.items():
        hit = reusable.get(rel)
        if hit and hit["sha256"] == info.sha256 and _kind(hit["result"]) not in RETRY_KINDS:
            results[rel] = hit["result"]
        else:
            stale.append(rel)
    for rel, other in clashes.items():
        results[rel] = _failure(
            rel, "name-clash", f"{rel} and {other} would both import as {module_name_for(rel)}: "
            "rename one",
        )  # fmt: skip
    stale = [rel for rel in stale if rel not in clashes]
    if stale:
        started = time.perf_counter()
        results.update(import_files(root, stale, timeout, list(infos)))
        log.info(
            "imported %d pipeline file(s) in %.3f s", len(stale), time.perf_counter() - started
        )
        if cache_path:
            merged = dict(reusable) if files is not None else {}
            merged.update(
                {rel: {"sha256": infos[rel].sha256, "result": results[rel]} for rel in infos}
            )
            _write_cache(cache_path, _Cache(root=str(root), helpers=helpers, results=merged))
    return validate.build_manifest(root, infos, results, _resource_settings(root.parent))


def _resource_settings(project: Path) -> validate.ResourceSettings | None:
    """The project's `[resources.NAME]` tables; None when its settings do not read (that
    error is reported where the settings are read for themselves)."""
    from engine.errors import ConfigError
    from engine.loading.config import load_config

    try:
        config = load_config(project)
    except ConfigError:
        return None
    return validate.ResourceSettings(
        source=config.source or "dagtop.toml",
        tables=config.resources,
        lines=config.resource_lines,
    )


def _module_clashes(files: list[str]) -> dict[str, str]:
    """Files whose module names collide (`sub/a.py` and `sub__a.py`), each with the other."""
    seen: dict[str, str] = {}
    clashes: dict[str, str] = {}
    for rel in files:
        name = module_name_for(rel)
        if name in seen:
            clashes[rel], clashes[seen[name]] = seen[name], rel
        else:
            seen[name] = rel
    return clashes


def _kind(result: dict[str, Any]) -> str | None:
    err = result.get("error")
    return err["kind"] if err else None


def format_errors(manifest: Manifest) -> list[str]:
    return [f"{e.file}: {e.kind}: {e.message}" for e in manifest.errors.values()]


__all__ = ["DEFAULT_TIMEOUT", "FileError", "discover", "format_errors", "load"]
