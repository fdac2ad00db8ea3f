"""The scheduling lease: one engine per home folder runs schedules, sensors and commands.

A row in storage names the holder and carries a heartbeat. Another engine may take the lease
when the heartbeat is older than `EXPIRY`, or at once when the holder is on this machine and
its process is gone (pid and create time, since pids are reused).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from engine.executor.recovery import process_alive
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import Lease

NAME = "engine"
EXPIRY = 10.0
HEARTBEAT = 2.0


@dataclass(frozen=True, slots=True)
class Holder:
    holder: str  # "host:pid:create_time:kind:home" (home since 0.x; older engines omit it)
    pid: int
    heartbeat_at: float
    kind: str
    host: str
    home: str | None = None  # the holder's home folder, when it recorded one

    @property
    def description(self) -> str:
        """`daemon (pid 123 on host-a, home /srv/proj/.dagtop)`: enough to find it and stop it."""
        home = f", home {self.home}" if self.home else ""
        return f"{self.kind} (pid {self.pid} on {self.host}{home})"


def my_id(kind: str, home: str | os.PathLike[str] | None = None) -> str:
    """This process's lease holder id. The home goes last (it may hold colons): engines of an
    older version split the first four fields only, and still read the rest right."""
    import psutil

    me = f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.3f}:{kind}"
    return f"{me}:{home}" if home is not None else me


def _holder(row: Lease) -> Holder:
    host, _pid, _ct, kind, home = (row.holder.split(":", 4) + ["", "", "", "", ""])[:5]
    return Holder(row.holder, row.pid, row.heartbeat_at, kind or "engine", host, home or None)


def _alive(row: Lease, now: float) -> bool:
    if now - row.heartbeat_at > EXPIRY:
        return False
    parts = row.holder.split(":")
    if len(parts) >= 3 and parts[0] == socket.gethostname():
        try:
            return process_alive(int(parts[1]), float(parts[2]))
        except ValueError:
            return True
    return True


def try_acquire(db: SAEngine, me: str, now: float | None = None) -> Holder | None:
    """Take the lease if free, expired or ours; returns None on success, else the live holder."""
    now = time.time() if now is None else now
    try:
        with session_scope(db) as s:
            return acquire(s, me, now)
    except IntegrityError:
        # Another engine inserted the first lease row between our read and our insert: it
        # holds the lease now, and the next read (which waits for its commit) says so.
        with session_scope(db) as s:
            return acquire(s, me, now)


def acquire(s: Session, me: str, now: float) -> Holder | None:
    """try_acquire inside the caller's transaction (the row stays locked until it ends).

    Raises:
        IntegrityError: another engine created the lease row concurrently.
    """
    # Locked (on PostgreSQL) from this read to the commit, so two engines that find the same
    # expired lease cannot both take it: the second reads the first's row once it commits.
    row = repo.get_lease(s, NAME, for_update=True)
    if row is not None and row.holder != me and _alive(row, now):
        return _holder(row)
    if row is None:
        repo.add_lease(
            s, Lease(name=NAME, holder=me, pid=os.getpid(), heartbeat_at=now, acquired_at=now)
        )
        return None
    if row.holder != me:
        row.acquired_at = now
    row.holder, row.pid, row.heartbeat_at = me, os.getpid(), now
    s.add(row)
    return None


def heartbeat(db: SAEngine, me: str, now: float | None = None) -> bool:
    """Renew the lease; False when another engine took it (ours had expired)."""
    now = time.time() if now is None else now
    with session_scope(db) as s:
        row = repo.get_lease(s, NAME, for_update=True)
        if row is None or row.holder != me:
            return False
        row.heartbeat_at = now
        s.add(row)
    return True


def wait_to_acquire(
    db: SAEngine, me: str, stop: threading.Event, on_wait: Callable[[Holder], None]
) -> bool:
    """A standby's wait: take the lease as soon as it is free (its holder stopped, died on
    this machine, or stopped renewing it for `EXPIRY` seconds). `on_wait` is told of each new
    holder. Returns False when `stop` was set first."""
    seen: str | None = None
    while not stop.is_set():
        holder = try_acquire(db, me)
        if holder is None:
            return True
        if holder.holder != seen:
            seen = holder.holder
            on_wait(holder)
        stop.wait(HEARTBEAT / 2)
    return False


def release(db: SAEngine, me: str) -> None:
    with session_scope(db) as s:
        row = repo.get_lease(s, NAME, for_update=True)
        if row is not None and row.holder == me:
            s.delete(row)


def live_holder(db: SAEngine, now: float | None = None) -> Holder | None:
    """The engine currently holding the lease, if it is alive."""
    now = time.time() if now is None else now
    with read_scope(db) as s:
        row = repo.get_lease(s, NAME)
        if row is None or not _alive(row, now):
            return None
        return _holder(row)
