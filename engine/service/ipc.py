"""The engine's local socket: how a command on this machine reaches a running engine at once.

The engine that holds a home folder's lease listens on a Unix socket in that folder. A request
is one JSON line; the engine answers with JSON lines until it closes the connection. A CLI that
finds the socket hands its run over and follows it without importing storage, waiting on a
poll, or starting a fork server of its own, which is what makes `dagtop materialize` with a
daemon running cost little more than the steps themselves.

The command table in the database stays the way in for an engine this machine cannot reach
(another host sharing a PostgreSQL home): the socket is a shortcut, never the only path.
Nothing here listens on a network: a Unix socket is a file, reachable only on this machine and,
by its mode, only by its owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "engine.sock"
# sun_path holds 108 bytes on Linux (104 on macOS); longer homes get a socket in the temp
# folder, named by a hash of the home, which both sides compute the same way.
_MAX_PATH = 100
CONNECT_TIMEOUT = 2.0

Send = Callable[[Mapping[str, Any]], None]
Handler = Callable[[dict[str, Any], Send], None]


class Unavailable(Exception):
    """No engine answers on this home's socket (none runs, or it died)."""


class Closed(Exception):
    """The engine closed the connection before the exchange ended."""


def socket_path(home: Path) -> Path:
    path = home / SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_PATH:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"dagtop-{os.getuid()}" / f"{digest}.sock"


# --- the engine's side ------------------------------------------------------------------------


class SocketServer:
    """Accepts connections on `path` and runs `handler(request, send)` for each, in a thread.

    `handler` gets the decoded request line and a `send` that writes one JSON line; the
    connection closes when it returns. A handler's error is answered as `{"error": ...}`.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The caller holds the home's lease, so a socket file left here is a dead engine's.
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the file is created 0600: only its owner may connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.listen(64)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="dagtop-socket", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve, args=(conn,), name="dagtop-socket-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                self._exchange(stream)
        except OSError:
            pass  # the caller went away (even while the stream flushed on close): carry on

    def _exchange(self, stream: Any) -> None:
        def send(message: Mapping[str, Any]) -> None:
            stream.write(json.dumps(message, default=str).encode() + b"\n")
            stream.flush()

        try:
            line = stream.readline()
            if not line:
                return
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            self._handler(request, send)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - answer, never kill the engine
            log.debug("socket request failed", exc_info=True)
            send({"error": f"{type(exc).__name__}: {exc}"})

    def close(self) -> None:
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        self.path.unlink(missing_ok=True)


# --- the caller's side ------------------------------------------------------------------------


def request(home: Path, message: Mapping[str, Any]) -> Generator[dict[str, Any], None, None]:
    """Send `message` to the engine of `home` and yield its answers as they come.

    Raises:
        Unavailable: no engine listens (before anything was sent).
        Closed: the connection ended before the engine said it was done (`{"end": true}`).
    """
    path = socket_path(home)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(str(path))
    except OSError as exc:  # missing file, refused (stale file), permission, timeout
        sock.close()
        raise Unavailable(str(exc)) from None
    sock.settimeout(None)
    with sock, sock.makefile("rwb") as stream:
        stream.write(json.dumps(message).encode() + b"\n")
        stream.flush()
        for line in stream:
            answer = json.loads(line)
            if answer.get("end"):
                return
            yield answer
    raise Closed("the engine closed the connection")


def available(home: Path) -> bool:
    """Whether a socket file exists for `home` (cheap; a dead engine's file may remain)."""
    return socket_path(home).exists()


__all__ = ["Closed", "SocketServer", "Unavailable", "available", "request", "socket_path"]
