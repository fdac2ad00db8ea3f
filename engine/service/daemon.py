"""The engine process: executor, schedules, sensors, hot reload and commands, composed.

An `Engine` runs embedded in the TUI or headless as `dagtop daemon`. Only the holder of the
lease runs one; everything else (a CLI in another terminal, a second UI) sends it commands
(engine.service.commands) over its local socket or through the database's command table, and
reads state from storage. Threads: the coordinator's loop, a
housekeeping loop (commands, run admission, backfills, lease heartbeat), APScheduler's, the
watchdog observers' and the sensors' settle thread. None of them polls faster than a few times
a second when idle.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlmodel import Session

from engine.authoring.iomanager import is_url
from engine.errors import EngineBusy, EngineError, suggest
from engine.executor.coordinator import Coordinator
from engine.executor.recovery import reconcile, sweep_values
from engine.history.plan import RunRequest, record
from engine.history.run_control import requeue_failed
from engine.history.views import run_views
from engine.loading import loader
from engine.loading.config import Config, Paths, database_setting
from engine.loading.manifest import Manifest
from engine.loading.watcher import PipelineWatcher, keep_last_good
from engine.protocol.commands import KeysChanged
from engine.redact import redact
from engine.service import lease
from engine.service.admission import Admission
from engine.service.commands import answer
from engine.service.events import EngineEvent
from engine.service.ipc import SocketServer, socket_path
from engine.status import BackfillStatus, CommandStatus
from engine.storage import repo
from engine.storage.db import close, read_scope, session_scope, sqlite_path, verify

log = logging.getLogger(__name__)

HOUSEKEEPING = 0.2
FOLLOW_REFRESH = 1.0
"""A run's follower reads it at least this often, should a change event ever be missed."""
FOLLOW_COALESCE = 0.1
"""Seconds of further changes a run's follower gathers before it reads the run again."""
BACKUP_RETRY = 3600.0
"""Seconds before a rolling backup that failed is tried again."""
UI_BACKUP_SETTLE = 20.0
"""Seconds the UI's engine waits before its first rolling backup."""


class Engine:
    """One project's engine.

    Args:
        paths: Home and pipelines folders.
        config: Project settings.
        kind: "daemon" or "tui" (shown to other processes that find the lease taken).
        db: An open storage engine (opened from the home folder when None).
        schedules: Run the cron scheduler (off for tests that drive it directly).
        sensors: Run file sensors.
        automation: Run the `auto` sensor (asset automation conditions).
        watch: Reload pipelines when their files change.
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        kind: str = "daemon",
        db: Any = None,
        schedules: bool = True,
        sensors: bool = True,
        watch: bool = True,
        automation: bool = True,
    ) -> None:
        from engine.storage.db import database_url, open_db

        self.paths = paths
        self.config = config
        # Fixed at start, as its database is: compared with each socket request's.
        self._database_setting = database_setting(config)
        self.kind = kind
        self.db = db if db is not None else open_db(database_url(paths.home, config.database_url))
        self.me = lease.my_id(kind, paths.home)
        self._manifest: Manifest | None = None
        self._manifest_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[Callable[[EngineEvent], None]] = []
        self._lost_lease = False
        self.coordinator = Coordinator(
            self.db, paths, config, self.manifest, on_change=self._run_changed
        )
        self._admission = Admission(self.db, self.coordinator, limit=max(2, config.max_workers * 2))
        self._want_schedules, self._want_sensors, self._want_watch = schedules, sensors, watch
        self.scheduler: Any = None
        self.sensors: Any = None
        self.custom_sensors: Any = None
        # What evaluates sensors here and hears of their toggles (see
        # engine.automation.sensor_registry.SensorPart): file sensors, custom sensors, and
        # whatever built-in sensor attaches itself.
        self.sensor_parts: list[Any] = []
        self._want_automation = automation
        self.automation: Any = None
        self.watcher: PipelineWatcher | None = None
        self._socket: SocketServer | None = None
        self.started_at: float | None = None
        self.failure: BaseException | None = None
        """What stopped the engine on its own (its coordinator failed), if anything did."""

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Take the lease, recover what a dead engine left, and start every part.

        Raises:
            EngineBusy: another live engine holds this home folder.
            StorageError: the database is damaged (SQLite's quick check): nothing starts,
                nothing is repaired or swept on what its damaged pages say.
        """
        verify(self.db)
        holder = lease.try_acquire(self.db, self.me)
        if holder is not None:
            # The holder's own home, host and pid: with a shared database it may be anywhere.
            raise EngineBusy(
                f"an engine is already running on this database: {holder.description}; stop "
                "it first, or start this one with `dagtop daemon --standby` to take over when "
                "it stops"
            )
        self.started_at = time.time()
        reconcile(self.db)
        values = self.config.values_dir
        if values is not None and is_url(values):
            # A remote store may answer slowly, or not at all: the start does not wait for it.
            threading.Thread(
                target=sweep_values,
                args=(self.db, self.paths, values),
                name="dagtop-value-sweep",
                daemon=True,
            ).start()
        else:
            sweep_values(self.db, self.paths, values)
        self.reload(initial=True)
        self._spawn(self._coordinate, name="dagtop-coordinator")
        # The first pass at once, not a beat later: the runs already queued (a backfill the
        # CLI runs here, a daemon restarted mid-backfill) start now.
        self._wake.set()
        self._spawn(self._housekeeping, name="dagtop-housekeeping")
        self._listen()  # runs can be taken from here on; schedules and sensors start next
        if self._want_schedules:
            from engine.automation.scheduler import Scheduler

            self.scheduler = Scheduler(
                self.db, self._record_run, self._start_run, timezone=self.config.timezone
            )
            self.scheduler.sync(self.manifest())
            self.scheduler.start()
        if self._want_sensors:
            from engine.automation.sensors import SensorRunner

            self.sensors = SensorRunner(self.db, self._record_run, self._start_run)
            self.sensors.sync(self.manifest())
            self.sensors.start()
            from engine.automation.custom_sensors import CustomSensorRunner

            self.custom_sensors = CustomSensorRunner(
                self.db,
                self.paths.pipelines,
                self._record_run,
                self._start_run,
                on_tick=lambda outcome: self._emit(EngineEvent("sensor", outcome.sensor)),
            )
            self.custom_sensors.sync(self.manifest())
            self.custom_sensors.start()
            self.sensor_parts += [self.sensors, self.custom_sensors]
        if self._want_automation:
            from engine.automation.auto import Automation

            self.automation = Automation(
                self.db,
                self.manifest,
                self._record_run,
                self._start_run,
                timezone=self.config.timezone,
            )
            self.automation.start()
            self.sensor_parts.append(self.automation)
        if self._want_watch and self.paths.pipelines.is_dir():
            self.watcher = PipelineWatcher(self.paths.pipelines, self.reload)
            self.watcher.start()
        # Rolling backups are the long-lived engines' (a command's own lives for a backfill).
        backups = self.config.backups > 0 and self.kind != "cli"
        if backups and sqlite_path(str(self.db.url)) is not None:
            self._spawn(self._rolling_backups, name="dagtop-backups")
        log.info("engine started (%s) for %s", self.kind, self.paths.home)

    def _rolling_backups(self) -> None:
        """Keep the newest `config.backups` copies of a SQLite history beside it, one every
        `config.backup_every` (the first at once when the newest is older than that)."""
        from engine.storage import backup

        path = sqlite_path(str(self.db.url))
        assert path is not None
        # The UI's engine leaves its first copy until the first frame is long drawn: copying
        # the history competes with the UI's first reads for the disk and the cores.
        if self.kind == "tui" and self._stop.wait(UI_BACKUP_SETTLE):
            return
        while not self._stop.wait(backup.due_in(path, self.config.backup_every)):
            try:
                made = backup.rolling_backup(self.db, self.config.backups)
                log.info("backed up the history to %s", made)
                continue
            except EngineError as exc:  # a damaged database is never copied over a backup
                log.error("no backup taken: %s", exc.msg)
            except Exception:  # noqa: BLE001 - keep the engine alive; the error is logged
                log.exception("no backup taken")
            if self._stop.wait(BACKUP_RETRY):
                return

    def _coordinate(self) -> None:
        """The coordinator's loop. If it fails (the database's disk is full, say), the engine
        stops rather than live on without it, its runs waiting forever; the next engine to
        start recovers them."""
        try:
            self.coordinator.serve(self._stop)
        except Exception as exc:
            self.failure = exc
            if isinstance(exc, EngineError):
                # A command's own engine raises it to its user, who gets it once.
                level = logging.INFO if self.kind == "cli" else logging.ERROR
                log.log(level, "engine stopping: %s", exc.msg)
            else:
                log.exception("engine stopping: the coordinator failed")
            why = exc.msg if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            self._emit(EngineEvent("stopped", redact(why.splitlines()[0] if why else "")))
            threading.Thread(target=self.stop, name="dagtop-stop", daemon=True).start()

    def _listen(self) -> None:
        """Answer commands from this machine on the home's socket (a shortcut past the
        database command table, which keeps working without it)."""
        from engine.service.socket_requests import SocketRequests

        server = SocketServer(socket_path(self.paths.home), SocketRequests(self).handle)
        try:
            server.start()
        except OSError as exc:
            log.warning("no local socket (%s): commands go through the database", exc)
            return
        self._socket = server

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, grace: float = 3.0) -> None:
        """Stop cleanly: no new steps start; running ones get `grace` seconds to finish, then
        are left for the next engine to reconcile."""
        if self._stop.is_set():
            return
        log.info("engine stopping")
        if self._socket is not None:
            self._socket.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.sensors is not None:
            self.sensors.stop()
        if self.custom_sensors is not None:
            self.custom_sensors.stop()
        if self.automation is not None:
            self.automation.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        self.coordinator.draining = True
        deadline = time.monotonic() + grace
        while self.coordinator.steps_running and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self.coordinator.wake()
        for thread in self._threads:
            thread.join(timeout=5)
        lease.release(self.db, self.me)
        close(self.db)  # checkpoint: no -wal and -shm left beside the database
        log.info("engine stopped")

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self._stop.is_set()

    @property
    def timezone(self) -> str | None:
        return self.config.timezone

    @property
    def database_setting(self) -> str | None:
        return self._database_setting

    # --- definitions --------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        if self._manifest is None:
            self.reload(initial=True)
        assert self._manifest is not None
        return self._manifest

    def reload(self, initial: bool = False) -> Manifest:
        """Load the pipelines again (only changed files are imported) and resync."""
        new = loader.load(
            self.paths.pipelines, cache_dir=self.paths.home, timeout=self.config.load_timeout
        )
        with self._manifest_lock:
            merged = keep_last_good(self._manifest, new)
            self._manifest = merged
        if not initial:
            if self.scheduler is not None:
                self.scheduler.sync(merged)
            if self.sensors is not None:
                self.sensors.sync(merged)
            if self.custom_sensors is not None:
                self.custom_sensors.sync(merged)
            if self.automation is not None:
                self.automation.poke(full=True)
            log.info(
                "pipelines reloaded: %d assets, %d broken file(s)",
                len(merged.assets),
                len(merged.errors),
            )
        self._emit(EngineEvent("reload"))
        return merged

    # --- runs ---------------------------------------------------------------------------------

    def _record_run(self, session: Session, request: RunRequest) -> str:
        return record(session, self.manifest(), request)

    def _start_run(self, _run_id: str) -> None:
        self._wake.set()

    def submit(self, request: RunRequest) -> str:
        """Record a run and let the engine start it; returns the run id at once."""
        with session_scope(self.db) as s:
            run_id = self._record_run(s, request)
        self._wake.set()
        self._emit(EngineEvent("run", run_id))
        return run_id

    def cancel(self, run_id: str) -> str:
        with session_scope(self.db) as s:
            run = repo.find_run(s, run_id)
            run.cancel_requested = True
            run.updated_at = time.time()
            s.add(run)
            full = run.id
        self._wake.set()
        self.coordinator.wake()
        return full

    def follow_run(self, run_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """A run now and after each change until it ends, this engine stops or `timeout`
        seconds pass (as `RunView.to_wire()`). It waits on the engine's change events, not on
        a poll, and reads the run at most every `FOLLOW_COALESCE` seconds while it runs.

        Raises:
            RunNotFound: no such run.
        """
        with read_scope(self.db) as s:
            run_id = repo.find_run(s, run_id).id  # a prefix names it too
        changed, ended = threading.Event(), threading.Event()

        def on_event(event: EngineEvent) -> None:
            if event.kind == "run" and event.ref == run_id:
                if event.ended:
                    ended.set()
                changed.set()

        deadline = None if timeout is None else time.monotonic() + timeout
        unsubscribe = self.subscribe(on_event)
        try:
            last = None
            while self.running:
                with read_scope(self.db) as s:
                    view = run_views(s, [repo.find_run(s, run_id)])[0]
                wire = view.to_wire()
                if wire != last:
                    yield wire
                    last = wire
                if view.finished:
                    return
                left = FOLLOW_REFRESH if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return
                changed.wait(min(left, FOLLOW_REFRESH))
                # A run changes a few times per step: reading the whole run at each change would
                # cost n² for n steps. Gather a burst, unless the change ended the run.
                ended.wait(FOLLOW_COALESCE)
                changed.clear()
        finally:
            unsubscribe()

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        """Call `callback` (on an engine thread) for every event; returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, event: EngineEvent) -> None:
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - a listener must never break the engine
                log.exception("engine listener failed")

    def _run_changed(self, run_id: str) -> None:
        # Called on the coordinator's thread for every step change; admission only has new
        # room once a run has ended, so only then is housekeeping woken early.
        ended = not self.coordinator.is_active(run_id)
        if ended:
            self._wake.set()
        if self.automation is not None:
            # Each step's end may have recorded a materialization: the `auto` sensor evaluates
            # right after (and checks first, in one indexed read, that one was recorded).
            self.automation.poke(full=ended)
        self._emit(EngineEvent("run", run_id, ended))

    # --- backfills ----------------------------------------------------------------------------

    def backfill(self, selection: Sequence[str], keys: Sequence[str], max_parallel: int = 4) -> str:
        from engine.automation.backfill import create_backfill

        with session_scope(self.db) as s:
            backfill_id = create_backfill(
                s, self.manifest(), list(selection), list(keys), max_parallel
            )
        self._wake.set()
        self._emit(EngineEvent("backfill", backfill_id))
        return backfill_id

    def cancel_backfill(self, backfill_id: str) -> str:
        from engine.automation.backfill import cancel_backfill

        with session_scope(self.db) as s:
            full = cancel_backfill(s, backfill_id, time.time())
        self._wake.set()
        self.coordinator.wake()
        return full

    def resume_backfill(self, backfill_id: str) -> str:
        from engine.automation.backfill import resume_backfill

        with session_scope(self.db) as s:
            full = resume_backfill(s, self.manifest(), backfill_id, time.time())
        self._admission.forget(full)  # it has new runs
        self._wake.set()
        return full

    def backfill_progress(self, backfill_id: str) -> dict[str, Any] | None:
        """A running backfill's progress from memory (no key list), or None when this engine
        does not track it (not running, or not seen yet)."""
        return self._admission.progress(backfill_id)

    def follow_backfill(self, backfill_id: str, every: float = 0.25) -> Iterator[dict[str, Any]]:
        """A backfill's progress now and after each change (at most every `every` seconds)
        until it ends or this engine stops. Pushed from admission's memory; storage is read only
        before admission has seen the backfill and once at the end, where the last update also
        carries the key list.

        Raises:
            RunNotFound: no such backfill.
        """
        from engine.automation.backfill import progress

        changed = threading.Event()

        def on_event(event: EngineEvent) -> None:
            if event.kind == "backfill" and event.ref == backfill_id:
                changed.set()

        unsubscribe = self.subscribe(on_event)
        try:
            last: dict[str, Any] | None = None
            last_at = 0.0
            while self.running:
                info = self._admission.progress(backfill_id)
                if info is None:
                    with read_scope(self.db) as s:
                        info = progress(s, backfill_id, with_keys=True)
                    if info["status"] != BackfillStatus.RUNNING:
                        yield info
                        return
                    info.pop("partitions")
                if info != last:
                    yield info
                    last, last_at = info, time.monotonic()
                changed.wait(1.0)  # admission says when it changed; the timeout is a safety net
                changed.clear()
                # Gather a burst of changes into one update, unless the backfill just ended.
                rest = every - (time.monotonic() - last_at)
                if rest > 0 and self._admission.progress(backfill_id) is not None:
                    time.sleep(rest)
        finally:
            unsubscribe()

    # --- schedules and sensors ----------------------------------------------------------------

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        """Turn a schedule or a sensor (of any kind) on or off, persistently.

        Raises:
            EngineError: nothing of that kind has that name.
        """
        if kind == "schedule":
            if self.scheduler is None:
                raise EngineError("schedules are not running in this engine")
            self.scheduler.set_enabled(name, enabled)
        else:
            part = next((p for p in self.sensor_parts if p.owns(name)), None)
            if part is not None:
                part.set_enabled(name, enabled)
            else:
                from engine.automation.sensor_registry import sensor_names

                names = sensor_names(self.manifest())
                if name not in names:
                    raise EngineError(
                        f"unknown sensor {name!r}{suggest(name, names)} (see `dagtop sensors`)",
                        title="Unknown sensor",
                    )
                with session_scope(self.db) as s:  # a built-in sensor reads it at its next pass
                    repo.set_toggle(s, "sensor", name, enabled, time.time())
        self._emit(EngineEvent(kind, name))

    # --- dynamic partitions -------------------------------------------------------------------

    def change_keys(self, op: str, name: str, keys: Sequence[str]) -> KeysChanged:
        """Add or remove keys of dynamic partitions (see engine.history.dynamic.change)."""
        from engine.history.dynamic import change

        changed = change(self.db, self.manifest(), op, name, keys, time.time())
        self._emit(EngineEvent("keys", name))
        return changed

    # --- the housekeeping loop ----------------------------------------------------------------

    def _housekeeping(self) -> None:
        last_beat = time.monotonic()
        said: str | None = None  # the last error logged, so that a lasting one is said once
        while not self._stop.is_set():
            self._wake.wait(HOUSEKEEPING)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if time.monotonic() - last_beat >= lease.HEARTBEAT:
                    last_beat = time.monotonic()
                    if not lease.heartbeat(self.db, self.me):
                        log.error("lost the engine lease to another process; stopping")
                        self._lost_lease = True
                        threading.Thread(target=self.stop, daemon=True).start()
                        return
                self._serve_commands()
                self._admit()
                said = None
            except EngineError as exc:  # a full disk, say: one line, not one per tick
                if exc.msg != said:
                    log.error("housekeeping failed: %s", exc.msg)
                said = exc.msg
            except Exception:  # noqa: BLE001 - keep the engine alive; the error is logged
                log.exception("housekeeping failed")

    def _admit(self) -> None:
        """Hand queued runs to the coordinator, within the run and backfill limits (see
        engine.service.admission: a pass costs what changed since the last one)."""
        if self.coordinator.draining:
            return
        changed, more = self._admission.run_pass()
        for backfill_id in changed:
            self._emit(EngineEvent("backfill", backfill_id))
        if more:
            self._wake.set()

    def _serve_commands(self) -> None:
        # Most ticks find none (this machine's commands come over the socket): check with a
        # read before taking SQLite's one write lock.
        with read_scope(self.db) as s:
            if not repo.has_pending_commands(s):
                return
        with session_scope(self.db) as s:
            commands = repo.take_commands(s, time.time())
        for cmd in commands:
            status, result, error = CommandStatus.DONE, None, None
            try:
                result = answer(self, cmd.kind, json.loads(cmd.payload or "{}"))
            except EngineError as exc:
                status, error = CommandStatus.FAILED, exc.msg
            except Exception as exc:  # noqa: BLE001 - report, never crash the engine
                log.exception("command %s failed", cmd.kind)
                status, error = CommandStatus.FAILED, f"{type(exc).__name__}: {exc}"
            with session_scope(self.db) as s:
                row = repo.get_command(s, cmd.id or 0)
                if row is not None:
                    row.status, row.done_at = status, time.time()
                    row.result = json.dumps(result) if result is not None else None
                    row.error = error
                    s.add(row)

    def rerun(self, run_id: str) -> str:
        """Queue a run's failed, skipped and canceled steps again (re-run from failure)."""
        with session_scope(self.db) as s:
            full = requeue_failed(s, run_id, time.time())
        self._admission.refresh()  # an old run queued again: admission reads the queue anew
        self._wake.set()
        return full


def run_daemon(paths: Paths, config: Config, standby: bool = False) -> int:
    """`dagtop daemon`: run the engine until SIGINT or SIGTERM; returns the exit code.

    With `standby`, an engine that finds the lease held waits, and starts as soon as it can
    take it (its holder stopped, died on this machine, or stopped renewing it on another).
    """
    import signal

    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    # Handlers first: a SIGTERM that arrives while the engine starts still stops it cleanly.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    engine = Engine(paths, config, kind="daemon")
    try:
        if standby:

            def waiting(holder: lease.Holder) -> None:
                log.info(
                    "standby: %s holds this database; taking over when it stops", holder.description
                )

            if not lease.wait_to_acquire(engine.db, engine.me, stop, waiting):
                close(engine.db)
                return 0
            log.info("standby: took over the lease")
        engine.start()
    except BaseException:
        close(engine.db)  # refused (a damaged database, another engine): leave no -wal behind
        raise
    try:
        while not stop.wait(0.5):
            if engine._lost_lease:
                return 1
            if engine.failure is not None:
                break
    finally:
        engine.stop()
    if isinstance(engine.failure, EngineError):
        raise engine.failure  # one line on stderr, and a non-zero exit
    return 0 if engine.failure is None else 1


__all__ = ["Engine", "EngineBusy", "EngineEvent", "run_daemon"]
