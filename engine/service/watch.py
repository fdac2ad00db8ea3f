"""Following a run or a backfill by reading storage.

How a caller follows what an engine does when it can reach that engine only through the
database (another host sharing PostgreSQL), or when the engine it followed over the socket
stopped; and how a command with no engine up follows a run that another process executes.
Each poll reads the run (a few queries) or the backfill's counts (one aggregate query).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.executor.recovery import owner_alive
from engine.history.views import run_views
from engine.protocol.commands import BackfillInfo, BackfillRef, FollowRun, RunWire
from engine.status import BackfillStatus, RunStatus
from engine.storage import repo
from engine.storage.db import read_scope

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

RUN_POLL = 0.05
BACKFILL_POLL = 0.5


def run_wire(db: SAEngine, run_id: str) -> RunWire:
    """A run as it is now, as `follow_run` sends it (`RunView.to_wire()`).

    Raises:
        RunNotFound: no such run.
    """
    with read_scope(db) as s:
        return run_views(s, [repo.find_run(s, run_id)])[0].to_wire()


def watch_run(
    db: SAEngine,
    request: FollowRun,
    on_update: Callable[[RunWire], None] | None,
    orphaned: bool = False,
    poll: float = RUN_POLL,
) -> RunWire | None:
    """Follow a run in storage until it ends (or `request["timeout"]` passes): `on_update`
    sees it at each change of a status or an attempt. Returns it as it was last read.

    Args:
        orphaned: Stop (and return None) as soon as the run, not finished, has no live
            owner: nobody runs it, and the caller may.

    Raises:
        RunNotFound: no such run.
    """
    timeout = request.get("timeout")
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        with read_scope(db) as s:
            run = repo.find_run(s, request["run_id"])
            if orphaned and not RunStatus(run.status).finished and not owner_alive(run.owner):
                return None
            view = run_views(s, [run])[0]
        stamp = (view.status, tuple((st.status, st.attempts) for st in view.steps))
        wire = view.to_wire() if on_update is not None and stamp != last else None
        if wire is not None and on_update is not None:
            on_update(wire)
        last = stamp
        if view.finished or (deadline is not None and time.monotonic() >= deadline):
            return wire if wire is not None else view.to_wire()
        time.sleep(poll)


def watch_backfill(
    db: SAEngine,
    request: BackfillRef,
    on_update: Callable[[BackfillInfo], None] | None,
    poll: float = BACKFILL_POLL,
) -> BackfillInfo:
    """Follow a backfill in storage until it ends; `on_update` sees its counts at each poll,
    and last its progress with the key list, which this returns.

    Raises:
        RunNotFound: no such backfill.
    """
    from engine.automation.backfill import progress

    while True:
        with read_scope(db) as s:
            info = progress(s, request["backfill_id"], with_keys=False)
            if info["status"] != BackfillStatus.RUNNING:
                info = progress(s, request["backfill_id"])
        if on_update is not None:
            on_update(info)
        if info["status"] != BackfillStatus.RUNNING:
            return info
        time.sleep(poll)
