"""A pre-warmed process that forks step workers, so a step does not pay for a fresh interpreter.

Starting `python -m engine.executor.worker` costs an interpreter start plus importing the
engine's authoring API (tens of milliseconds); `os.fork()` of a process that already did both
costs a few. The server imports the worker module once, then for every request forks a child
that becomes a new session (its own process group), points stdout and stderr at the attempt's
log file, and runs the attempt exactly as the standalone worker would. The server reaps its
children and reports each exit status and CPU time back.

The server holds no threads (forking a threaded process is unsafe) and never imports user code:
each child imports the one pipeline module it runs, so an edited pipeline file is always
picked up. Protocol: one JSON object per datagram on a SOCK_SEQPACKET socket pair (a
`protocol.ForkRequest`, an `ExitReport`); a request carries the log file, the events pipe and a
reply pipe as SCM_RIGHTS file descriptors.

The new child's pid comes back on that request's own reply pipe, and the socket carries only
exit reports. So the coordinator, waiting for a pid, never reads an exit report: one read there
would have to be handed on by hand, since the socket would not show readable for it again.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, cast

from engine.processes import child_environ

if TYPE_CHECKING:
    from engine.protocol.worker import ExitReport, ForkRequest

MAX_MSG = 1 << 20


def _send_fds(sock: socket.socket, payload: ForkRequest, fds: list[int]) -> None:
    sock.sendmsg(
        [json.dumps(payload).encode()],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [],
    )


def _recv(sock: socket.socket) -> tuple[ForkRequest | None, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MSG, socket.CMSG_LEN(16 * fds.itemsize))
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return cast("ForkRequest", json.loads(data)), list(fds)


# --- server side (its own process) -----------------------------------------------------------


def _child(
    req: ForkRequest,
    log_fd: int,
    events_fd: int,
    reply_fd: int,
    sock: socket.socket,
    ready_w: int,
) -> None:
    """In the forked child: become the step's process and never return."""
    code = 1
    try:
        os.close(reply_fd)  # the server's to answer on; a pipe the step held would never end
        sock.close()
        os.setsid()
        # Only now may the coordinator see our pid: it signals our process group by it.
        os.write(ready_w, b"1")
        os.close(ready_w)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        from engine.executor import worker

        worker.main(req["spec"], events_fd)
    except BaseException:  # noqa: BLE001 - report on the log, then exit non-zero
        import traceback

        traceback.print_exc()
    os._exit(code)


def serve(sock: socket.socket) -> None:
    # Warm up: everything a worker imports before user code, including the whole authoring
    # API (the package loads its names on first use).
    import ctypes  # noqa: F401 - the worker makes itself a subreaper with it

    import engine
    import engine.executor.worker  # noqa: F401

    for name in engine.__all__:
        getattr(engine, name)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # The coordinator owns our lifetime: SIGINT from a terminal's Ctrl-C is its to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: dict[int, int] = {}  # pid -> request id
    while True:
        try:
            readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            _reap(sock, children)
        if sock.fileno() in readable:
            req, fds = _recv(sock)
            if req is None:
                return  # the coordinator is gone
            log_fd, events_fd, reply_fd = fds
            sys.stdout.flush()
            sys.stderr.flush()
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(wake_r)
                os.close(wake_w)
                os.close(ready_r)
                _child(req, log_fd, events_fd, reply_fd, sock, ready_w)
            os.close(ready_w)
            os.read(ready_r, 1)  # returns at once if the child died before setsid
            os.close(ready_r)
            os.close(log_fd)
            os.close(events_fd)
            children[pid] = req["id"]
            with contextlib.suppress(BrokenPipeError):
                os.write(reply_fd, b"%d\n" % pid)
            os.close(reply_fd)
            _reap(sock, children)


def _reap(sock: socket.socket, children: dict[int, int]) -> None:
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        req_id = children.pop(pid, None)
        report: ExitReport = {
            "id": req_id,
            "exit": pid,
            "code": os.waitstatus_to_exitcode(status),
            "cpu": usage.ru_utime + usage.ru_stime,
        }
        sock.send(json.dumps(report).encode())


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(sock)
    os._exit(0)


# --- client side (in the coordinator) --------------------------------------------------------


class ForkServer:
    """The coordinator's handle on a running fork server."""

    def __init__(self, cwd: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "engine.executor.forkserver", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=cwd,
            # Its children's /proc/PID/environ shows the server's own start: start it clean.
            env=child_environ(os.environ),
            start_new_session=True,
        )
        theirs.close()
        self.sock = ours

    def spawn(self, req_id: int, spec: str, cwd: str, env: dict[str, str], log_fd: int,
              events_fd: int) -> int:  # fmt: skip
        """Fork a worker; returns its pid. Raises OSError if the server is gone.

        Reads nothing from the socket: exit reports stay there for `read_exits`.
        """
        reply_r, reply_w = os.pipe()
        try:
            request: ForkRequest = {"id": req_id, "spec": spec, "cwd": cwd, "env": env}
            _send_fds(self.sock, request, [log_fd, events_fd, reply_w])
            os.close(reply_w)
            reply_w = -1
            answer = b""
            # The server's copy is its only write end: a dead server is an EOF here.
            while not answer.endswith(b"\n"):
                chunk = os.read(reply_r, 32)
                if not chunk:
                    raise ConnectionResetError("the fork server exited")
                answer += chunk
            return int(answer)
        finally:
            os.close(reply_r)
            if reply_w >= 0:
                os.close(reply_w)

    def read_exits(self) -> list[ExitReport]:
        """Exit reports available now (call when the socket is readable)."""
        out: list[ExitReport] = []
        while True:
            try:
                msg = self.sock.recv(MAX_MSG, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not msg:
                raise ConnectionResetError("the fork server exited")
            reply = json.loads(msg)
            if "exit" in reply:
                out.append(cast("ExitReport", reply))
        return out

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()
