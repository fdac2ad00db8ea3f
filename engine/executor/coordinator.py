"""The coordinator: runs steps of any number of runs as monitored subprocesses.

One thread owns all of it: it picks ready steps within the global and per-pool limits, starts
each attempt, waits on the attempts' event pipes and exit notifications (pidfds) in one
selector, and records every transition in storage before and after the process runs, so a crash
at any instant leaves a history that `recovery.reconcile` can repair. Every attempt ends in
exactly one terminal state.

With `executor = "dask"` the attempts run on Dask workers instead (`dask_executor.py`): each is
a `RemoteAttempt` whose pipe the same selector watches, delivering the events, samples, placement
and end that a local attempt's pipe, monitor and pidfd would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine as SAEngine

from engine import iomanager
from engine.alerts import Alerter
from engine.config import Config, Paths
from engine.errors import EngineError
from engine.executor import launch as launching
from engine.executor.forkserver import ForkServer
from engine.executor.monitor import Monitor, Sample, TreeStats, stop_tree
from engine.executor.recovery import owner_alive
from engine.executor.state import LiveAttempt, RunState, StepState, Updates
from engine.manifest import Manifest
from engine.partitions import safe_key
from engine.status import RunStatus, StepStatus, transition_run, transition_step
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import CheckRecord, Materialization, StepAttempt

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 300.0
CANCEL_POLL = 0.5
SAMPLE_FLUSH = 1.0
CANCEL_GRACE = 3.0


def _owner_id() -> str:
    import psutil

    return f"{os.getpid()}:{psutil.Process().create_time():.3f}"


class Coordinator:
    """Executes runs that are already planned in storage.

    Args:
        db: The storage engine.
        paths: The home and pipelines folders.
        config: max_workers and pools.
        manifest: Returns the current manifest (it may change with hot reload).
        on_change: Called on the coordinator thread with a run id whenever that run changed.
    """

    def __init__(
        self,
        db: SAEngine,
        paths: Paths,
        config: Config,
        manifest: Callable[[], Manifest],
        on_change: Callable[[str], None] | None = None,
        forkserver: ForkServer | None = None,
    ) -> None:
        self.db = db
        self.paths = paths
        self.config = config
        self.manifest = manifest
        self.on_change = on_change
        self.owner = _owner_id()
        self._runs: dict[str, RunState] = {}
        self._live: dict[int, LiveAttempt] = {}
        self._inbox: deque[str] = deque()
        self._samples: deque[dict[str, Any]] = deque()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._monitor = Monitor(interval=0.2, on_sample=self._on_sample)
        self._last_cancel_poll = 0.0
        self._last_flush = 0.0
        self._last_live_sample: dict[int, float] = {}
        self.draining = False  # when set, no new step starts (graceful shutdown)
        self.use_forkserver = os.environ.get("DAGTOP_FORKSERVER", "1") != "0"
        self._server: ForkServer | None = forkserver  # may be started early by the caller
        if forkserver is not None:
            self._sel.register(forkserver.fileno(), selectors.EVENT_READ, ("forkserver", None))
        self._orphan_exits: list[int] = []
        self.alerter: Alerter | None = None
        self._dask: Any = None
        if config.executor == "dask":
            self._dask = self._dask_executor()  # now: an unreachable cluster is a user error

    def _dask_executor(self) -> Any:
        """The connection to the Dask cluster (opened on first use after a close).

        Raises:
            ExecutorError: distributed is missing or the scheduler cannot be reached.
        """
        if self._dask is None:
            from engine.executor.dask_executor import DaskExecutor

            assert self.config.dask_scheduler is not None
            self._dask = DaskExecutor(self.config.dask_scheduler)
        return self._dask

    # --- API (any thread) ---------------------------------------------------------------------

    def submit(self, run_id: str) -> None:
        """Execute (or resume) a planned run."""
        self._inbox.append(run_id)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    @property
    def busy(self) -> bool:
        return bool(self._runs or self._inbox)

    @property
    def steps_running(self) -> int:
        """Attempts whose process is alive right now."""
        return len(self._live)

    def is_active(self, run_id: str) -> bool:
        return run_id in self._runs

    def active_run_ids(self) -> list[str]:
        return list(self._runs)

    def pending_run_ids(self) -> list[str]:
        return list(self._inbox)

    # --- the loop (one thread) ----------------------------------------------------------------

    def run_until_complete(self, run_ids: set[str]) -> None:
        """Run the loop until every run in `run_ids` is finished (the CLI's way)."""
        self._monitor.start()
        try:
            while (
                self._inbox or any(rid in self._runs for rid in run_ids) or self._pending(run_ids)
            ):
                self.step_once()
        finally:
            self._monitor.stop()
            self._close_dask()

    def _pending(self, run_ids: set[str]) -> bool:
        return any(rid in self._inbox for rid in run_ids)

    def serve(self, stop: threading.Event) -> None:
        """Run the loop until `stop` is set; then start nothing new and return."""
        self._monitor.start()
        try:
            while not stop.is_set():
                self.step_once()
        finally:
            self._monitor.stop()
            self.close()

    def shutdown(self, grace: float = 0.0) -> None:
        """Start nothing new; wait up to `grace` for running steps, then leave them to recovery."""
        self.draining = True
        deadline = time.monotonic() + grace
        while self._live and time.monotonic() < deadline:
            self.step_once(timeout=0.1)
        self._flush_samples(force=True)

    def step_once(self, timeout: float = 0.5) -> None:
        now = time.time()
        while self._inbox:
            self._adopt(self._inbox.popleft(), now)
        if now - self._last_cancel_poll >= CANCEL_POLL and self._runs:
            self._last_cancel_poll = now
            self._poll_cancels()
        for run in list(self._runs.values()):
            self._advance(run, now)
        if not self.draining:
            self._start_ready(now)
        wait = self._wait_time(now, timeout)
        for sel_key, _ in self._sel.select(wait):
            what, attempt_id = sel_key.data
            if attempt_id is not None and attempt_id not in self._live:
                continue  # finished earlier in this same batch
            if what == "wake":
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif what == "events":
                self._read_events(self._live[attempt_id])
            elif what == "remote":
                self._remote_messages(self._live[attempt_id])
            elif what == "exit":
                live = self._live[attempt_id]
                if live.popen is not None:
                    self._finish(live, *_reap(live.popen))
                else:  # its fork server died: the exit status is lost, the events are not
                    self._finish(live, None, None)
            elif what == "forkserver":
                self._forkserver_exits()
        if not _HAS_PIDFD:
            for live in list(self._live.values()):
                if live.popen is not None and live.popen.poll() is not None:
                    self._finish(live)
        while self._orphan_exits:
            attempt_id = self._orphan_exits.pop()
            if attempt_id in self._live:
                self._finish(self._live[attempt_id], None, None)
        self._flush_samples()

    def _wait_time(self, now: float, cap: float) -> float:
        wait = cap
        if not _HAS_PIDFD and self._live:
            wait = min(wait, 0.02)
        for run in self._runs.values():
            for st in run.steps.values():
                if st.status == StepStatus.RETRYING and st.retry_at is not None:
                    wait = min(wait, max(0.0, st.retry_at - now))
        return wait

    # --- runs ---------------------------------------------------------------------------------

    def _adopt(self, run_id: str, now: float) -> None:
        if run_id in self._runs:
            return
        with session_scope(self.db) as s:
            run = repo.find_run(s, run_id)
            if RunStatus(run.status).finished:
                return
            if run.owner and run.owner != self.owner and owner_alive(run.owner):
                return  # another live engine is executing it
            steps = repo.steps_of(s, [run.id])[run.id]
            if run.status == RunStatus.QUEUED:
                transition_run(run, RunStatus.RUNNING)
                run.started_at = run.started_at or now
            run.owner = self.owner
            run.updated_at = now
            s.add(run)
            state = RunState.from_rows(run, steps)
        self._runs[run_id] = state
        log.info("[run %s] started (%d steps)", run_id, len(state.steps))
        self._changed(run_id)

    def _poll_cancels(self) -> None:
        with read_scope(self.db) as s:
            wanted = repo.cancel_requested(s, self._runs)
        for run_id in wanted:
            run = self._runs[run_id]
            if not run.canceling:
                run.canceling = True
                log.info("[run %s] cancel requested", run_id)

    def _advance(self, run: RunState, now: float) -> None:
        """Settle what follows from the current state: skips, cancels, the run's end."""
        updates: Updates = {}
        if run.canceling:
            for st in run.steps.values():
                if st.status in (StepStatus.QUEUED, StepStatus.RETRYING):
                    updates[st.key] = (StepStatus.CANCELED, "canceled by user")
            for live in self._live.values():
                if live.run_id == run.id and not live.canceled:
                    live.canceled = True
                    if live.remote is not None:
                        live.remote.cancel()
                        continue
                    threading.Thread(
                        target=stop_tree, args=(live.pid, CANCEL_GRACE), daemon=True
                    ).start()
        changed = True
        while changed:
            changed = False
            for st in run.steps.values():
                status = updates.get(st.key, (st.status, None))[0]
                if status != StepStatus.QUEUED:
                    continue
                reason = run.skip_reason(st, updates)
                if reason:
                    updates[st.key] = (StepStatus.SKIPPED, reason)
                    changed = True
        if updates:
            self._set_steps(run, updates, now)
        if all(st.status.finished for st in run.steps.values()) and not any(
            live.run_id == run.id for live in self._live.values()
        ):
            self._end_run(run, now)

    def _set_steps(self, run: RunState, updates: Updates, now: float) -> None:
        with session_scope(self.db) as s:
            for key, (status, reason) in updates.items():
                row = repo.step(s, run.id, key)
                assert row is not None
                transition_step(row, status)
                row.error = reason
                row.ended_at = now
                s.add(row)
                run.steps[key].status = status
            repo.add_events(
                s,
                [
                    {"run_id": run.id, "step_key": k, "ts": now, "kind": st.value, "message": r}
                    for k, (st, r) in updates.items()
                ],
            )
            repo.touch_runs(s, [run.id], now)
        self._changed(run.id)

    def _end_run(self, run: RunState, now: float) -> None:
        final = run.final_status()
        with session_scope(self.db) as s:
            row = repo.find_run(s, run.id)
            transition_run(row, final)
            row.ended_at = now
            row.updated_at = now
            row.owner = None
            s.add(row)
        del self._runs[run.id]
        log.info("[run %s] %s", run.id, final.value)
        self._changed(run.id)

    # --- starting steps -----------------------------------------------------------------------

    def _start_ready(self, now: float) -> None:
        in_pools: dict[str, int] = {}
        for live in self._live.values():
            if live.launch.pool:
                in_pools[live.launch.pool] = in_pools.get(live.launch.pool, 0) + 1
        manifest: Manifest | None = None
        for run in list(self._runs.values()):
            if run.canceling:
                continue
            for st in run.steps.values():
                if len(self._live) >= self.config.max_workers:
                    return
                if not run.ready(st, now):
                    continue
                manifest = manifest or self.manifest()
                pool = run.definition(manifest, st.key, "pool")
                if pool is not None:
                    limit = self.config.pools.get(pool, 1)
                    if in_pools.get(pool, 0) >= limit:
                        continue
                    in_pools[pool] = in_pools.get(pool, 0) + 1
                self._start(run, st, manifest, now)

    def _start(self, run: RunState, st: StepState, manifest: Manifest, now: float) -> None:
        attempt_no = st.attempts + 1
        error: str | None = None
        launch: launching.Launch | None = None
        with session_scope(self.db) as s:
            run_row = repo.find_run(s, run.id)
            try:
                launch = launching.prepare(
                    s, manifest, self.paths, run_row, st.key, attempt_no, self.config.values_dir
                )
            except launching.InputMissing as exc:
                error = str(exc)
            except KeyError:
                error = f"{st.key!r} is no longer defined in the pipelines"
            row = repo.step(s, run.id, st.key)
            assert row is not None
            transition_step(row, StepStatus.RUNNING)
            row.attempts = attempt_no
            row.started_at = row.started_at or now
            row.retry_at = None
            log_path = launching.log_path_for(self.paths, run.id, st.key, attempt_no)
            row.log_path = str(log_path)
            att = StepAttempt(
                step_id=st.id,
                run_id=run.id,
                key=st.key,
                attempt=attempt_no,
                log_path=str(log_path),
                started_at=now,
                # A Dask attempt's place is known once a worker starts it (_placed).
                host=None if self._dask else os.uname().nodename,
                worker=None if self._dask else "local",
            )
            s.add(row)
            s.add(att)
            s.flush()
            attempt_id = att.id or 0
            repo.touch_runs(s, [run.id], now)
        st.status, st.attempts = StepStatus.RUNNING, attempt_no
        if launch is None:
            # Nothing to run: the step fails before a process exists (and may not retry:
            # a missing input will still be missing in a second).
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(f"dagtop: step not started: {error}\n")
            self._record_end(
                run, st, attempt_id, StepStatus.FAILED, error, None, TreeStats(), now, retry=False
            )
            return
        if self._dask is not None:
            self._start_remote(run, st, launch, attempt_id, now)
            return
        spec_path = self.paths.runs / run.id / f"{safe_key(st.key)}.{attempt_no}.json"
        try:
            pid, popen, events_fd = self._spawn(launch, spec_path, attempt_id)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the step fails, not the engine
            error = f"could not start the step: {type(exc).__name__}: {exc}"
            self._record_end(run, st, attempt_id, StepStatus.FAILED, error, None, TreeStats(), now)
            return
        pidfd = os.pidfd_open(pid) if _HAS_PIDFD and popen is not None else None
        live = LiveAttempt(
            run.id, st.key, attempt_no, attempt_id, pid, popen, events_fd, pidfd, launch, now
        )
        self._live[attempt_id] = live
        if events_fd is not None:
            os.set_blocking(events_fd, False)
            self._sel.register(events_fd, selectors.EVENT_READ, ("events", attempt_id))
        if pidfd is not None:
            self._sel.register(pidfd, selectors.EVENT_READ, ("exit", attempt_id))
        self._monitor.watch(
            str(attempt_id), pid, memory_limit=launch.memory_limit, timeout=launch.timeout
        )
        create_time = _create_time(pid)
        with session_scope(self.db) as s:
            att_row = repo.attempt(s, attempt_id)
            assert att_row is not None
            att_row.pid, att_row.pid_create_time = pid, create_time
            s.add(att_row)
        log.info("[run %s] step %s attempt %d started (pid %d)", run.id, st.key, attempt_no, pid)
        self._changed(run.id)

    def _start_remote(
        self, run: RunState, st: StepState, launch: launching.Launch, attempt_id: int, now: float
    ) -> None:
        try:
            remote = self._dask_executor().submit(attempt_id, launch)
        except EngineError as exc:  # no worker offers the step's pool
            self._record_end(
                run, st, attempt_id, StepStatus.FAILED, exc.msg, None, TreeStats(), now,
                retry=False,
            )  # fmt: skip
            return
        except Exception as exc:  # noqa: BLE001 - the cluster failed us: the step fails
            error = f"could not send the step to Dask: {type(exc).__name__}: {exc}"
            self._record_end(run, st, attempt_id, StepStatus.FAILED, error, None, TreeStats(), now)
            return
        live = LiveAttempt(
            run.id, st.key, st.attempts, attempt_id, 0, None, None, None, launch, now,
            remote=remote,
        )  # fmt: skip
        self._live[attempt_id] = live
        self._sel.register(remote.fileno(), selectors.EVENT_READ, ("remote", attempt_id))
        log.info("[run %s] step %s attempt %d sent to Dask", run.id, st.key, st.attempts)
        self._changed(run.id)

    def _remote_messages(self, live: LiveAttempt) -> None:
        for msg in live.remote.drain():
            if "placed" in msg:
                self._placed(live, msg["placed"])
            if msg.get("events"):
                self._parse_events(live, msg["events"])
            for x in msg.get("samples") or ():
                self._samples.append(_sample_row(live.attempt_id, Sample(*x)))
            if "end" in msg:
                end = msg["end"]
                self._finish(live, end.get("code"), end.get("cpu"))
                return

    def _placed(self, live: LiveAttempt, where: dict[str, Any]) -> None:
        with session_scope(self.db) as s:
            att = repo.attempt(s, live.attempt_id)
            assert att is not None
            att.host, att.worker = where["host"], where["worker"]
            att.pid, att.pid_create_time = where["pid"], where.get("create_time")
            s.add(att)
        log.info(
            "[run %s] step %s attempt %d started on %s (%s, pid %d)",
            live.run_id, live.key, live.attempt, where["worker"], where["host"], where["pid"],
        )  # fmt: skip
        self._changed(live.run_id)

    def _close_dask(self) -> None:
        if self._dask is not None and not any(live.remote for live in self._live.values()):
            self._dask.close()
            self._dask = None

    # --- watching and finishing ---------------------------------------------------------------

    def _read_events(self, live: LiveAttempt) -> None:
        assert live.events_fd is not None
        chunk = b""
        try:
            while data := os.read(live.events_fd, 65536):
                chunk += data
        except BlockingIOError:
            pass
        else:  # EOF: the worker closed its end (it exited, or is about to)
            self._sel.unregister(live.events_fd)
            os.close(live.events_fd)
            live.events_fd = None
        self._parse_events(live, chunk)

    def _parse_events(self, live: LiveAttempt, chunk: bytes) -> None:
        for _ in range(live.feed(chunk)):
            log.warning("[run %s] step %s sent a malformed event", live.run_id, live.key)

    def _spawn(
        self, launch: launching.Launch, spec_path: Path, attempt_id: int
    ) -> tuple[int, subprocess.Popen[bytes] | None, int | None]:
        """Start an attempt: forked from the warm server when possible, else a new interpreter."""
        server = self._forkserver() if launch.spec is not None else None
        if server is not None:
            log_fd, read_fd, write_fd = launching.open_io(launch, spec_path)
            assert read_fd is not None and write_fd is not None
            try:
                pid = server.spawn(
                    attempt_id, str(spec_path), launch.cwd, launch.env, log_fd, write_fd
                )
                return pid, None, read_fd
            except OSError as exc:
                log.warning("fork server failed (%s); starting workers as new processes", exc)
                self._drop_forkserver()
                os.close(read_fd)
            finally:
                os.close(log_fd)
                os.close(write_fd)
        popen, events_fd = launching.spawn(launch, spec_path)
        return popen.pid, popen, events_fd

    def _forkserver(self) -> ForkServer | None:
        if not self.use_forkserver:
            return None
        if self._server is None:
            try:
                self._server = ForkServer(cwd=str(self.paths.project))
            except OSError as exc:
                log.warning("cannot start the fork server: %s", exc)
                self.use_forkserver = False
                return None
            self._sel.register(self._server.fileno(), selectors.EVENT_READ, ("forkserver", None))
        return self._server

    def _drop_forkserver(self) -> None:
        """The server is gone: watch its orphaned workers by pidfd, and stop using it."""
        if self._server is None:
            return
        self._sel.unregister(self._server.fileno())
        self._server.close()
        self._server = None
        self.use_forkserver = False
        for live in self._live.values():
            if live.popen is None and live.pidfd is None and live.remote is None and _HAS_PIDFD:
                try:
                    live.pidfd = os.pidfd_open(live.pid)
                except ProcessLookupError:
                    self._orphan_exits.append(live.attempt_id)
                    continue
                self._sel.register(live.pidfd, selectors.EVENT_READ, ("exit", live.attempt_id))

    def _forkserver_exits(self) -> None:
        assert self._server is not None
        try:
            exits = self._server.read_exits()
        except OSError:
            self._drop_forkserver()
            return
        by_pid = {
            live.pid: live
            for live in self._live.values()
            if live.popen is None and live.remote is None
        }
        for report in exits:
            live = by_pid.get(report["exit"])
            if live is not None:
                self._finish(live, report["code"], report["cpu"])

    def close(self) -> None:
        """Release the fork server and the selector (running steps are not touched), and send
        the alerts still queued (each hook has its own time limit)."""
        if self.alerter is not None:
            self.alerter.drain(timeout=self.alerter.timeout + 1)
            self.alerter.stop()
        if self._server is not None:
            self._sel.unregister(self._server.fileno())
            self._server.close()
            self._server = None
        self._close_dask()

    def _finish(self, live: LiveAttempt, returncode: int | None, cpu: float | None) -> None:
        if live.events_fd is not None:
            self._read_events(live)
            if live.events_fd is not None:
                self._sel.unregister(live.events_fd)
                os.close(live.events_fd)
        if live.pidfd is not None:
            self._sel.unregister(live.pidfd)
            os.close(live.pidfd)
        del self._live[live.attempt_id]
        if live.remote is not None:
            self._sel.unregister(live.remote.fileno())
            live.remote.close()
            stats = live.remote.stats or TreeStats()  # measured by the worker's monitor
        else:
            stats = self._monitor.unwatch(str(live.attempt_id))
        if cpu is not None:
            # A step shorter than the sampling interval is seen once at best; the kernel's CPU
            # accounting of the reaped process (and the children it waited for) is exact.
            stats.cpu_seconds = max(stats.cpu_seconds, cpu)
        for event in live.events:
            if event["e"] in ("finished", "error") and event.get("peak_rss"):
                stats.peak_rss_bytes = max(stats.peak_rss_bytes, int(event["peak_rss"]))
        self._last_live_sample.pop(live.attempt_id, None)
        now = time.time()
        run = self._runs[live.run_id]
        st = run.steps[live.key]
        end = live.ending(returncode, stats)
        self._record_end(
            run, st, live.attempt_id, end.status, end.error, returncode, stats, now, live=live,
            traceback=end.traceback, retry=end.retry,
        )  # fmt: skip

    def _record_end(
        self,
        run: RunState,
        st: StepState,
        attempt_id: int,
        status: StepStatus,
        error: str | None,
        returncode: int | None,
        stats: TreeStats,
        now: float,
        *,
        live: LiveAttempt | None = None,
        traceback: str | None = None,
        retry: bool = True,
    ) -> None:
        retrying = (
            status == StepStatus.FAILED
            and retry
            and st.attempts < st.max_attempts
            and not run.canceling
        )
        stale_values: list[str] = []
        events = live.events if live else []
        with session_scope(self.db) as s:
            att = repo.attempt(s, attempt_id)
            row = repo.step(s, run.id, st.key)
            assert att is not None and row is not None
            att.status = status.value
            att.ended_at, att.exit_code, att.error, att.traceback = (
                now,
                returncode,
                error,
                traceback,
            )
            att.peak_rss_bytes, att.peak_cpu_percent = stats.peak_rss_bytes, stats.peak_cpu_percent
            att.cpu_seconds, att.peak_threads = stats.cpu_seconds, stats.peak_threads
            att.read_bytes, att.write_bytes = stats.read_bytes, stats.write_bytes
            output = next((e for e in events if e["e"] == "output"), None)
            if output:
                att.output_path = output["path"]
            new_status = StepStatus.RETRYING if retrying else status
            transition_step(row, new_status)
            row.exit_code, row.error = returncode, error
            row.peak_rss_bytes = max(row.peak_rss_bytes or 0, stats.peak_rss_bytes) or None
            row.cpu_seconds = (row.cpu_seconds or 0.0) + stats.cpu_seconds
            if retrying:
                base = run.definition(self.manifest(), st.key, "retry_delay")
                base = 1.0 if base is None else base
                delay = min(base * 2 ** (st.attempts - 1), MAX_RETRY_DELAY)
                row.retry_at = now + delay
                st.retry_at = row.retry_at
            else:
                row.ended_at = now
            if status == StepStatus.SUCCESS and live is not None and live.launch.spec is not None:
                stale_values = self._record_outputs(s, run, live, attempt_id, events, now)
            s.add(att)
            s.add(row)
            repo.add_events(s, [_event_row(run.id, st.key, st.attempts, e) for e in events])
            repo.add_events(
                s,
                [
                    {
                        "run_id": run.id,
                        "step_key": st.key,
                        "attempt": st.attempts,
                        "ts": now,
                        "kind": new_status.value,
                        "message": error,
                    }
                ],
            )
            repo.replace_samples(s, attempt_id, [_sample_row(attempt_id, x) for x in stats.samples])
            repo.touch_runs(s, [run.id], now)
        st.status = new_status
        for path in stale_values:
            iomanager.remove(path)  # a path, or a URL when values_dir is one
        self._alert(run, st, new_status, error, log_path=live.launch.log_path if live else None)
        log.info(
            "[run %s] step %s attempt %d %s%s",
            run.id,
            st.key,
            st.attempts,
            new_status.value,
            f": {error}" if error else "",
        )
        self._changed(run.id)
        self.wake()

    def _record_outputs(
        self,
        s: Any,
        run: RunState,
        live: LiveAttempt,
        attempt_id: int,
        events: list[dict[str, Any]],
        now: float,
    ) -> list[str]:
        spec = live.launch.spec or {}
        if spec.get("kind") != "asset":
            return []
        # One output per partition key for a ranged asset; else one (or none: no value).
        outputs = [e for e in events if e["e"] == "output"] or [{}]
        metadata: dict[str, Any] = {}
        for e in events:
            if e["e"] == "metadata":
                metadata.update(e.get("data") or {})
        stale: list[str] = []
        for output in outputs:
            stale += repo.add_materialization(
                s,
                Materialization(
                    asset=live.key,
                    partition=output.get("partition", live.launch.partition),
                    run_id=run.id,
                    attempt_id=attempt_id,
                    created_at=now,
                    metadata_json=json.dumps(metadata, default=repr),
                    code_version=live.launch.code_version,
                    inputs_json=json.dumps(live.launch.input_ids),
                    value_path=output.get("path"),
                    value_size=output.get("size"),
                ),
            )
        records = []
        for e in events:
            if e["e"] != "check":
                continue
            records += [
                CheckRecord(
                    run_id=run.id,
                    asset=live.key,
                    partition=output.get("partition", live.launch.partition),
                    name=e["name"],
                    passed=bool(e["passed"]),
                    blocking=bool(e.get("blocking")),
                    description=e.get("description"),
                    metadata_json=json.dumps(e.get("metadata") or {}, default=repr),
                    error=e.get("error"),
                    created_at=now,
                )
                for output in outputs
            ]
            if e.get("blocking") and not e["passed"]:
                run.blocked[live.key] = f"blocking check {e['name']} on {live.key} failed"
        repo.add_check_records(s, records)
        return stale

    # --- alerts -------------------------------------------------------------------------------

    def _alert(
        self,
        run: RunState,
        st: StepState,
        status: StepStatus,
        error: str | None,
        log_path: Path | None,
    ) -> None:
        found = run.alert_for(self.manifest, self.config.alerts, st, status, error, log_path)
        if found is None:
            return
        if self.alerter is None:
            self.alerter = Alerter(window=self.config.alert_window)
        self.alerter.notify(*found)

    # --- samples ------------------------------------------------------------------------------

    def _on_sample(self, key: str, sample: Sample) -> None:
        # Called on the monitor thread: only queue it; the loop writes in batches.
        attempt_id = int(key)
        last = self._last_live_sample.get(attempt_id, 0.0)
        if sample.t - last >= 1.0:
            self._last_live_sample[attempt_id] = sample.t
            self._samples.append(_sample_row(attempt_id, sample))

    def _flush_samples(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._samples or (not force and now - self._last_flush < SAMPLE_FLUSH):
            return
        self._last_flush = now
        rows = []
        while self._samples:
            rows.append(self._samples.popleft())
        live_ids = set(self._live)
        rows = [r for r in rows if r["attempt_id"] in live_ids]
        if rows:
            with session_scope(self.db) as s:
                repo.add_samples(s, rows)

    def _changed(self, run_id: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(run_id)
            except Exception:  # noqa: BLE001 - a listener must never stop the executor
                log.exception("on_change listener failed")


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float | None]:
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


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _event_row(run_id: str, key: str, attempt: int, e: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in e.items() if k not in ("e", "t", "message")}
    return {
        "run_id": run_id,
        "step_key": key,
        "attempt": attempt,
        "ts": e.get("t", time.time()),
        "kind": e["e"],
        "message": e.get("message"),
        "data": json.dumps(data, default=repr),
    }


def _sample_row(attempt_id: int, x: Sample) -> dict[str, Any]:
    return {
        "attempt_id": attempt_id,
        "t": x.t,
        "cpu_percent": x.cpu_percent,
        "cpu_seconds": x.cpu_seconds,
        "rss_bytes": x.rss_bytes,
        "read_bytes": x.read_bytes,
        "write_bytes": x.write_bytes,
        "threads": x.threads,
        "children": x.children,
    }


_HAS_PIDFD = hasattr(os, "pidfd_open")
