"""The coordinator: runs steps of any number of runs as monitored subprocesses.

One thread owns all of it: it picks ready steps within the global and per-pool limits, starts
each attempt, waits on the attempts' event pipes and exit notifications (pidfds) in one
selector, and records every transition in storage before and after the process runs, so a crash
at any instant leaves a history that `recovery.reconcile` can repair. Every attempt ends in
exactly one terminal state.

With `executor = "dask"` the attempts run on Dask workers instead (`dask_executor.py`): each is
a `RemoteAttempt` whose pipe the same selector watches, delivering the events, samples, placement
and end that a local attempt's pipe, monitor and pidfd would.

This module is the loop: it asks the rules in `state.py` what follows (which steps start, which
end without running, how an attempt's end settles its step), has `recording.py` write it, and
then applies it to the state in memory; starting a local process (from the fork server or not)
and reaping it are in `local.py`, the process start itself in `spawn.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine as SAEngine

from engine.authoring.partitions import safe_key
from engine.errors import EngineError
from engine.executor import recording
from engine.executor.alerts import Alerter
from engine.executor.forkserver import ForkServer
from engine.executor.leftovers import Leftovers
from engine.executor.local import HAS_PIDFD, LocalProcesses, create_time, reap, still_running
from engine.executor.monitor import Monitor, Sample, TreeStats, stop_tree
from engine.executor.spawn import Launch
from engine.executor.state import Ending, LiveAttempt, RunState, StepState, Updates
from engine.loading.config import Config, Paths
from engine.loading.manifest import Manifest
from engine.status import StepStatus
from engine.storage import repo
from engine.storage.db import read_scope

if TYPE_CHECKING:
    from engine.executor.dask_executor import DaskExecutor  # imports distributed: only on use
    from engine.protocol.worker import Placement

log = logging.getLogger(__name__)

CANCEL_POLL = 0.5
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
        self._samples = recording.LiveSamples()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._monitor = Monitor(interval=0.2, on_sample=self._samples.on_sample)
        self._last_cancel_poll = 0.0
        self.draining = False  # when set, no new step starts (graceful shutdown)
        self._orphan_exits: list[int] = []
        # The fork server may have been started early by the caller.
        self._local = LocalProcesses(paths.project, self._sel, forkserver, self._watch_orphans)
        self.alerter: Alerter | None = None
        self._dask: DaskExecutor | None = None
        if config.executor == "dask":
            self._dask = self._dask_executor()  # now: an unreachable cluster is a user error

    def _dask_executor(self) -> DaskExecutor:
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
        self._end_leftovers_now()
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
            if attempt_id is not None and (
                attempt_id not in self._live or self._live[attempt_id].exited is not None
            ):
                continue  # it exited earlier in this same batch (its descriptors are closed)
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
                    self._finish(live, *reap(live.popen))
                else:  # its fork server died: the exit status is lost, the events are not
                    self._finish(live, None, None)
            elif what == "forkserver":
                self._forkserver_exits()
        if not HAS_PIDFD:
            self._poll_exits()
        while self._orphan_exits:
            attempt_id = self._orphan_exits.pop()
            if attempt_id in self._live:
                self._finish(self._live[attempt_id], None, None)
        self._poll_leftovers()
        self._flush_samples()

    def _poll_exits(self) -> None:
        """Without pidfds: look whether the processes nobody reports on have exited."""
        for live in list(self._live.values()):
            if live.exited is not None:
                continue
            if live.popen is not None:
                if live.popen.poll() is not None:
                    self._finish(live, *reap(live.popen))
            elif live.orphaned and not still_running(live.pid, live.created):
                self._finish(live, None, None)  # its exit status died with its fork server

    def _wait_time(self, now: float, cap: float) -> float:
        wait = cap
        if (not HAS_PIDFD and self._live) or self._ending():
            wait = min(wait, 0.02)
        for run in self._runs.values():
            due = run.next_retry()
            if due is not None:
                wait = min(wait, max(0.0, due - now))
        return wait

    # --- runs ---------------------------------------------------------------------------------

    def _adopt(self, run_id: str, now: float) -> None:
        if run_id in self._runs:
            return
        state = recording.claim_run(self.db, run_id, self.owner, now)
        if state is None:
            return
        if state.pipeline is not None:
            state.bind(self.manifest())
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
        if run.canceling:
            for live in self._live.values():
                if live.run_id == run.id and not live.canceled and live.exited is None:
                    live.canceled = True
                    if live.remote is not None:
                        live.remote.cancel()
                        continue
                    threading.Thread(
                        target=stop_tree, args=(live.pid, CANCEL_GRACE), daemon=True
                    ).start()
        updates = run.unrunnable()
        if updates:
            self._set_steps(run, updates, now)
        for key, source in run.expansions():
            instances = recording.record_expansion(self.db, run.id, key, source, now)
            run.expanded(key, instances, kind="python")
            log.info("[run %s] %s mapped into %d steps", run.id, key, len(instances))
            self._changed(run.id)
        if run.finished() and not any(live.run_id == run.id for live in self._live.values()):
            self._end_run(run, now)

    def _set_steps(self, run: RunState, updates: Updates, now: float) -> None:
        recording.record_steps(self.db, run.id, updates, now)
        run.apply(updates)
        self._changed(run.id)

    def _end_run(self, run: RunState, now: float) -> None:
        final = run.final_status()
        recording.record_run_end(self.db, run.id, final, now)
        del self._runs[run.id]
        log.info("[run %s] %s", run.id, final.value)
        self._changed(run.id)

    # --- starting steps -----------------------------------------------------------------------

    def _limits(self) -> tuple[int, Callable[[str], int]]:
        """Steps at once, and each pool's size. Both count across the whole cluster. Set in
        the config they are what it says; unset, on the local executor, this machine's cores
        and 1 per pool, and on Dask what the cluster offers now: its threads, and for a pool
        the amount of that resource its workers offer together."""
        pools = self.config.pools
        if self._dask is None:
            return self.config.max_workers, lambda pool: pools.get(pool, 1)
        threads, offered = self._dask.capacity()
        workers = self.config.max_workers if self.config.max_workers_set else max(1, threads)

        def size(pool: str) -> int:
            return pools[pool] if pool in pools else max(1, int(offered.get(pool, 0)))

        return workers, size

    def _start_ready(self, now: float) -> None:
        max_workers, pool_size = self._limits()
        in_pools: dict[str, int] = {}
        for live in self._live.values():
            if live.launch.pool:
                in_pools[live.launch.pool] = in_pools.get(live.launch.pool, 0) + 1
        manifest: Manifest | None = None
        for run in list(self._runs.values()):
            if run.canceling:
                continue
            for st in run.steps.values():
                if len(self._live) >= max_workers:
                    return
                if not run.ready(st, now):
                    continue
                manifest = manifest or self.manifest()
                pool = run.definition(manifest, st.key, "pool")
                if pool is not None:
                    if in_pools.get(pool, 0) >= pool_size(pool):
                        continue
                    in_pools[pool] = in_pools.get(pool, 0) + 1
                self._start(run, st, manifest, now)

    def _start(self, run: RunState, st: StepState, manifest: Manifest, now: float) -> None:
        attempt_no = st.attempts + 1
        started = recording.record_start(
            self.db, manifest, self.paths, self.config.values_dir, run.id, st, attempt_no, now,
            remote=self._dask is not None,
        )  # fmt: skip
        run.started(st, attempt_no)
        attempt_id, launch = started.attempt_id, started.launch
        if launch is None:
            # Nothing to run: the step fails before a process exists (and may not retry:
            # a missing input will still be missing in a second).
            started.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._fail_unstarted(
                run, st, attempt_id, started.error, now, started.log_path, retry=False
            )
            return
        if self._dask is not None:
            self._start_remote(run, st, launch, attempt_id, now)
            return
        spec_path = self.paths.runs / run.id / f"{safe_key(st.key)}.{attempt_no}.json"
        try:
            pid, popen, events_fd = self._local.spawn(launch, spec_path, attempt_id)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the step fails, not the engine
            error = f"could not start the step: {type(exc).__name__}: {exc}"
            self._fail_unstarted(run, st, attempt_id, error, now, launch.log_path)
            return
        pidfd = os.pidfd_open(pid) if HAS_PIDFD and popen is not None else None
        live = LiveAttempt(
            run.id, st.key, attempt_no, attempt_id, pid, popen, events_fd, pidfd, launch, now,
            created=create_time(pid),
        )  # fmt: skip
        self._live[attempt_id] = live
        if events_fd is not None:
            os.set_blocking(events_fd, False)
            self._sel.register(events_fd, selectors.EVENT_READ, ("events", attempt_id))
        if pidfd is not None:
            self._sel.register(pidfd, selectors.EVENT_READ, ("exit", attempt_id))
        self._monitor.watch(
            str(attempt_id), pid, memory_limit=launch.memory_limit, timeout=launch.timeout
        )
        recording.record_pid(self.db, attempt_id, pid, live.created)
        log.info("[run %s] step %s attempt %d started (pid %d)", run.id, st.key, attempt_no, pid)
        self._changed(run.id)

    def _start_remote(
        self, run: RunState, st: StepState, launch: Launch, attempt_id: int, now: float
    ) -> None:
        try:
            remote = self._dask_executor().submit(attempt_id, launch)
        except EngineError as exc:  # no worker offers the step's pool
            self._fail_unstarted(run, st, attempt_id, exc.msg, now, launch.log_path, retry=False)
            return
        except Exception as exc:  # noqa: BLE001 - the cluster failed us: the step fails
            error = f"could not send the step to Dask: {type(exc).__name__}: {exc}"
            self._fail_unstarted(run, st, attempt_id, error, now, launch.log_path)
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
        assert live.remote is not None
        for msg in live.remote.drain():
            if "placed" in msg:
                self._placed(live, msg["placed"])
            if msg.get("events"):
                self._parse_events(live, msg["events"])
            for x in msg.get("samples") or ():
                self._samples.add(live.attempt_id, Sample(*x))
            if "end" in msg:
                end = msg["end"]
                self._finish(live, end.get("code"), end.get("cpu"))
                return

    def _placed(self, live: LiveAttempt, where: Placement) -> None:
        recording.record_placement(self.db, live.attempt_id, where)
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

    def _watch_orphans(self) -> None:
        """The fork server is gone: watch its orphaned workers ourselves, by pidfd, or where
        there is none by looking at them at every turn of the loop."""
        for live in self._live.values():
            if live.popen is not None or live.remote is not None or live.exited is not None:
                continue
            if not HAS_PIDFD:
                live.orphaned = True
                continue
            if live.pidfd is None:
                try:
                    live.pidfd = os.pidfd_open(live.pid)
                except ProcessLookupError:
                    self._orphan_exits.append(live.attempt_id)
                    continue
                self._sel.register(live.pidfd, selectors.EVENT_READ, ("exit", live.attempt_id))

    def _forkserver_exits(self) -> None:
        exits = self._local.exits()
        by_pid = {
            live.pid: live
            for live in self._live.values()
            if live.popen is None and live.remote is None and live.exited is None
        }
        for report in exits:
            live = by_pid.get(report["exit"])
            if live is not None:
                self._finish(live, report["code"], report["cpu"])

    def close(self) -> None:
        """Release the fork server and the selector (running steps are not touched), and send
        the alerts still queued (each hook has its own time limit). What ended steps left
        running is ended first, without waiting for the rest of its grace period."""
        self._end_leftovers_now()
        self.send_alerts()
        self._local.close()
        self._close_dask()

    def send_alerts(self) -> None:
        """Send the alerts still queued and stop the alerts thread: a command that ran the
        steps itself calls this before it exits, or a webhook would be lost with it."""
        if self.alerter is not None:
            self.alerter.drain(timeout=self.alerter.timeout + 1)
            self.alerter.stop()
            self.alerter = None

    def _finish(self, live: LiveAttempt, returncode: int | None, cpu: float | None) -> None:
        """The attempt's own process exited (or its Dask task ended): end what it left running,
        then record how it ended (at once when nothing was left)."""
        if live.exited is not None:
            return
        if live.events_fd is not None:
            self._read_events(live)
            if live.events_fd is not None:
                self._sel.unregister(live.events_fd)
                os.close(live.events_fd)
                live.events_fd = None
        if live.pidfd is not None:
            self._sel.unregister(live.pidfd)
            os.close(live.pidfd)
            live.pidfd = None
        left: list[Any] = []
        if live.remote is not None:
            self._sel.unregister(live.remote.fileno())
            live.remote.close()
            stats = live.remote.stats or TreeStats()  # measured by the worker's monitor
        else:
            key = str(live.attempt_id)
            children, reported_at = live.reported_children()
            # A worker (a subreaper) that left no child left nothing at all: no need to look.
            if children != []:
                left = self._monitor.leftovers(key, children or (), reported_at)
            stats = self._monitor.unwatch(key)
        if cpu is not None:
            # A step shorter than the sampling interval is seen once at best; the kernel's CPU
            # accounting of the reaped process (and the children it waited for) is exact.
            stats.cpu_seconds = max(stats.cpu_seconds, cpu)
        stats.peak_rss_bytes = max(stats.peak_rss_bytes, live.reported_peak_rss())
        self._samples.forget(live.attempt_id)
        live.exited = (live.ending(returncode, stats), returncode, stats)
        if left:
            # The attempt is over when they are gone too: until then it keeps its slot.
            own = {live.pid: live.created} if live.created else None
            live.leftovers = Leftovers(left, sessions=own)
            log.info(
                "[run %s] step %s attempt %d left %d process(es) running: ending them",
                live.run_id, live.key, live.attempt, len(left),
            )  # fmt: skip
            return
        self._settle(live)

    def _ending(self) -> bool:
        return any(live.leftovers is not None for live in self._live.values())

    def _poll_leftovers(self) -> None:
        """Settle the attempts whose leftover processes are all gone now."""
        for live in list(self._live.values()):
            if live.leftovers is not None and live.leftovers.poll():
                self._settle(live)

    def _end_leftovers_now(self) -> None:
        """SIGKILL what ended attempts left running, wait for it, and settle them: the
        coordinator is stopping, and nobody else would (the command exits next)."""
        for live in list(self._live.values()):
            if live.leftovers is not None:
                live.leftovers.kill_now()
                live.leftovers.wait()
                self._settle(live)

    def _settle(self, live: LiveAttempt) -> None:
        """Record the end of an attempt whose processes are all gone."""
        assert live.exited is not None
        end, returncode, stats = live.exited
        del self._live[live.attempt_id]
        lines = [live.leftovers.line()] if live.leftovers is not None else []
        run = self._runs[live.run_id]
        st = run.steps[live.key]
        self._record_end(run, st, live.attempt_id, end, returncode, stats, time.time(), live, lines)

    def _record_end(
        self, run: RunState, st: StepState, attempt_id: int, end: Ending,
        returncode: int | None, stats: TreeStats, now: float, live: LiveAttempt | None = None,
        lines: list[str] | None = None, log_path: Path | None = None,
    ) -> None:  # fmt: skip
        outcome = run.outcome(st, end, self.manifest, now, live.events if live else ())
        recording.record_end(
            self.db, run.id, st, attempt_id, outcome, returncode, stats, now, live,
            log_path=live.launch.log_path if live is not None else log_path, lines=lines or (),
        )  # fmt: skip
        run.ended(st, outcome)
        new_status, error = outcome.step_status, end.error
        found = run.alert_for(
            self.manifest, self.config.alerts, st, new_status, error,
            log_path=live.launch.log_path if live else None,
        )  # fmt: skip
        if found is not None:
            if self.alerter is None:
                self.alerter = Alerter(window=self.config.alert_window)
            self.alerter.notify(*found)
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

    def _fail_unstarted(
        self,
        run: RunState,
        st: StepState,
        attempt_id: int,
        error: str | None,
        now: float,
        log_path: Path,
        *,
        retry: bool = True,
    ) -> None:
        """The attempt ends before anything of it ran."""
        end = Ending(StepStatus.FAILED, error, None, retry)
        self._record_end(run, st, attempt_id, end, None, TreeStats(), now, log_path=log_path)

    def _flush_samples(self, force: bool = False) -> None:
        self._samples.flush(self.db, self._live, force)

    def _changed(self, run_id: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(run_id)
            except Exception:  # noqa: BLE001 - a listener must never stop the executor
                log.exception("on_change listener failed")
