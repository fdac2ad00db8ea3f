"""What a command does when no engine runs for its home: the work itself, in the caller's
process.

`dagtop materialize` records its run and executes it on a coordinator of its own; a toggle, a
backfill or its cancel writes storage as an engine would; following a backfill runs it here.
The methods mirror `Engine`'s, so that the command table (engine.service.commands) says for
each command what an engine does and what is done here in two lines side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.errors import EngineError, ExecutorError
from engine.protocol.commands import BackfillInfo, FollowRun, RunWire
from engine.service.watch import run_wire, watch_run
from engine.status import BackfillStatus, RunStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from engine.executor.forkserver import ForkServer
    from engine.history.plan import RunRequest
    from engine.loading.config import Config, Paths
    from engine.loading.manifest import Manifest


class InProcess:
    """A project's commands, done in this process (no engine runs for its home).

    Args:
        paths: The project's home and pipelines folders.
        config: Its settings.
        db: Its database.
        manifest: Its definitions (the caller loads them once).
        forkserver: A fork server started ahead (`Client.prewarm`), if any, taken by the
            next execution.
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        db: SAEngine,
        manifest: Callable[[], Manifest],
        forkserver: Callable[[], ForkServer | None] = lambda: None,
    ) -> None:
        self.paths, self.config, self.db = paths, config, db
        self._manifest = manifest
        self._forkserver = forkserver

    def manifest(self) -> Manifest:
        return self._manifest()

    # --- commands -----------------------------------------------------------------------------

    def submit(self, request: RunRequest) -> str:
        """Plan `request` and record its run (queued); following it executes it here."""
        from engine.history.plan import record

        manifest = self.manifest()
        with session_scope(self.db) as s:
            return record(s, manifest, request)

    def rerun(self, run_id: str) -> str:
        """Queue a run's failed, skipped and canceled steps again; following it executes them.
        A run a dead engine left is repaired first, so that it can be queued."""
        from engine.executor.recovery import reconcile
        from engine.history.run_control import requeue_failed

        reconcile(self.db)
        with session_scope(self.db) as s:
            return requeue_failed(s, run_id, time.time())

    def cancel(self, run_id: str) -> str:
        """Ask for the run to be canceled: whoever executes it stops it (following a run that
        nobody executes settles it here)."""
        with session_scope(self.db) as s:
            run = repo.find_run(s, run_id)
            run.cancel_requested = True
            run.updated_at = time.time()
            s.add(run)
            return run.id

    def backfill(self, selection: Sequence[str], keys: Sequence[str], max_parallel: int) -> str:
        from engine.automation.backfill import create_backfill

        manifest = self.manifest()
        with session_scope(self.db) as s:
            return create_backfill(s, manifest, list(selection), list(keys), max_parallel)

    def cancel_backfill(self, backfill_id: str) -> str:
        from engine.automation import backfill as bf

        with session_scope(self.db) as s:
            full = bf.cancel_backfill(s, backfill_id, time.time())
            # No engine will cancel its unstarted runs: do it now, as one would (runs that a
            # command in progress executes are canceled by that command).
            bf.advance_backfill(s, full, True, time.time())
            return full

    def resume_backfill(self, backfill_id: str) -> str:
        from engine.automation.backfill import resume_backfill

        manifest = self.manifest()
        with session_scope(self.db) as s:
            return resume_backfill(s, manifest, backfill_id, time.time())

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        """Turn a schedule or sensor on or off in storage, where the next engine reads it.

        Raises:
            EngineError: no schedule or sensor has that name.
        """
        from engine.errors import suggest

        manifest = self.manifest()
        # `auto` is the built-in sensor that evaluates asset automation (engine.automation.auto).
        names = list(manifest.schedules) if kind == "schedule" else [*manifest.sensors, "auto"]
        if name not in names:
            raise EngineError(f"no {kind} named {name!r}" + suggest(name, names))
        with session_scope(self.db) as s:
            repo.set_toggle(s, kind, name, enabled, time.time())

    # --- streams ------------------------------------------------------------------------------

    def follow_run(
        self, request: FollowRun, on_update: Callable[[RunWire], None] | None
    ) -> RunWire:
        """See a run to its end: follow it in storage while another live process executes it,
        and execute it here when none does (a run just recorded, or one whose process died:
        a canceled one is then settled at once). Returns the run as it ended (or as it was
        when `request["timeout"]` passed while another process ran it).

        Raises:
            RunNotFound: no such run.
        """
        watched = watch_run(self.db, request, on_update, orphaned=True)
        if watched is not None:
            return watched
        with read_scope(self.db) as s:
            run_id = repo.find_run(s, request["run_id"]).id
        pusher = _Pusher(self.db, on_update) if on_update is not None else None
        try:
            self.execute([run_id], pusher)
        finally:
            if pusher is not None:
                pusher.close()
        wire = run_wire(self.db, run_id)
        if on_update is not None:
            on_update(wire)
        return wire

    def follow_backfill(
        self, backfill_id: str, on_update: Callable[[BackfillInfo], None] | None
    ) -> BackfillInfo:
        """Execute a backfill here until it ends; returns its progress with its key list.

        When all its runs may start at once (a backfill in ranges is often one run), they run
        as `materialize` runs them, on this process's coordinator; otherwise an engine starts
        here, whose admission keeps the backfill's limit and says how it progresses."""
        small = self._startable_at_once(backfill_id)
        if small is not None:
            return self._run_backfill_runs(backfill_id, small, on_update)
        server = self._forkserver()
        if server is not None:
            server.close()  # the engine starts its own
        from engine.service.daemon import Engine

        try:
            engine = Engine(
                self.paths,
                self.config,
                kind="cli",
                db=self.db,
                schedules=False,
                sensors=False,
                watch=False,
                automation=False,
            )
        except ExecutorError as exc:
            self._fail_backfill(backfill_id, exc.msg)
            raise
        engine.start()
        try:
            info: BackfillInfo | None = None
            for info in engine.follow_backfill(backfill_id):
                if on_update is not None:
                    on_update(info)
            if engine.failure is not None:  # its coordinator failed (a full disk, say)
                raise engine.failure
            assert info is not None  # the engine runs until the backfill ends
            return info
        finally:
            engine.stop()

    def _startable_at_once(self, backfill_id: str) -> list[str] | None:
        """The backfill's runs, if every one left is queued, unowned and within its limit."""
        from engine.automation.backfill import run_counts

        with read_scope(self.db) as s:
            backfill = repo.find_backfill(s, backfill_id)
            if backfill.status != BackfillStatus.RUNNING or backfill.cancel_requested:
                return None
            rows = run_counts(s, [backfill.id])[backfill.id]
            if (
                sum(n for status, _, n in rows if status != RunStatus.SUCCESS)
                > backfill.max_parallel
            ):
                return None
            left = [
                r for r in repo.backfill_run_states(s, backfill.id) if r[1] != RunStatus.SUCCESS
            ]
            if any(status != RunStatus.QUEUED or owner for _, status, _, owner, _ in left):
                return None  # a run to recover or being canceled: the engine's path
            return [run_id for run_id, *_ in left]

    def _run_backfill_runs(
        self,
        backfill_id: str,
        run_ids: list[str],
        on_update: Callable[[BackfillInfo], None] | None,
    ) -> BackfillInfo:
        from engine.automation.backfill import advance_backfills, progress

        if on_update is not None:
            with read_scope(self.db) as s:
                on_update(progress(s, backfill_id, with_keys=False))
        try:
            self.execute(run_ids)
        except ExecutorError as exc:
            self._fail_backfill(backfill_id, exc.msg)
            raise
        with session_scope(self.db) as s:
            advance_backfills(s, time.time())  # success, failed or canceled, as an engine would
        with read_scope(self.db) as s:
            info = progress(s, backfill_id)
        if on_update is not None:
            on_update(info)
        return info

    # --- execution ----------------------------------------------------------------------------

    def execute(
        self, run_ids: Sequence[str], on_change: Callable[[str], None] | None = None
    ) -> None:
        """Run (or resume) recorded runs on a coordinator in this process until they finish;
        the coordinator calls `on_change` (on its thread) at every change of a run."""
        from engine.executor.coordinator import Coordinator
        from engine.executor.recovery import reconcile

        reconcile(self.db)
        server = self._forkserver()
        try:
            coordinator = Coordinator(
                self.db, self.paths, self.config, self.manifest, on_change, forkserver=server
            )
        except ExecutorError as exc:
            # The runs were recorded queued: fail them with the reason, or a later engine
            # would run what the user was told could not start.
            self._fail_unstarted(run_ids, exc.msg)
            raise
        for run_id in run_ids:
            coordinator.submit(run_id)
        try:
            coordinator.run_until_complete(set(run_ids))
        except KeyboardInterrupt:
            # Ctrl-C: stop the steps we started and record them canceled, never "running".
            for run_id in run_ids:
                self.cancel(run_id)
            coordinator.run_until_complete(set(run_ids))
            raise
        finally:
            # The command exits right after: a webhook still queued on the alerts thread
            # would be lost with it. (The fork server is left to exit with this process:
            # waiting for it would add its interpreter's teardown to every command.)
            coordinator.send_alerts()

    def _fail_backfill(self, backfill_id: str, reason: str) -> None:
        """Its executor cannot be reached: fail the backfill's unstarted runs, and so the
        backfill (which a later engine would otherwise carry on unasked)."""
        from engine.automation.backfill import advance_backfills

        with read_scope(self.db) as s:
            run_ids = [row[0] for row in repo.backfill_run_states(s, backfill_id)]
        self._fail_unstarted(run_ids, reason)
        with session_scope(self.db) as s:
            advance_backfills(s, time.time())

    def _fail_unstarted(self, run_ids: Sequence[str], reason: str) -> None:
        from engine.history.run_control import fail_unstarted

        now = time.time()
        with session_scope(self.db) as s:
            for run in repo.runs_by_id(s, run_ids).values():
                if run.status == RunStatus.QUEUED and run.owner is None:
                    fail_unstarted(s, run, now, reason)


class _Pusher:
    """Hands a run executed here to its follower as it changes.

    The coordinator calls it on its own thread at every change of the run; reading the whole
    run each time would make a run of n steps cost n² reads and slow it down. So it reads at
    most every `REFRESH` seconds, and a timer catches the last change of a burst.
    """

    REFRESH = 0.25

    def __init__(self, db: SAEngine, on_update: Callable[[RunWire], None]) -> None:
        self.db, self.on_update = db, on_update
        self._lock = threading.Lock()
        self._read_at = float("-inf")  # the first change is read at once
        self._timer: threading.Timer | None = None
        self._closed = False

    def __call__(self, run_id: str) -> None:
        with self._lock:
            wait = self._read_at + self.REFRESH - time.monotonic()
            if wait > 0:
                if self._timer is None and not self._closed:
                    self._timer = threading.Timer(wait, self._trailing, args=(run_id,))
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._read_at = time.monotonic()
        self.on_update(run_wire(self.db, run_id))

    def _trailing(self, run_id: str) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            self._read_at = time.monotonic()
        self.on_update(run_wire(self.db, run_id))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
