"""Ending what an attempt left running, and the lines dagtop adds to an attempt's log.

An attempt is over only when every process it started is gone. When a step's own process
exits, whatever it started that still runs (a helper in its process group, one that called
`setsid()`, a child that ignores SIGTERM) is found by the monitor (`Monitor.leftovers`) and
ended here: SIGTERM at once, SIGKILL to what is left after a grace period. `Leftovers.poll`
does that without blocking, for the coordinator's loop; `Leftovers.wait` blocks, for a Dask
task or a command about to exit.

Every line dagtop writes into an attempt's log starts with `LINE_PREFIX`, so a reader (and the
UI's log view) can tell it from the step's own output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil

from engine.status import StepStatus

LINE_PREFIX = "dagtop: "
"""What every line dagtop itself writes into a step's log starts with."""
GRACE = 3.0
"""Seconds a leftover process has to exit after SIGTERM before it gets SIGKILL."""
_SHOWN = 5  # processes named in the log line; the rest are counted
_NAME_CHARS = 60


def describe(proc: psutil.Process) -> str:
    """`4121 python -c import time; time.sleep(600)`: pid and command line, shortened."""
    try:
        words = proc.cmdline() or [proc.name()]
    except psutil.Error:
        words = ["?"]
    words[0] = os.path.basename(words[0])  # the program's path would take the whole line
    text = " ".join(" ".join(words).split())
    if len(text) > _NAME_CHARS:
        text = text[: _NAME_CHARS - 1] + "…"
    return f"{proc.pid} {text}"


class Leftovers:
    """Processes an attempt left running, being ended: SIGTERM now, SIGKILL at the deadline.

    Every process is a `psutil.Process`, which checks that its pid still names the process it
    was made for before each signal: a pid reused since is never hit. Before the SIGKILL the
    sessions the processes led are looked at again, for what was forked meanwhile.
    """

    def __init__(
        self,
        procs: Iterable[psutil.Process],
        grace: float = GRACE,
        sessions: dict[int, float] | None = None,
    ) -> None:
        """SIGTERM `procs` now.

        Args:
            procs: The processes to end.
            grace: Seconds before SIGKILL.
            sessions: More sessions whose processes are ours (the step's own, once its leader
                has exited): session id -> its leader's create time.
        """
        self.procs = {proc.pid: proc for proc in procs}
        self.names = [describe(proc) for proc in self.procs.values()]
        self.sessions = dict(sessions or {})
        for pid, proc in self.procs.items():
            if _leads_session(proc):
                with contextlib.suppress(psutil.Error):
                    self.sessions[pid] = proc.create_time()
        self.deadline = time.monotonic() + grace
        self.killed = False
        _signal(self.procs.values(), signal.SIGTERM)

    def poll(self) -> bool:
        """True once every process is gone; past the deadline, SIGKILL what is left first."""
        running = {pid: proc for pid, proc in self.procs.items() if alive(proc)}
        self.procs = running
        if not running:
            return True
        if time.monotonic() >= self.deadline and not self.killed:
            self.killed = True
            running.update(self._forked_meanwhile())
            _signal(running.values(), signal.SIGKILL)
        return False

    def wait(self, poll: float = 0.02) -> None:
        """Block until every process is gone (SIGKILL once the grace period is over)."""
        while not self.poll():
            time.sleep(poll)

    def kill_now(self) -> None:
        """No more grace: SIGKILL what is left at the next `poll`."""
        self.deadline = 0.0

    def line(self) -> str:
        """The log line that says what was ended."""
        count = len(self.names)
        shown = ", ".join(self.names[:_SHOWN])
        more = f" and {count - _SHOWN} more" if count > _SHOWN else ""
        noun = "process" if count == 1 else "processes"
        return f"{LINE_PREFIX}ended {count} leftover {noun}: {shown}{more}"

    def _forked_meanwhile(self) -> dict[int, psutil.Process]:
        """Processes in the sessions our leftovers led, which none of them was yet."""
        found: dict[int, psutil.Process] = {}
        # A session id cannot be reused while a process is in the session, so whatever is in
        # one is ours, unless its leader's pid now names a stranger (then it is not ours).
        sessions = {sid for sid, born in self.sessions.items() if not _names_a_stranger(sid, born)}
        if not sessions:
            return found
        me = os.getpid()
        for pid in psutil.pids():
            if pid in self.procs or pid == me:
                continue
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(pid) in sessions:
                    found[pid] = psutil.Process(pid)
        return found


def end_line(status: StepStatus, error: str | None, attempt: int, max_attempts: int,
             retry_in: float | None, *, started: bool = True) -> str:  # fmt: skip
    """The last line of an attempt's log: how the attempt ended, and why.

    Args:
        status: The attempt's own ending: success, failed or canceled.
        error: Why it did not succeed (None on success).
        attempt: This attempt's number.
        max_attempts: How many attempts the step may have.
        retry_in: Seconds until the next attempt, when the step will run again.
        started: False when the attempt failed before any process of it ran.
    """
    reason = " ".join((error or "").split())  # one line, whatever the error holds
    if not started:
        text = f"step not started: {reason}"
    elif status == StepStatus.SUCCESS:
        text = "step succeeded"
        if max_attempts > 1:
            text += f" on attempt {attempt} of {max_attempts}"
    elif status == StepStatus.CANCELED:
        text = f"step {reason}" if reason.startswith("canceled") else f"step canceled: {reason}"
    else:
        text = f"step {status}: {reason}" if reason else f"step {status}"
    if retry_in is not None:
        text += f"; attempt {attempt + 1} of {max_attempts} in {retry_in:g} s"
    return LINE_PREFIX + text


def append_lines(path: str | os.PathLike[str], lines: Iterable[str]) -> None:
    """Append dagtop's own lines to a log file, each on a line of its own.

    Starts on a new line if the step's output did not end with one. Never raises: a log that
    cannot be written must not fail the attempt's record.
    """
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            text = "\n" + text
        os.write(fd, text.encode("utf-8", errors="replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _leads_session(proc: psutil.Process) -> bool:
    try:
        return os.getsid(proc.pid) == proc.pid
    except OSError:
        return False


def _names_a_stranger(sid: int, born: float) -> bool:
    """Whether pid `sid` now names another process than our session's leader (born then)."""
    try:
        return abs(psutil.Process(sid).create_time() - born) >= 0.02
    except psutil.Error:
        return False  # no process has that pid: only our session's members can hold the id


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead, its parent has yet to read its status)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _signal(procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        # psutil checks that the pid still names this very process (pid reuse).
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)
