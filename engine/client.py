"""The one facade the CLI and the TUI use to reach the engine.

It returns frozen dataclasses (views), never storage rows, so callers cannot trigger lazy loads
or hold a session. Storage and the executor are imported lazily: `dagtop check` and `dagtop
list` never pay for SQLModel's import, and nothing here imports a UI.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError, NoEngine, StorageError
from engine.history.plan import RunRequest
from engine.history.views import (
    AttemptView,
    CheckView,
    LogRef,
    MachineView,
    NodeStatus,
    RunView,
    SampleView,
    StepView,
    attempt_view,
    iso,
    node_statuses,
    run_views,
)
from engine.loading.config import Config, Paths, load_config, resolve_paths
from engine.service import ipc

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from engine.history.lineage import LineageNode, StaleState, render_lineage
    from engine.loading.manifest import Manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """What `dagtop db migrate` did: the revision found (None: a new database) and now."""

    found: str | None
    now: str
    had_stamp: bool  # False: a database from before migrations, stamped now


class Client:
    """Everything a user can do, for one project (a home folder and a pipelines folder).

    Args:
        home: The home folder (default `./.dagtop` or DAGTOP_HOME).
        pipelines: The pipelines folder (default `./pipelines` or DAGTOP_PIPELINES).
    """

    def __init__(self, home: str | Path | None = None, pipelines: str | Path | None = None) -> None:
        self.paths: Paths = resolve_paths(home, pipelines)
        self._manifest: Manifest | None = None
        self.engine: Any = None  # an Engine embedded in this process, once attached
        self._warm_server: Any = None
        self._backfill_reader: Any = None  # the UI's list of backfills, read every second

    # --- configuration and definitions --------------------------------------------------------

    @cached_property
    def config(self) -> Config:
        return load_config(self.paths.project)

    def _ensure_home(self) -> None:
        try:
            self.paths.home.mkdir(parents=True, exist_ok=True)
            # A name of this process and thread's own: several processes (a daemon, CLIs, the
            # UI) and threads check the same home at once.
            probe = self.paths.home / f".write-test-{os.getpid()}-{threading.get_ident()}"
            probe.write_text("")
            probe.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use home folder {self.paths.home}: {exc.strerror}") from exc

    def load(self, force: bool = False) -> Manifest:
        """The manifest of the pipelines folder (cached by file content in the home folder)."""
        if self.engine is not None and not force:
            return self.engine.manifest()  # type: ignore[no-any-return]
        if self._manifest is None or force:
            if not self.paths.pipelines.is_dir():
                raise EngineError(
                    f"no pipelines folder at {self.paths.pipelines} (use --pipelines DIR)",
                    title="No pipelines",
                )
            self._ensure_home()
            from engine.loading import loader

            self._manifest = loader.load(
                self.paths.pipelines, cache_dir=self.paths.home, timeout=self.config.load_timeout
            )
        return self._manifest

    # --- storage ------------------------------------------------------------------------------

    @cached_property
    def db(self) -> SAEngine:
        from engine.storage.db import database_url, open_db

        self._ensure_home()
        return open_db(database_url(self.paths.home, self.config.database_url))

    def _read(self) -> Any:
        from engine.storage.db import read_scope

        return read_scope(self.db)

    def _write(self) -> Any:
        from engine.storage.db import session_scope

        return session_scope(self.db)

    def database_url(self, url: str | None = None) -> str:
        """`url`, or the configured database: DAGTOP_DATABASE_URL, the config, the home's."""
        from engine.storage.db import database_url

        if url:
            return url
        self._ensure_home()
        return database_url(self.paths.home, self.config.database_url)

    def migrate_db(self, url: str | None = None) -> SchemaChange:
        """Create or upgrade the database's schema to this dagtop's (`dagtop db migrate`)."""
        from sqlalchemy.exc import OperationalError

        from engine.storage.db import (
            HEAD,
            connect,
            display_url,
            ensure_schema,
            first_line,
            revision,
        )

        target = self.database_url(url)
        db = connect(target)
        try:
            stamped = revision(db)
            found, now = (HEAD, HEAD) if stamped == HEAD else ensure_schema(db, upgrade=True)
        except OperationalError as exc:
            where = display_url(target)
            raise StorageError(f"cannot open database {where}: {first_line(exc)}") from exc
        finally:
            db.dispose()
        return SchemaChange(found=found, now=now, had_stamp=stamped is not None)

    def export_db(self, path: Path, url: str | None = None) -> dict[str, int]:
        """Write the database's history to a JSON-lines file; rows per table."""
        from engine.storage import transfer
        from engine.storage.db import open_db

        return transfer.export(open_db(self.database_url(url)), path)

    def import_db(self, path: Path, url: str | None = None) -> dict[str, int]:
        """Load an export into the database, which must have no history; rows per table."""
        from engine.storage import transfer
        from engine.storage.db import open_db

        return transfer.import_(open_db(self.database_url(url), upgrade=True), path)

    def verify_db(self) -> None:
        """Refuse a damaged database (SQLite's quick check), before anything acts on it.

        Raises:
            StorageError: the database is damaged; the message says how to restore it.
        """
        from engine.storage.db import verify

        verify(self.db)

    def check_db(self, url: str | None = None, quick: bool = False) -> Any:
        """SQLite's integrity check of the database (`dagtop db check`), which is read as it is:
        nothing is created or migrated. Returns a `Verdict` (path, ok, problems, size, runs).

        Raises:
            StorageError: there is no database file to check.
        """
        from engine.storage import backup
        from engine.storage.db import display_url, open_db, sqlite_path

        target = self.database_url(url)
        path = sqlite_path(target)
        if path is not None:
            return backup.check(path, quick=quick)
        # PostgreSQL checks its own pages: say whether it answers, at this dagtop's schema.
        db = open_db(target, upgrade=False)
        db.dispose()
        return backup.Verdict(Path(display_url(target)), True, (), 0, None)

    def backup_db(self, file: Path, url: str | None = None) -> int:
        """Copy the SQLite database to a new `file` with SQLite's online backup API, safe while
        an engine runs (`dagtop db backup`); returns the copy's size.

        Raises:
            StorageError: `file` exists, the database is PostgreSQL (use pg_dump), or damaged.
        """
        from engine.storage import backup
        from engine.storage.db import open_db

        db = open_db(self.database_url(url))
        try:
            return backup.backup(db, file)
        finally:
            db.dispose()

    def restore_db(self, file: Path, url: str | None = None) -> Any:
        """Replace the SQLite database with a copy of the backup `file`, setting the current one
        aside (`dagtop db restore`). Returns a `Restored` (database, backup, set_aside, runs).

        Raises:
            StorageError: the database is PostgreSQL, in use, or the backup is not usable.
        """
        from engine.storage import backup
        from engine.storage.db import sqlite_path

        target = self.database_url(url)
        path = sqlite_path(target)
        if path is None:
            raise StorageError(
                "dagtop db restore replaces a SQLite file; restore PostgreSQL with pg_restore",
                title="Not SQLite",
            )
        return backup.restore(path, file)

    def close(self) -> None:
        """On a clean exit: checkpoint the database's write-ahead log if this process wrote,
        and close its connections (SQLite then removes the -wal and -shm files)."""
        db = self.__dict__.get("db")  # never opened: nothing to do, and nothing to import
        if db is not None:
            from engine.storage.db import close

            close(db)

    # --- which engine runs things -------------------------------------------------------------

    def attach(self, engine: Any) -> None:
        """Route runs and commands to an engine embedded in this process (the TUI's)."""
        self.engine = engine

    def start_engine(self, kind: str = "tui") -> Any:
        """Start an engine embedded in this process and attach to it.

        Raises:
            EngineBusy: another live engine (a daemon) holds this home folder.
        """
        from engine.service.daemon import Engine

        engine = Engine(self.paths, self.config, kind=kind, db=self.db)
        engine.start()
        self.attach(engine)
        return engine

    def daemon(self) -> Any:
        """The live engine holding this home's lease in another process, or None."""
        from engine.service import lease

        holder = lease.live_holder(self.db)
        if holder is None or (self.engine is not None and holder.holder == self.engine.me):
            return None
        return holder

    def _local_engine(
        self, kind: str, payload: dict[str, Any], follow: bool = False
    ) -> tuple[Any, Iterator[dict[str, Any]]] | None:
        """Ask the engine listening on this home's socket; None when none listens there.

        Returns its result and, with `follow`, the updates it pushes afterwards.

        Raises:
            EngineError: the engine refused, or went away before answering.
        """
        if self.engine is not None or not ipc.available(self.paths.home):
            return None
        answers = ipc.request(
            self.paths.home, {"op": "command", "kind": kind, "payload": payload, "follow": follow}
        )
        try:
            first = next(answers)
        except ipc.Unavailable:
            return None  # a dead engine's socket file: use the database
        except (ipc.Closed, StopIteration, OSError, ValueError):
            raise EngineError(
                f"the engine went away before answering {kind!r}; check `dagtop runs`",
                title="No answer",
            ) from None
        if "error" in first:
            raise EngineError(first["error"], title="Engine refused")
        return first.get("result"), answers

    def _command(self, kind: str, payload: dict[str, Any], timeout: float = 15.0) -> Any:
        """Ask the engine that holds the lease to do something, and wait for its answer."""
        from engine.storage import repo

        answer = self._local_engine(kind, payload)
        if answer is not None:
            return answer[0]
        with self._write() as s:
            cmd_id = repo.add_command(s, kind, payload, time.time()).id or 0
        deadline = time.monotonic() + timeout
        delay = 0.005
        while time.monotonic() < deadline:
            with self._read() as s:
                cmd = repo.get_command(s, cmd_id)
            if cmd is not None and cmd.status == "done":
                return json.loads(cmd.result or "null")
            if cmd is not None and cmd.status == "failed":
                raise EngineError(cmd.error or f"{kind} failed", title="Engine refused")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        # Withdraw it, so an engine that wakes up later does not act on a request whose
        # sender has given up (and told its user so).
        with self._write() as s:
            # Locked, so an engine taking it right now either finishes first or skips it.
            cmd = repo.get_command(s, cmd_id, for_update=True)
            if cmd is not None and cmd.status == "pending":
                cmd.status = "abandoned"
                s.add(cmd)
            elif cmd is not None and cmd.status == "done":
                return json.loads(cmd.result or "null")
        raise EngineError(f"the engine did not answer within {timeout:g} s", title="No answer")

    # --- running ------------------------------------------------------------------------------

    def create_run(self, request: RunRequest) -> str:
        """Plan `request` and record its run and steps; returns the run id (nothing runs yet)."""
        from engine.history.plan import record

        manifest = self.load()
        with self._write() as s:
            return record(s, manifest, request)

    def submit(self, request: RunRequest) -> str:
        """Start a run on the attached or running engine; returns its id without waiting.

        Raises:
            NoEngine: no engine is running (use `materialize`, which runs in-process).
        """
        if self.engine is not None:
            return self.engine.submit(request)  # type: ignore[no-any-return]
        if self.daemon() is not None:
            return self._command("run", _request_payload(request))["run_id"]  # type: ignore[no-any-return]
        raise NoEngine("no engine is running: start `dagtop daemon` or `dagtop`")

    def execute(
        self, run_ids: Sequence[str], on_change: Callable[[str], None] | None = None
    ) -> None:
        """Run (or resume) recorded runs in this process until they finish."""
        from engine.executor.coordinator import Coordinator
        from engine.executor.recovery import reconcile

        reconcile(self.db)
        server, self._warm_server = self._warm_server, None
        coordinator = Coordinator(
            self.db, self.paths, self.config, self.load, on_change=on_change, forkserver=server
        )
        for run_id in run_ids:
            coordinator.submit(run_id)
        try:
            coordinator.run_until_complete(set(run_ids))
        except KeyboardInterrupt:
            # Ctrl-C: stop the steps we started and record them canceled, never "running".
            for run_id in run_ids:
                self.request_cancel(run_id)
            coordinator.run_until_complete(set(run_ids))
            raise
        finally:
            # The command exits right after: a webhook still queued on the alerts thread
            # would be lost with it. (The fork server is left to exit with this process:
            # waiting for it would add its interpreter's teardown to every command.)
            coordinator.send_alerts()

    def wait(
        self, run_id: str, on_change: Callable[[str], None] | None = None, poll: float = 0.05
    ) -> RunView:
        """Wait for a run that another engine executes; `on_change` sees each change."""
        last = None
        while True:
            view = self.run(run_id)
            stamp = (view.status, tuple((st.status, st.attempts) for st in view.steps))
            if stamp != last and on_change is not None:
                on_change(view.id)
            last = stamp
            if view.finished:
                return view
            time.sleep(poll)

    def prewarm(self) -> None:
        """Start the step fork server now, so it warms up on another core while this process
        imports storage and plans (a cold `dagtop materialize` saves the server's start-up)."""
        if self.engine is None and ipc.available(self.paths.home):
            return  # a local engine runs the steps with its own server
        if self._warm_server is None and os.environ.get("DAGTOP_FORKSERVER", "1") != "0":
            from engine.executor.forkserver import ForkServer

            try:
                self._warm_server = ForkServer(cwd=str(self.paths.project))
            except OSError:
                self._warm_server = None

    def _run_on_local_engine(
        self, request: RunRequest, on_change: Callable[[Any], None] | None
    ) -> RunView | None:
        """Hand the run to the engine on this home's socket and follow what it pushes: no
        storage import, no manifest load, no polling. None when no engine listens there.

        `on_change` gets each pushed RunView (the in-process paths give it the run id)."""
        answer = self._local_engine("run", _request_payload(request), follow=True)
        if answer is None:
            return None
        result, updates = answer
        view: RunView | None = None
        try:
            for update in updates:
                if "view" in update:
                    view = RunView.from_wire(update["view"])
                    if on_change is not None:
                        on_change(view)
        except (ipc.Closed, OSError, ValueError):
            pass  # the engine stopped while the run went on: follow it in the database
        if view is not None and view.finished:
            return view
        return self.wait(result["run_id"], on_change)

    def _run_now(self, request: RunRequest, on_change: Callable[[Any], None] | None) -> RunView:
        self._validate(request)
        if self.engine is not None or self.daemon() is not None:
            # An engine is up: its executor runs it (so limits and pools hold across runs).
            try:
                run_id = self.submit(request)
            except NoEngine:
                run_id = None  # the daemon went away between the two checks: run it here
            if run_id is not None:
                if self._warm_server is not None:
                    self._warm_server.close()
                    self._warm_server = None
                return self.wait(run_id, on_change)
        run_id = self.create_run(request)
        self.execute([run_id], on_change)
        return self.run(run_id)

    def materialize(
        self,
        selection: Sequence[str],
        partition: str | None = None,
        params: dict[str, Any] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> RunView:
        """Materialize a selection now and wait for the run to finish.

        Raises:
            SelectionError: the selection names no asset.
            PartitionError: the partition key is invalid for the selection.
        """
        request = RunRequest(
            selection=tuple(selection), partition=partition, params=dict(params or {})
        )
        return self._run_on_local_engine(request, on_change) or self._run_now(request, on_change)

    def run_pipeline(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> RunView:
        """Run a task pipeline now and wait for it to finish."""
        request = RunRequest(pipeline=name, params=dict(params or {}))
        return self._run_on_local_engine(request, on_change) or self._run_now(request, on_change)

    def _validate(self, request: RunRequest) -> None:
        from engine.history.plan import plan

        plan(self.load(), request)  # raises SelectionError / PartitionError; writes nothing

    def rerun_from_failure(
        self, run_id: str, on_change: Callable[[str], None] | None = None
    ) -> RunView:
        """Re-execute the failed, skipped and canceled steps of a run, reusing stored values.

        An interrupted run (its engine died) is resumed the same way.
        """
        from engine.executor.recovery import reconcile
        from engine.history.run_control import requeue_failed

        if self.engine is not None or self.daemon() is not None:
            if self.engine is not None:
                full_id = self.engine.rerun(run_id)
            else:
                full_id = self._command("rerun", {"run_id": run_id})["run_id"]
            return self.wait(full_id, on_change)
        reconcile(self.db)
        with self._write() as s:
            full_id = requeue_failed(s, run_id, time.time())
        self.execute([full_id], on_change)
        return self.run(full_id)

    def rerun(self, run_id: str) -> str:
        """Queue a run's failed, skipped and canceled steps on the running engine (no wait)."""
        if self.engine is not None:
            return self.engine.rerun(run_id)  # type: ignore[no-any-return]
        if self.daemon() is not None:
            return self._command("rerun", {"run_id": run_id})["run_id"]  # type: ignore[no-any-return]
        raise NoEngine("no engine is running: start `dagtop daemon` or `dagtop`")

    def request_cancel(self, run_id: str) -> str:
        from engine.storage import repo

        with self._write() as s:
            run = repo.find_run(s, run_id)
            run.cancel_requested = True
            run.updated_at = time.time()
            s.add(run)
            return run.id

    def cancel(self, run_id: str, wait: float = 10.0) -> RunView:
        """Cancel a run: queued steps are canceled, running ones stopped (SIGTERM, then SIGKILL).

        If no live process is running it, the run is settled here and now.
        """
        from engine.executor.recovery import owner_alive
        from engine.storage import repo

        full_id = self.request_cancel(run_id)
        if self.engine is not None:
            self.engine.cancel(full_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            view = self.run(full_id)
            if view.finished:
                return view
            with self._read() as s:
                owner = repo.find_run(s, full_id).owner
            if not owner_alive(owner) and self.engine is None and self.daemon() is None:
                self.execute([full_id])  # settles it: every step becomes canceled
                return self.run(full_id)
            time.sleep(0.05)
        return self.run(full_id)

    # --- backfills ----------------------------------------------------------------------------

    def backfill(
        self,
        selection: Sequence[str],
        keys: Sequence[str] | None = None,
        first: str | None = None,
        last: str | None = None,
        max_parallel: int = 4,
    ) -> str:
        """Record a backfill of `selection` over `keys` (or the range `first`..`last`).

        Raises:
            SelectionError, PartitionError: nothing is recorded.
        """
        from engine.loading.selection import resolve

        manifest = self.load()
        if keys is None:
            if first is None or last is None:
                raise EngineError("give --from and --to, or --partitions k1,k2")
            names = resolve(manifest, selection)
            pdefs = [manifest.assets[n].partitions_def for n in names]
            pdef = next((p for p in pdefs if p is not None), None)
            if pdef is None:
                raise EngineError(f"none of {', '.join(names)} is partitioned: nothing to backfill")
            from engine.authoring.partitions import InvalidPartitionKey
            from engine.errors import PartitionError

            try:
                keys = pdef.keys_between(first, last)
            except InvalidPartitionKey as exc:
                raise PartitionError(str(exc)) from None
        payload = {"selection": list(selection), "keys": list(keys), "max_parallel": max_parallel}
        answer = self._local_engine("backfill", payload)
        if answer is not None:
            return answer[0]["backfill_id"]  # type: ignore[no-any-return]
        if self.engine is not None:
            return self.engine.backfill(list(selection), list(keys), max_parallel)  # type: ignore[no-any-return]
        if self.daemon() is not None:
            return self._command("backfill", payload)["backfill_id"]  # type: ignore[no-any-return]
        from engine.automation.backfill import create_backfill

        with self._write() as s:
            return create_backfill(s, manifest, list(selection), list(keys), max_parallel)

    def backfill_action(self, action: str, backfill_id: str) -> str:
        """`cancel` or `resume` a backfill; returns its full id."""
        from engine.automation import backfill as bf

        if self.engine is not None:
            fn = self.engine.cancel_backfill if action == "cancel" else self.engine.resume_backfill
            return fn(backfill_id)  # type: ignore[no-any-return]
        if self.daemon() is not None:
            return self._command(f"backfill_{action}", {"backfill_id": backfill_id})["backfill_id"]  # type: ignore[no-any-return]
        if action == "resume":
            manifest = self.load()
            with self._write() as s:
                return bf.resume_backfill(s, manifest, backfill_id, time.time())
        with self._write() as s:
            full = bf.cancel_backfill(s, backfill_id, time.time())
            # No engine will cancel its unstarted runs: do it now, as one would (runs that a
            # command in progress executes are canceled by that command).
            bf.advance_backfill(s, full, True, time.time())
            return full

    def follow_backfill(
        self, backfill_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any] | None:
        """Follow a backfill that the engine on this home's socket runs, until it ends; None
        when no engine listens there (or it stopped before the backfill ended)."""
        answer = self._local_engine("follow_backfill", {"backfill_id": backfill_id}, follow=True)
        if answer is None:
            return None
        info: dict[str, Any] | None = None
        try:
            for update in answer[1]:
                if "backfill" in update:
                    info = update["backfill"]
                    if on_progress is not None:
                        on_progress(info)
        except (ipc.Closed, OSError, ValueError):
            return None
        return info

    def backfill_progress(self, backfill_id: str, with_keys: bool = True) -> dict[str, Any]:
        """A backfill's row and how many of its keys each status covers (one aggregate query);
        with `with_keys`, also its key list (`partitions`)."""
        from engine.automation.backfill import progress

        with self._read() as s:
            return progress(s, backfill_id, with_keys)

    def backfills(self, limit: int = 20, with_keys: bool = True) -> list[dict[str, Any]]:
        """The newest backfills and their progress. Without `with_keys` (the UI's list, read
        every second) each dict says only how many keys there are and the first and last,
        and only running backfills are counted again at each call."""
        from engine.automation.backfill import ProgressReader, progress
        from engine.storage import repo

        with self._read() as s:
            if with_keys:
                return [progress(s, b.id) for b in repo.recent_backfills(s, limit)]
            if self._backfill_reader is None:
                self._backfill_reader = ProgressReader()
            live = self.engine.backfill_progress if self.engine is not None else None
            return self._backfill_reader.recent(s, limit, live)

    def run_backfill_here(
        self, backfill_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Execute a backfill in this process (no engine is running) until it finishes.

        When all its runs may start at once (a backfill in ranges is often one run), they run
        as `materialize` runs them, on this process's coordinator; otherwise an engine starts
        here, whose admission keeps the backfill's limit and says how it progresses."""
        small = self._startable_at_once(backfill_id)
        if small is not None:
            return self._run_backfill_runs(backfill_id, small, on_progress)
        if self._warm_server is not None:
            self._warm_server.close()  # the engine starts its own
            self._warm_server = None
        from engine.service.daemon import Engine

        engine = Engine(
            self.paths,
            self.config,
            kind="cli",
            db=self.db,
            schedules=False,
            sensors=False,
            watch=False,
        )
        engine.start()
        try:
            info: dict[str, Any] | None = None
            for info in engine.follow_backfill(backfill_id):
                if on_progress is not None:
                    on_progress(info)
            if engine.failure is not None:  # its coordinator failed (a full disk, say)
                raise engine.failure
            assert info is not None  # the engine runs until the backfill ends
            return info
        finally:
            engine.stop()

    def _startable_at_once(self, backfill_id: str) -> list[str] | None:
        """The backfill's runs, if every one left is queued, unowned and within its limit."""
        from engine.automation.backfill import run_counts
        from engine.storage import repo

        with self._read() as s:
            backfill = repo.find_backfill(s, backfill_id)
            if backfill.status != "running" or backfill.cancel_requested:
                return None
            rows = run_counts(s, [backfill.id])[backfill.id]
            if sum(n for status, _, n in rows if status != "success") > backfill.max_parallel:
                return None
            left = [r for r in repo.backfill_run_states(s, backfill.id) if r[1] != "success"]
            if any(status != "queued" or owner for _, status, _, owner, _ in left):
                return None  # a run to recover or being canceled: the engine's path
            return [run_id for run_id, *_ in left]

    def _run_backfill_runs(
        self,
        backfill_id: str,
        run_ids: list[str],
        on_progress: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        from engine.automation.backfill import advance_backfills

        if on_progress is not None:
            on_progress(self.backfill_progress(backfill_id, with_keys=False))
        self.execute(run_ids)
        with self._write() as s:
            advance_backfills(s, time.time())  # success, failed or canceled, as an engine would
        info = self.backfill_progress(backfill_id)
        if on_progress is not None:
            on_progress(info)
        return info

    # --- partitions, schedules, sensors -------------------------------------------------------

    def partitions(self, asset: str) -> list[Any]:
        """The status of every partition of `asset` (see engine.history.partition_status)."""
        from engine.errors import SelectionError, suggest
        from engine.history.partition_status import partition_states

        manifest = self.load()
        if asset not in manifest.assets:
            raise SelectionError(f"unknown asset {asset!r}" + suggest(asset, manifest.assets))
        with self._read() as s:
            return partition_states(s, manifest, asset)

    def partition_changes(self, assets: Sequence[str], cursor: Any = None) -> Any:
        """The partition states of `assets` that may have changed since `cursor`, or all of
        them without one (a `PartitionChanges`; see engine.history.partition_status): what the
        partition matrix polls. Hand its `cursor` back at the next call.

        Raises:
            SelectionError: an unknown asset.
        """
        from engine.history.partition_status import partition_changes

        manifest = self.load()
        for asset in assets:
            self._known_asset(manifest, asset)
        with self._read() as s:
            return partition_changes(s, manifest, list(assets), cursor)

    # --- lineage and staleness ----------------------------------------------------------------

    def lineage(
        self, asset: str, partition: str | None = None, downstream: bool = False
    ) -> LineageNode:
        """How the current value of `asset` [partition] was produced: the materializations it
        consumed, back to the roots; or, with `downstream`, the assets that depend on it and
        their newest materializations (see engine.history.lineage).

        Raises:
            SelectionError: no such asset.
            PartitionError: the key is missing, not needed, or invalid.
            EngineError: (upstream) the asset partition was never materialized.
        """
        from engine.history.lineage import downstream_lineage, upstream_lineage

        manifest = self.load()
        self._known_asset(manifest, asset)
        build = downstream_lineage if downstream else upstream_lineage
        with self._read() as s:
            return build(s, manifest, asset, partition)

    def stale(self, selection: Sequence[str], partition: str | None = None) -> list[StaleState]:
        """Each asset of a selection, in dependency order: missing, stale (with the reasons)
        or current; partitioned assets at `partition`.

        Raises:
            SelectionError, PartitionError: as for `materialize`.
        """
        from engine.history.lineage import stale_states
        from engine.history.plan import validate_partition
        from engine.loading.selection import resolve

        manifest = self.load()
        names = resolve(manifest, selection)
        validate_partition(manifest, names, partition)
        with self._read() as s:
            return stale_states(s, manifest, names, partition)

    def materialize_stale(
        self,
        selection: Sequence[str],
        partition: str | None = None,
        params: dict[str, Any] | None = None,
        on_change: Callable[[str], None] | None = None,
        on_plan: Callable[[list[StaleState]], None] | None = None,
    ) -> tuple[list[StaleState], RunView | None]:
        """Materialize, as one run in dependency order, only what is missing or stale in a
        selection (Dagster's "materialize unsynced"). Returns every asset's state and the run,
        None when nothing was due; `on_plan` sees the states before the run starts."""
        states = self.stale(selection, partition)
        if on_plan is not None:
            on_plan(states)
        due = [st.asset for st in states if st.status != "current"]
        if not due:
            return states, None
        manifest = self.load()
        partitioned = any(manifest.assets[name].partitions is not None for name in due)
        view = self.materialize(due, partition if partitioned else None, params, on_change)
        return states, view

    @staticmethod
    def _known_asset(manifest: Manifest, asset: str) -> None:
        if asset not in manifest.assets:
            from engine.errors import SelectionError, suggest

            raise SelectionError(f"unknown asset {asset!r}" + suggest(asset, manifest.assets))

    def schedules(self) -> list[Any]:
        """Every schedule's status: next and last tick, last run, on/off (ScheduleStatus)."""
        if self.engine is not None and self.engine.scheduler is not None:
            return self.engine.scheduler.status()  # type: ignore[no-any-return]
        from engine.automation.scheduler import statuses

        return statuses(self.db, self.load(), self.config.timezone)

    def sensors(self) -> list[Any]:
        """Every file sensor's status: files seen, last file, on/off (SensorStatus)."""
        if self.engine is not None and self.engine.sensors is not None:
            return self.engine.sensors.status()  # type: ignore[no-any-return]
        from engine.automation.sensors import statuses

        return statuses(self.db, self.load())

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        """Turn a schedule or sensor on or off; the state is kept across restarts.

        Raises:
            EngineError: no schedule or sensor has that name.
        """
        if self.engine is not None:
            self.engine.set_enabled(kind, name, enabled)
            return
        if self.daemon() is not None:
            self._command("toggle", {"kind": kind, "name": name, "enabled": enabled})
            return
        from engine.errors import suggest
        from engine.storage import repo

        manifest = self.load()
        names = manifest.schedules if kind == "schedule" else manifest.sensors
        if name not in names:
            raise EngineError(f"no {kind} named {name!r}" + suggest(name, names))
        with self._write() as s:
            repo.set_toggle(s, kind, name, enabled, time.time())

    # --- reading ------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunView:
        """Raises: RunNotFound."""
        from engine.storage import repo

        with self._read() as s:
            run = repo.find_run(s, run_id)
            return self._views(s, [run])[0]

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunView]:
        """The newest runs first."""
        from engine.storage import repo

        with self._read() as s:
            return self._views(s, repo.recent_runs(s, limit, offset))

    def _views(self, s: Any, runs: Sequence[Any]) -> list[RunView]:
        return run_views(s, runs)

    def runs_since(self, updated_after: float, limit: int = 500) -> list[RunView]:
        """Runs changed after a time (by `updated_at`), for incremental refreshes."""
        from engine.storage import repo

        with self._read() as s:
            return self._views(s, repo.runs_changed_since(s, updated_after, limit))

    def attempts(self, run_id: str) -> list[AttemptView]:
        """Every attempt of every step of a run, in the order they started."""
        from engine.storage import repo

        with self._read() as s:
            run = repo.find_run(s, run_id)
            return [attempt_view(a) for a in repo.attempts_of(s, run.id)]

    def samples(self, attempt_id: int, since: float | None = None) -> list[SampleView]:
        """The resource samples of a step attempt (live while it runs, downsampled after);
        with `since`, only those taken after it (for polling a long attempt cheaply)."""
        from engine.storage import repo

        with self._read() as s:
            return [
                SampleView(t=x.t, cpu_percent=x.cpu_percent, rss_bytes=x.rss_bytes)
                for x in repo.samples_of(s, attempt_id, since)
            ]

    def node_statuses(self, pipeline: str | None = None) -> dict[str, NodeStatus]:
        """The latest step status of every asset, or of one task pipeline's tasks. An asset
        whose latest step succeeded but whose value is out of date (or gone) reads "stale",
        with why."""
        import dataclasses

        manifest = self.load()
        if pipeline is not None:
            found = manifest.pipelines.get(pipeline)
            keys = list(found.tasks) if found is not None else []
        else:
            keys = list(manifest.assets)
        with self._read() as s:
            statuses = node_statuses(s, keys, pipeline)
            if pipeline is not None:
                return statuses
            from engine.history.lineage import VALUE_MISSING, Staleness

            staleness = Staleness(s, manifest)
            done = {k: n for k, n in statuses.items() if n.status == "success"}
            staleness.preload_pairs(
                (key, [node.partition if manifest.assets[key].partitions else None])
                for key, node in done.items()
            )
            for key, node in done.items():
                part = node.partition if manifest.assets[key].partitions else None
                mat = staleness.current(key, part)
                why = staleness.reasons(key, part)
                if mat is not None and not staleness.present(mat):
                    why = (VALUE_MISSING,)
                if why:
                    statuses[key] = dataclasses.replace(node, status="stale", reason=", ".join(why))
            return statuses

    def describe(self) -> dict[str, Any]:
        """Every definition as plain data (what `dagtop list --json` prints)."""
        from engine.loading.describe import describe_definitions

        manifest = self.load()
        staleness = None
        if self._has_history():
            from engine.history.lineage import asset_staleness

            with self._read() as s:
                staleness = asset_staleness(s, manifest)
        return describe_definitions(manifest, self.config.timezone, staleness)

    def _has_history(self) -> bool:
        """Whether there is a database to read: without one, `dagtop list` needs no storage
        (SQLModel costs ~0.35 s to import) and nothing can be stale."""
        if os.environ.get("DAGTOP_DATABASE_URL") or self.config.database_url:
            return True
        return (self.paths.home / "dagtop.db").exists()

    def serve_forever(self) -> int:
        """Run this project's engine headless until SIGINT or SIGTERM (`dagtop daemon`)."""
        from engine.service.daemon import run_daemon

        return run_daemon(self.paths, self.config)

    def machine(self) -> MachineView:
        """This machine's CPU and memory use (for the UI's header)."""
        import psutil

        mem = psutil.virtual_memory()
        return MachineView(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_used=mem.total - mem.available,
            memory_total=mem.total,
        )

    def logs(self, run_id: str, step: str | None = None) -> list[LogRef]:
        """Every attempt's log file of a run (or of one step), in the order they started.

        Raises:
            RunNotFound: no such run.
            EngineError: the run has no step `step`.
        """
        from engine.storage import repo

        with self._read() as s:
            run = repo.find_run(s, run_id)
            attempts = repo.attempts_of(s, run.id)
            keys = [st.key for st in repo.steps_of(s, [run.id])[run.id]]
        if step is not None and step not in keys:
            from engine.errors import suggest

            raise EngineError(
                f"run {run.id} has no step {step!r}" + suggest(step, keys), title="Unknown step"
            )
        return [
            LogRef(key=a.key, attempt=a.attempt, status=a.status, path=Path(a.log_path))
            for a in attempts
            if step is None or a.key == step
        ]


def _request_payload(request: RunRequest) -> dict[str, Any]:
    return {
        "selection": list(request.selection),
        "pipeline": request.pipeline,
        "partition": request.partition,
        "params": request.params,
        "trigger": request.trigger,
    }


# The views are part of the facade: the CLI and the UI import them from here.
__all__ = [
    "AttemptView",
    "CheckView",
    "Client",
    "EngineError",
    "LineageNode",
    "LogRef",
    "MachineView",
    "NodeStatus",
    "RunRequest",
    "RunView",
    "SampleView",
    "StaleState",
    "StepView",
    "iso",
    "render_lineage",
]


def __getattr__(name: str) -> Any:
    # Lineage's types load on first use: most commands never need them.
    if name in ("LineageNode", "StaleState", "render_lineage"):
        from engine.history import lineage

        return getattr(lineage, name)
    raise AttributeError(f"module 'engine.client' has no attribute {name!r}")
