"""Sending step attempts to a Dask cluster, and making each look like a local one.

The coordinator owns one `DaskExecutor` when the project says `executor = "dask"`. Each attempt
becomes one Dask task (`dask_task.run_attempt`), with `resources={pool: 1}` for a step in a
pool, so only workers started with `--resources POOL=N` take it. A `RemoteAttempt` stands for
it in the coordinator. The workers send the attempts' batches to one `distributed.Queue` of
this executor while the steps run; one thread here waits on it, appends the log bytes to each
attempt's log file (so the UI and `dagtop logs` tail it as usual), and hands events, samples,
the placement and the end to the coordinator's thread through a pipe per attempt that its
selector watches, like a local attempt's events pipe. The thread waits without a timeout (a
timed-out wait is an error in the scheduler's log); a finished task, or a tick every few
seconds while attempts run, wakes it to look at the tasks and their workers.

A worker lost mid-step ends the attempt with the reason "dask worker ADDRESS lost", whether
Dask gives up on the task (`KilledWorker`), reruns it elsewhere (the rerun finds the attempt
claimed and starts nothing; see `dask_task`), or cannot place it anywhere any more.

`distributed` is imported here only: the local executor never pays for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from engine.errors import ExecutorError, first_line
from engine.executor import dask_task
from engine.executor.monitor import Sample, TreeStats
from engine.executor.spawn import Launch

if TYPE_CHECKING:
    from engine.protocol.worker import AttemptEnd, Batch, DaskPayload, SampleRow

log = logging.getLogger(__name__)

_warned: set[str] = set()
"""Schedulers this process already warned about (see `open_scheduler`)."""
CONNECT_TIMEOUT = 5.0
CAPACITY_EVERY = 2.0
"""Seconds between two readings of what the cluster offers (workers come and go)."""
SILENCE = 3.0
"""A placed attempt quiet this long (it sends a heartbeat every second): is its worker alive?"""


class DaskExecutor:
    """A connection to a Dask scheduler that runs step attempts.

    Raises:
        ExecutorError: distributed is not installed, or the scheduler cannot be reached.
    """

    def __init__(self, address: str, timeout: float = CONNECT_TIMEOUT) -> None:
        try:
            import distributed
        except ImportError:
            raise ExecutorError(
                "executor = dask needs the distributed package: pip install -e '.[dask]' in "
                "dagtop's clone"
            ) from None
        if address.startswith("tcp://") and address not in _warned:
            from engine.loading.config import Config, open_scheduler

            if open_scheduler(Config(executor="dask", dask_scheduler=address)):
                _warned.add(address)  # once per process: an engine reconnects after a close
                log.warning(
                    "the Dask scheduler %s is reached over plain tcp:// off this machine: "
                    "anyone who can reach it runs code as its workers' user; use tls:// "
                    "(see the README's Dask security section)",
                    address,
                )
        try:
            self.client = distributed.Client(
                address, timeout=timeout, set_as_default=False, name="dagtop"
            )
        except Exception as exc:  # noqa: BLE001 - every way to fail here is "cannot reach it"
            reason = first_line(exc)
            if address.startswith("tls://") and ("TLS" in reason or "ssl" in reason.lower()):
                reason += (
                    "; a tls:// scheduler needs the certificate in DASK_DISTRIBUTED__COMM__TLS__"
                    "CA_FILE, ..._CLIENT__CERT and ..._CLIENT__KEY (see the README's Dask "
                    "security section)"
                )
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {address}: {reason}", title="Dask"
            ) from None
        self.address = address
        self.name = f"dagtop-{uuid.uuid4().hex[:8]}"  # several engines may share one cluster
        self.queue = distributed.Queue(f"{self.name}-stream", client=self.client)
        self.attempts: dict[str, RemoteAttempt] = {}
        self.lost: str | None = None
        self._capacity: tuple[float, int, dict[str, float]] | None = None
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run_pump, name=f"{self.name}-pump", daemon=True)
        self._pump.start()
        self._ticker = threading.Thread(target=self._tick, name=f"{self.name}-tick", daemon=True)
        self._ticker.start()

    def capacity(self) -> tuple[int, dict[str, float]]:
        """What the cluster offers now: its worker threads in all, and each resource summed
        over the workers that offer it (asked at most every `CAPACITY_EVERY` seconds)."""
        now = time.monotonic()
        if self._capacity is None or now - self._capacity[0] > CAPACITY_EVERY:
            threads = 0
            resources: dict[str, float] = {}
            try:
                workers = self.client.scheduler_info()["workers"].values()
            except Exception:  # noqa: BLE001 - keep the last answer; a lost cluster shows elsewhere
                workers = None
            if workers is not None:
                for w in workers:
                    threads += int(w.get("nthreads", 0))
                    for name, amount in (w.get("resources") or {}).items():
                        resources[name] = resources.get(name, 0.0) + float(amount)
                self._capacity = (now, threads, resources)
            elif self._capacity is None:
                return 1, {}
        assert self._capacity is not None
        return self._capacity[1], self._capacity[2]

    def submit(self, attempt_id: int, launch: Launch) -> RemoteAttempt:
        """Send an attempt to the cluster.

        Raises:
            ExecutorError: the step's pool is a resource no worker offers.
        """
        if self.lost is not None:
            raise RuntimeError(self.lost)
        if launch.pool is not None:
            workers = self.client.scheduler_info()["workers"].values()
            if not any(w.get("resources", {}).get(launch.pool) for w in workers):
                raise ExecutorError(
                    f"no dask worker offers the resource {launch.pool!r} of the step's pool "
                    f"(start one with `dask worker {self.address} --resources {launch.pool}=1`)"
                )
        attempt = RemoteAttempt(self, f"{self.name}-{attempt_id}", attempt_id, launch)
        self.attempts[attempt.key] = attempt
        attempt.future = self.client.submit(
            dask_task.run_attempt,
            attempt.payload,
            key=attempt.key,
            pure=False,
            resources={launch.pool: 1} if launch.pool else None,
        )
        # A task that ends without its end batch (it raised, or its worker died and the rerun
        # refused to start) must wake the pump; one that ended cleanly is already gone.
        attempt.future.add_done_callback(
            lambda _: self._wake() if attempt.key in self.attempts else None
        )
        return attempt

    def close(self) -> None:
        self._stop.set()
        self._wake({"stop": True})
        self._pump.join(timeout=2)
        with contextlib.suppress(Exception):
            self.queue.close()
        with contextlib.suppress(Exception):
            self.client.close(timeout=2)

    # --- the pump (its own thread) -------------------------------------------------------------

    def _wake(self, msg: Batch | None = None) -> None:
        if self._stop.is_set() and msg is None:
            return
        with contextlib.suppress(Exception):  # closing, or the scheduler is gone
            self.queue.put(msg or {"tick": True})

    def _tick(self) -> None:
        while not self._stop.wait(SILENCE):
            if self.attempts:
                self._wake()

    def _run_pump(self) -> None:
        try:
            while True:
                messages: list[Batch] = [self.queue.get()]
                messages += self.queue.get(batch=True)
                for msg in messages:
                    if msg.get("stop"):
                        return
                    attempt = self.attempts.get(msg.pop("a", ""))
                    if attempt is not None and attempt.receive(msg):
                        del self.attempts[attempt.key]
                self._look()
        except Exception as exc:  # noqa: BLE001 - the scheduler went away, or worse
            if self._stop.is_set():
                return
            reason = first_line(exc)
            self.lost = f"lost the Dask scheduler at {self.address}: {reason}"
            log.warning("%s", self.lost)
            for attempt in list(self.attempts.values()):
                attempt.fail(self.lost)
            self.attempts.clear()

    def _look(self) -> None:
        """End the attempts whose task is over without their end, or whose worker is gone."""
        now = time.monotonic()
        attempts = list(self.attempts.values())  # submit() may add one meanwhile
        silent = [a for a in attempts if a.worker and now - a.heard > SILENCE]
        workers = self.client.scheduler_info()["workers"] if silent else {}
        for attempt in attempts:
            if attempt.key not in self.attempts:
                continue  # ended by a batch drained below for another attempt
            if attempt.future is not None and attempt.future.done():
                # Its batches were all put before the task returned: drain, then decide.
                for msg in self.queue.get(batch=True):
                    other = self.attempts.get(msg.pop("a", ""))
                    if other is not None and other.receive(msg):
                        del self.attempts[other.key]
                if attempt.key in self.attempts:
                    attempt.task_done()
                    del self.attempts[attempt.key]
            elif attempt in silent:
                if attempt.worker not in workers:
                    attempt.fail(f"dask worker {attempt.worker} lost")
                    del self.attempts[attempt.key]
                else:
                    attempt.heard = now


class RemoteAttempt:
    """One attempt running on a Dask worker, as the coordinator's selector sees it."""

    def __init__(self, executor: DaskExecutor, key: str, attempt_id: int, launch: Launch) -> None:
        from distributed import Event

        self.key = key
        self.client = executor.client
        self.future: Any = None
        self.stats: TreeStats | None = None
        """The attempt's resource totals, from the worker's monitor, once it ended."""
        self.error: str | None = None
        """Why the attempt ended without its worker reporting an exit status."""
        self.worker: str | None = None
        self.heard = time.monotonic()
        self._cancel = Event(f"{key}-cancel", client=self.client)
        self._claim = Event(f"{key}-claim", client=self.client)
        self._inbox: deque[Batch] = deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by its owner only, like every log (a step may print what it should not).
        fd = os.open(launch.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log = open(fd, "ab")  # noqa: SIM115 - closed when the attempt ends
        self.payload: DaskPayload = {
            "key": key,
            "attempt": attempt_id,
            "queue": executor.queue.name,
            "cancel": self._cancel.name,
            "claim": self._claim.name,
            "argv": launch.argv,
            "spec": launch.spec,
            "cwd": launch.cwd,
            # Only what the step adds: the worker's machine has its own PATH and HOME.
            "env": {k: v for k, v in launch.env.items() if os.environ.get(k) != v},
            "timeout": launch.timeout,
            "memory_limit": launch.memory_limit,
        }

    # --- the coordinator's side (its thread) ---------------------------------------------------

    def fileno(self) -> int:
        return self._read_fd

    def drain(self) -> list[Batch]:
        """The messages that arrived: `placed`, `events` (bytes), `samples`, and last `end`."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass
        out = []
        while self._inbox:
            out.append(self._inbox.popleft())
        return out

    def cancel(self) -> None:
        """Ask the worker to stop the step (SIGTERM, a grace period, then SIGKILL)."""
        threading.Thread(target=self._set_cancel, daemon=True).start()

    def close(self) -> None:
        os.close(self._read_fd)

    # --- the executor's pump thread ------------------------------------------------------------

    def receive(self, msg: Batch) -> bool:
        """Take one batch from the worker; True once it was the attempt's end."""
        self.heard = time.monotonic()
        chunk = msg.pop("log", None)
        if chunk:
            self._log.write(chunk)
            self._log.flush()
        if "placed" in msg:
            self.worker = msg["placed"]["worker"]
        if "end" in msg:
            self._end(msg["end"], msg.get("samples"), clean=True)
            return True
        if msg:
            self._deliver(msg)
        return False

    def task_done(self) -> None:
        """The task is over and its end never came through the queue."""
        if self.future.status == "finished":
            result = self.future.result()
            if "end" in result:  # its last batch was lost, not its result
                self._end(result["end"], None, clean=True)
                return
        self.fail(self._why_done())

    def fail(self, reason: str) -> None:
        self._end({"code": None, "error": reason}, None, clean=False)

    def _set_cancel(self) -> None:
        with contextlib.suppress(Exception):
            self._cancel.set()

    def _deliver(self, msg: Batch) -> None:
        self._inbox.append(msg)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"x")

    def _end(self, end: AttemptEnd, samples: list[SampleRow] | None, clean: bool) -> None:
        stats = end.get("stats")
        if stats is not None:
            self.stats = TreeStats(**{**stats, "samples": [Sample(**x) for x in stats["samples"]]})
        self.error = end.get("error")
        self._log.close()
        if not clean:
            # Whatever may still run of it must stop: its retry is a new attempt.
            self._set_cancel()
            with contextlib.suppress(Exception):
                self.client.cancel([self.future], force=True)
        else:
            with contextlib.suppress(Exception):
                self._cancel.clear()
                # The task returned: Dask will not run it again, so the claim can go.
                self._claim.clear()
        self._deliver({"samples": samples or [], "end": end})
        os.close(self._write_fd)

    def _why_done(self) -> str:
        """The reason for a task that ended without reporting an end of its own."""
        from distributed.scheduler import KilledWorker

        where = f"dask worker {self.worker}" if self.worker else "its dask worker"
        if self.future.cancelled():
            return f"the Dask task was canceled (on {where})"
        exc = self.future.exception()
        if exc is None:
            return f"{where} lost"  # superseded: Dask ran it again after the worker died
        if isinstance(exc, KilledWorker):
            return f"dask worker {getattr(exc.last_worker, 'address', '?')} lost"
        return f"the Dask task failed on {where}: {type(exc).__name__}: {exc}"
