"""Local attempt processes: how they start, and how their exit is learned.

A step that runs a pipeline function is forked from the warm fork server (`forkserver.py`) when
there is one, else started as a new interpreter, as a shell command step always is. A process
the coordinator started itself is reaped for its exit status and CPU time; a fork server's
child is reported by the server. When the server fails, `LocalProcesses` stops using it and
tells the coordinator, which then watches the orphaned children by pidfd.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.executor import spawn as spawning
from engine.executor.forkserver import ForkServer
from engine.executor.spawn import Launch
from engine.processes import same_process_alive

if TYPE_CHECKING:
    from engine.protocol.worker import ExitReport

# What happens here is the coordinator's doing: its log says so under its name.
log = logging.getLogger("engine.executor.coordinator")

HAS_PIDFD = hasattr(os, "pidfd_open")


class LocalProcesses:
    """Starts local attempts; owns the fork server and its place in the coordinator's selector.

    Args:
        project: The project folder, the fork server's working directory.
        sel: The coordinator's selector; the server's socket is registered as
            `("forkserver", None)` while there is one.
        server: A fork server the caller already started, or None to start one on first use.
        on_lost: Called after a failed server was dropped (its children are orphans now).
    """

    def __init__(
        self,
        project: Path,
        sel: selectors.BaseSelector,
        server: ForkServer | None,
        on_lost: Callable[[], None],
    ) -> None:
        self.project = project
        self.use_forkserver = os.environ.get("DAGTOP_FORKSERVER", "1") != "0"
        self._sel = sel
        self._server = server
        self._on_lost = on_lost
        if server is not None:
            self._sel.register(server.fileno(), selectors.EVENT_READ, ("forkserver", None))

    def spawn(
        self, launch: Launch, spec_path: Path, attempt_id: int
    ) -> tuple[int, subprocess.Popen[bytes] | None, int | None]:
        """Start an attempt: forked from the warm server when possible, else a new interpreter.

        Returns its pid, its Popen (None when the fork server is its parent) and the read end of
        its event pipe.
        """
        server = self._forkserver() if launch.spec is not None else None
        if server is not None:
            log_fd, read_fd, write_fd = spawning.open_io(
                launch.log_path, launch.spec, spec_path, launch.argv
            )
            assert read_fd is not None and write_fd is not None
            try:
                pid = server.spawn(
                    attempt_id, str(spec_path), launch.cwd, launch.env, log_fd, write_fd
                )
                return pid, None, read_fd
            except OSError as exc:
                log.warning("fork server failed (%s); starting workers as new processes", exc)
                self.drop()
                os.close(read_fd)
            finally:
                os.close(log_fd)
                os.close(write_fd)
        popen, events_fd = spawning.start(
            launch.argv, launch.spec, spec_path, launch.log_path, launch.cwd, launch.env
        )
        return popen.pid, popen, events_fd

    def exits(self) -> list[ExitReport]:
        """The fork server's exit reports available now (its socket is readable)."""
        assert self._server is not None
        try:
            return self._server.read_exits()
        except OSError:
            self.drop()
            return []

    def drop(self) -> None:
        """The server is gone: stop using it, and tell the coordinator."""
        if self._server is None:
            return
        self._sel.unregister(self._server.fileno())
        self._server.close()
        self._server = None
        self.use_forkserver = False
        self._on_lost()

    def close(self) -> None:
        """Stop the fork server, if there is one (its running children are not touched)."""
        if self._server is not None:
            self._sel.unregister(self._server.fileno())
            self._server.close()
            self._server = None

    def _forkserver(self) -> ForkServer | None:
        if not self.use_forkserver:
            return None
        if self._server is None:
            try:
                self._server = ForkServer(cwd=str(self.project))
            except OSError as exc:
                log.warning("cannot start the fork server: %s", exc)
                self.use_forkserver = False
                return None
            self._sel.register(self._server.fileno(), selectors.EVENT_READ, ("forkserver", None))
        return self._server


def reap(proc: subprocess.Popen[bytes]) -> tuple[int, float | None]:
    """Wait for the process; returns its exit code and CPU seconds (None if unknown).

    The kernel's ru_maxrss is not used: it counts the engine's pages shared before exec.
    """
    if proc.returncode is None:
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:
            return proc.wait(), None
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, usage.ru_utime + usage.ru_stime
    return proc.returncode, None


def create_time(pid: int) -> float | None:
    """The process's start time as psutil reports it: with the pid, it names the process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def still_running(pid: int, created: float | None) -> bool:
    """Whether a step's process still runs; unsure counts as running (its end is recorded
    only once it is surely gone)."""
    return same_process_alive(pid, created, if_unsure=True)
