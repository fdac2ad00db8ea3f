"""Starting a step attempt's process: its log file, its spec, its events pipe, its session.

The same start on every executor: the local one (a new interpreter when there is no fork
server, and the fork server's children get their log file and pipe from `open_io`), and a Dask
worker (`dask_task`), which runs the command that the coordinator's `Launch` names behind a
guard of its own. So this module touches no storage: a Dask worker imports it, and must never
pay for SQLModel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.protocol.worker import WorkerSpec

WORKER_MODULE = "engine.executor.worker"


def worker_argv() -> list[str]:
    """The command of a Python step: this machine's interpreter running the worker module (the
    spec's path and the events pipe's fd follow)."""
    return [sys.executable, "-u", "-m", WORKER_MODULE]


@dataclass
class Launch:
    """What the coordinator needs to know about a step attempt it is about to start."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    log_path: Path
    spec: WorkerSpec | None  # None for shell steps: no worker, no events
    timeout: float | None
    memory_limit: int | None
    pool: str | None
    partition: str | None = None
    code_version: str | None = None
    input_ids: list[int] = field(default_factory=list)


def open_io(
    log_path: Path, spec: WorkerSpec | None, spec_path: Path, argv: Sequence[str]
) -> tuple[int, int | None, int | None]:
    """Open the attempt's log file and, for Python steps, write the spec and make the events
    pipe; a shell step's log starts with its command (the last of `argv`). Returns (log fd,
    events read fd, events write fd); the caller closes them."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if spec is None:
        os.write(log_fd, f"$ {argv[-1]}\n".encode())
        return log_fd, None, None
    try:
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec))
        read_fd, write_fd = os.pipe()
    except BaseException:
        os.close(log_fd)
        raise
    return log_fd, read_fd, write_fd


def start(
    argv: Sequence[str],
    spec: WorkerSpec | None,
    spec_path: Path,
    log_path: Path,
    cwd: str,
    env: dict[str, str],
    guard: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start the attempt's process in a session of its own (so its whole tree can be
    signalled), stdout and stderr to its log file. A Python step gets its spec's path and the
    events pipe's fd as its last arguments; `guard` is a command that runs first and then
    becomes the step's (a Dask worker's). Returns the process and the read end of its events
    pipe (None for a shell step)."""
    log_fd, read_fd, write_fd = open_io(log_path, spec, spec_path, argv)
    try:
        command = [*guard, *argv]
        if write_fd is not None:
            command += [str(spec_path), str(write_fd)]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            cwd=cwd,
            env=env,
            pass_fds=(write_fd,) if write_fd is not None else (),
            start_new_session=True,  # its own process group: we can signal the whole tree
        )
    except BaseException:
        if read_fd is not None:
            os.close(read_fd)
        raise
    finally:
        os.close(log_fd)
        if write_fd is not None:
            os.close(write_fd)
    return proc, read_fd
