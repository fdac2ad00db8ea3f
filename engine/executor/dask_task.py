"""One step attempt on a Dask worker: the usual step subprocess, monitored there, streamed back.

`run_attempt` is the Dask task the coordinator submits (see `dask_executor.py`). It starts the
attempt exactly as the local executor does, with `spawn.start` (`python -m
engine.executor.worker SPEC FD`, or the shell command, in a session of its own, stdout and
stderr to a log file), watches it with the
same psutil `Monitor` and the step's memory limit and timeout, and sends what the coordinator
needs while it runs, a few batches a second, on a `distributed.Queue` named for the attempt:
new log bytes, event lines, one resource sample a second, and at the end the exit status and
the attempt's resource totals (`protocol.Batch`). The coordinator sets a per-attempt
`distributed.Event` to cancel.

A step dies with its Dask worker, even of SIGKILL, and so do the processes it started: the step
itself through Linux's parent-death signal, and its whole tree through a small sentinel process
beside it, which does nothing until the worker is gone and then kills the step's session,
process group and descendants with the local executor's `kill_tree`.

Dask reruns a task whose worker died (up to `distributed.scheduler.allowed-failures` times).
A step must never run twice behind the coordinator's back, so the first run claims the attempt
with another Event, and a rerun that finds the claim starts nothing and returns `superseded`:
the coordinator then fails the attempt ("dask worker ... lost") and its retry policy decides.

Runs inside Dask workers: no storage, no UI.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from engine.executor import spawn
from engine.executor.leftovers import Leftovers, append_lines
from engine.executor.monitor import Monitor, Sample, kill_tree, stop_tree
from engine.processes import child_environ, same_process_alive
from engine.protocol.worker import decode_event, reported_children

if TYPE_CHECKING:
    from engine.protocol.worker import (
        AttemptEnd,
        Batch,
        DaskPayload,
        Placement,
        SampleRow,
        TaskResult,
    )

BATCH_INTERVAL = 0.1
"""Seconds between looks at the step's output (a batch is sent only when there is news)."""
HEARTBEAT = 1.0
CANCEL_POLL = 0.5
CANCEL_GRACE = 3.0
LOG_CHUNK = 1 << 20
"""At most this many log bytes per batch: a step printing 100 MB streams, it does not stall."""

# Run before the step's own command: make the step die with the Dask worker process (Linux's
# parent-death signal; the task's thread, which forked it, waits for it to the end), then
# become the command. With -S this costs a few milliseconds.
_GUARD = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(70)  # the worker died before we could tie ourselves to it
os.execvp(sys.argv[2], sys.argv[2:])
"""

# Run beside the step, in a session of its own (so the step's monitor does not count it): wait
# for the Dask worker process to die, then kill what is left of the step's tree. The parent-death
# signal above reaches only the step's own process; its children would live on as orphans. The
# worker kills this sentinel once the step has ended. Arguments: worker pid, step pid, the step's
# create time (0 if unknown). Its imports wait for the worker's death: most attempts never need
# them.
_SENTINEL = """\
import ctypes, os, signal, sys, time
worker, step, born = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    wait = signal.sigtimedwait
except (AttributeError, OSError):
    wait = lambda _sigs, timeout: time.sleep(timeout / 10)
while os.getppid() == worker:  # a stray SIGTERM only makes it look again
    wait({signal.SIGTERM}, 5.0)
import site
site.main()
import psutil
from engine.executor.monitor import kill_tree
try:
    if born and abs(psutil.Process(step).create_time() - born) > 0.01:
        sys.exit(0)  # the step's pid names another process: nothing of the step is left
except psutil.NoSuchProcess:
    pass  # the step is gone, maybe not its session: kill_tree finds that by session id
kill_tree(step)
"""


PREFIX = "dagtop-attempt-"
OWNER = ".dagtop-owner"
"""In each attempt folder: "pid create_time" of the worker process that made it."""
_swept = False


def attempt_folder(parent: str | None = None) -> Path:
    """A new attempt folder in the temp folder, marked with the process that owns it."""
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    (tmp / OWNER).write_text(f"{os.getpid()} {psutil.Process().create_time():.3f}")
    return tmp


def sweep_attempt_folders(parent: str | None = None) -> int:
    """Remove the attempt folders that worker processes killed with SIGKILL left behind: the
    ones marked by a process of this user that is gone. A folder without the mark, of
    another user, or of a live process is left alone. Returns how many were removed."""
    removed = 0
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if folder.is_symlink() or folder.lstat().st_uid != os.getuid():
                continue
            pid_text, _, created = (folder / OWNER).read_text().partition(" ")
            pid, create_time = int(pid_text), float(created)
        except (OSError, ValueError):
            continue
        if same_process_alive(pid, create_time, if_unsure=True):  # unsure: leave it
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def run_attempt(payload: DaskPayload) -> TaskResult:
    """The Dask task: run one attempt and return its end (also sent on the queue)."""
    from distributed import Event, Queue, get_worker

    global _swept
    if not _swept:
        # The first attempt in this worker process: what a killed predecessor left goes.
        _swept = True
        with contextlib.suppress(OSError):
            sweep_attempt_folders()
    worker = get_worker()
    claim = Event(payload["claim"])
    if claim.is_set():
        return {"superseded": True, "worker": worker.address}
    claim.set()
    queue = Queue(payload["queue"])
    cancel = Event(payload["cancel"])
    try:
        return _Attempt(payload, worker, queue, cancel).run()
    finally:
        with contextlib.suppress(Exception):
            queue.close()  # this worker's reference; the coordinator holds its own


class _Attempt:
    def __init__(self, payload: DaskPayload, worker: Any, queue: Any, cancel: Any) -> None:
        self.payload = payload
        self.worker = worker
        self.queue = queue
        self.cancel = cancel
        self.samples: list[SampleRow] = []
        self.last_sample = 0.0
        self.lock = threading.Lock()
        self.stopping = False
        self.orphaned = False
        self.sentinel: subprocess.Popen[bytes] | None = None
        self.created: float | None = None
        """The step process's create time, which tells it from a later process given its pid."""
        self.pid = 0
        self.ended_leftovers = False

    def run(self) -> TaskResult:
        tmp = attempt_folder()
        try:
            try:
                proc, events_fd, log_path = self._spawn(tmp)
            except Exception as exc:  # noqa: BLE001 - the attempt fails; the worker lives on
                error = f"could not start the step on dask worker {self.worker.address}: "
                error += f"{type(exc).__name__}: {exc}"
                end: AttemptEnd = {"code": None, "cpu": None, "stats": None, "error": error}
                self._put({"end": end})
                return {"end": end}
            return self._follow(proc, events_fd, log_path)
        finally:
            if self.sentinel is not None:
                self.sentinel.kill()  # the step ended: nothing for it to guard any more
                self.sentinel.wait()
            shutil.rmtree(tmp, ignore_errors=True)

    def _spawn(self, tmp: Path) -> tuple[subprocess.Popen[bytes], int | None, Path]:
        p = self.payload
        log_path = tmp / "step.log"
        # A Python step runs this machine's interpreter, not the coordinator's.
        argv = p["argv"] if p["spec"] is None else spawn.worker_argv()
        proc, read_fd = spawn.start(
            argv,
            p["spec"],
            tmp / "spec.json",
            log_path,
            cwd=p["cwd"] if os.path.isdir(p["cwd"]) else str(tmp),
            env={**child_environ(os.environ), **p["env"]},
            guard=[sys.executable, "-S", "-c", _GUARD, str(os.getpid())],
        )
        self.pid = proc.pid
        try:
            self.created = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # it may already be gone
            self.created = None
        try:
            self.sentinel = subprocess.Popen(
                [sys.executable, "-S", "-c", _SENTINEL, str(os.getpid()), str(proc.pid),
                 str(self.created or 0)],
                stdin=subprocess.DEVNULL,
                cwd="/",  # not the worker's folder: `engine` must be the installed one
                start_new_session=True,  # out of the step's tree, and of the worker's group
            )  # fmt: skip
        except BaseException:
            # A step that could outlive its worker's death with its children must not run.
            kill_tree(proc.pid)
            proc.wait()
            if read_fd is not None:
                os.close(read_fd)
            raise
        return proc, read_fd, log_path

    def _on_sample(self, _key: str, x: Sample) -> None:
        # The monitor's thread: keep one sample a second, as the local coordinator stores.
        if x.t - self.last_sample >= 1.0:
            self.last_sample = x.t
            with self.lock:
                self.samples.append(
                    (x.t, x.cpu_percent, x.cpu_seconds, x.rss_bytes, x.read_bytes,
                     x.write_bytes, x.threads, x.children)
                )  # fmt: skip

    def _follow(
        self, proc: subprocess.Popen[bytes], events_fd: int | None, log_path: Path
    ) -> TaskResult:
        p = self.payload
        monitor = Monitor(interval=0.2, on_sample=self._on_sample)
        monitor.start()
        key = str(p["attempt"])
        monitor.watch(key, proc.pid, memory_limit=p["memory_limit"], timeout=p["timeout"])
        placed: Placement = {
            "host": socket.gethostname(),
            "worker": self.worker.address,
            "pid": proc.pid,
            "create_time": self.created,
        }
        self._put({"placed": placed})
        if events_fd is not None:
            os.set_blocking(events_fd, False)
        code: int | None = None
        cpu: float | None = None
        reported = b""  # the events' tail: the last one names the children the step left
        last_put = last_cancel_poll = time.monotonic()
        # Wake for an event or the exit at once (a pidfd), else a few times a second for the log.
        exit_fd = _pidfd(proc.pid)
        with open(log_path, "rb") as log_fh:
            while True:
                waits = [
                    fd for fd in (events_fd, exit_fd if code is None else None) if fd is not None
                ]
                if waits:
                    select.select(waits, [], [], BATCH_INTERVAL)
                else:
                    time.sleep(BATCH_INTERVAL)
                batch: Batch = {}
                events, events_fd = _read_available(events_fd)
                if code is None:
                    code, cpu = _poll_exit(proc)
                    if code is not None and events_fd is not None:
                        # Every event is in the pipe by now. Don't wait for its end: a process
                        # the step forked may hold it open until it is ended below.
                        more, events_fd = _read_available(events_fd)
                        events += more
                        if events_fd is not None:
                            os.close(events_fd)
                            events_fd = None
                if events:
                    batch["events"] = events
                    reported = (reported + events)[-(1 << 16) :]
                if code is not None and not self.ended_leftovers:
                    self._end_leftovers(monitor, key, reported, log_path)
                chunk = log_fh.read(LOG_CHUNK)
                if chunk:
                    batch["log"] = chunk
                with self.lock:
                    if self.samples:
                        batch["samples"], self.samples = self.samples, []
                now = time.monotonic()
                if batch or now - last_put >= HEARTBEAT:
                    self._put(batch)
                    last_put = now
                if code is not None and events_fd is None and len(chunk) < LOG_CHUNK:
                    break
                if now - last_cancel_poll >= CANCEL_POLL:
                    last_cancel_poll = now
                    self._maybe_stop(proc.pid)
        if exit_fd is not None:
            os.close(exit_fd)
        stats = monitor.unwatch(key)
        monitor.stop()
        if cpu is not None:
            stats.cpu_seconds = max(stats.cpu_seconds, cpu)
        with self.lock:
            tail = self.samples
        end: AttemptEnd = {"code": code, "cpu": cpu, "stats": asdict(stats)}
        self._put({"samples": tail, "end": end} if tail else {"end": end})
        return {"end": end}

    def _end_leftovers(self, monitor: Monitor, key: str, events: bytes, log_path: Path) -> None:
        """The step's process exited: end what it left running (SIGTERM, a grace period,
        SIGKILL) and say so in its log, before the attempt's end is sent."""
        self.ended_leftovers = True
        children, reported_at = _reported_children(events)
        if children == []:
            return  # the worker, a subreaper, had no child: nothing of the step is left
        procs = monitor.leftovers(key, children or (), reported_at)
        if not procs:
            return
        own = {self.pid: self.created} if self.created else None
        left = Leftovers(procs, sessions=own)
        left.wait()
        append_lines(log_path, [left.line()])

    def _maybe_stop(self, pid: int) -> None:
        if self.stopping:
            return
        try:
            wanted = self.cancel.is_set() or self.orphaned or self._released()
        except Exception:  # noqa: BLE001 - the scheduler is gone: nobody is listening
            wanted = True
        if wanted:
            self.stopping = True
            threading.Thread(target=stop_tree, args=(pid, CANCEL_GRACE), daemon=True).start()

    def _released(self) -> bool:
        """The coordinator let go of the task (its engine died, or it canceled the future)."""
        state = getattr(self.worker, "state", None)
        tasks = getattr(state, "tasks", None)
        if tasks is None:
            return False
        ts = tasks.get(self.payload["key"])
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    def _put(self, batch: Batch) -> None:
        batch["a"] = self.payload["key"]
        try:
            self.queue.put(batch)
        except Exception:  # noqa: BLE001 - the coordinator released the queue: stop the step
            self.orphaned = True


def _read_available(fd: int | None) -> tuple[bytes, int | None]:
    """What the events pipe holds now; the fd becomes None at EOF (it is closed)."""
    if fd is None:
        return b"", None
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        return data, fd
    os.close(fd)
    return data, None


def _reported_children(events: bytes) -> tuple[list[int] | None, float | None]:
    """The children the worker named in its last event, and when it sent it; None when it
    did not say. `events` is the tail of the events pipe: its first line may be cut off."""
    decoded = [e for line in events.splitlines() if (e := decode_event(line)) is not None]
    return reported_children(decoded)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3+: the loop's timeout finds the exit
        return None


def _poll_exit(proc: subprocess.Popen[bytes]) -> tuple[int | None, float | None]:
    """(exit code, CPU seconds) once the step's process exited, else (None, None)."""
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        return proc.wait(), None
    if pid == 0:
        return None, None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime
