"""Resource monitoring and limits for running steps.

Every step runs as a child process started with ``start_new_session=True``, so its pid is also
its session id and process-group id. The :class:`Monitor` samples each watched step's whole
process tree several times a second from one daemon thread, keeps peaks and a bounded,
downsampled series for sparklines, and enforces memory limits and timeouts by killing the tree.

It only reports through return values and the ``on_sample`` callback: persisting anything is the
coordinator's job, which keeps this module free of storage and UI imports.

Finding a tree cheaply matters more than it looks: ``psutil.Process.children(recursive=True)``
reads the stat file of every process on the machine, some 14 ms per call with 600 processes,
and that once per watched tree and round. Instead one round lists pids once and asks the
kernel for each one's session id (a syscall, no file to parse): a descendant is either in the
step's session, or in a session led by a descendant that called ``setsid()``, or is such a new
session leader itself, and only for those few leaders do we read the parent pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import psutil

from engine.executor.leftovers import alive
from engine.processes import describe_exit
from engine.units import format_bytes

logger = logging.getLogger(__name__)

__all__ = ["Monitor", "Sample", "TreeStats", "describe_exit", "kill_tree", "stop_tree"]

# macOS has no per-process io counters; asking once beats catching AttributeError per sample.
_HAS_IO_COUNTERS = hasattr(psutil.Process, "io_counters")

# How often stop_tree looks whether the tree is gone while it waits for the grace period.
_POLL_SECONDS = 0.05

# Create times are counted in clock ticks (10 ms): compare them with this much slack.
_CLOCK_SLACK = 0.02


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of a step's whole process tree."""

    t: float
    """`time.time()` when the sample was taken."""
    cpu_percent: float
    """Summed over the tree; 100 is one full core."""
    cpu_seconds: float
    """User + system time summed over the tree, including processes that already exited."""
    rss_bytes: int
    read_bytes: int
    """Cumulative, summed over the tree; 0 where the platform does not tell."""
    write_bytes: int
    threads: int
    children: int
    """Number of live descendant processes (the step's own process not counted)."""


@dataclass
class TreeStats:
    """What the monitor learnt about one step, peaks and totals over its whole life."""

    peak_rss_bytes: int = 0
    peak_cpu_percent: float = 0.0
    cpu_seconds: float = 0.0
    read_bytes: int = 0
    write_bytes: int = 0
    peak_threads: int = 0
    peak_children: int = 0
    samples: list[Sample] = field(default_factory=list)
    """At most ``max_samples`` samples spread evenly over the step's whole run."""
    violation: str | None = None
    """Why the monitor killed the tree, if it did."""


def stop_tree(pid: int, grace: float = 5.0) -> None:
    """Terminate the process tree rooted at `pid`: SIGTERM, up to `grace` seconds, then SIGKILL.

    Signals the process group `pid` leads and every descendant psutil finds, since a descendant
    may have left the group with ``setsid()``. Blocks for up to `grace` seconds. Never raises for
    processes that vanish meanwhile, and never signals pid 0 or 1, nor our own process, group,
    session or ancestors.

    The caller must still own `pid` (not yet reaped), or the pid may name someone else's process.
    """
    _terminate(pid, grace)


def kill_tree(pid: int) -> None:
    """SIGKILL the process group `pid` leads and every descendant at once, without any grace."""
    _terminate(pid, None)


def _terminate(pid: int, grace: float | None, extra: Iterable[psutil.Process] = ()) -> None:
    """Shared body of `stop_tree` (`grace` seconds) and `kill_tree` (`grace` None).

    `extra` are processes the caller knows belong to the tree although psutil can no longer
    link them to it (orphans of an exited parent, re-parented to init).
    """
    protected = _protected_pids()
    if pid <= 1 or pid in protected:
        logger.warning("refusing to signal the process tree of pid %d: it is init or ours", pid)
        return
    procs = _collect_tree(pid, protected)
    for proc in extra:
        if proc.pid not in protected:
            procs.setdefault(proc.pid, proc)
    if grace is None:
        _signal_all(pid, procs.values(), signal.SIGKILL)
        return
    _signal_all(pid, procs.values(), signal.SIGTERM)
    deadline = time.monotonic() + max(grace, 0.0)
    running = [proc for proc in procs.values() if alive(proc)]
    while running and time.monotonic() < deadline:
        time.sleep(min(_POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
        running = [proc for proc in running if alive(proc)]
    # Look again: something may have forked while it was shutting down.
    for proc in _collect_tree(pid, protected).values():
        if proc.pid not in procs and alive(proc):
            running.append(proc)
    if running:
        logger.info(
            "process tree of pid %d still had %d process(es) after %g s; sending SIGKILL",
            pid,
            len(running),
            grace,
        )
        _signal_all(pid, running, signal.SIGKILL)


def _protected_pids() -> set[int]:
    """Pids we must never signal, nor kill the tree or group of.

    Init's, ours, our group's and session's, and our ancestors': a step's tree never contains
    them, so meeting one means a caller passed the wrong pid.
    """
    protected = {0, 1, os.getpid(), os.getpgrp(), os.getsid(0)}
    try:
        protected.update(parent.pid for parent in psutil.Process().parents())
    except psutil.Error:
        protected.add(os.getppid())
    return protected


def _collect_tree(pid: int, protected: set[int]) -> dict[int, psutil.Process]:
    """Every live process of the tree rooted at `pid`, keyed by pid (empty if all are gone)."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        found[pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    except psutil.Error:
        pass
    # Descendants whose parent already exited were re-parented to init, out of reach of
    # children(); unless they called setsid(), the step's session and group still name them.
    for other in psutil.pids():
        if other in found:
            continue
        try:
            if os.getsid(other) == pid or os.getpgid(other) == pid:
                found[other] = psutil.Process(other)
        except (OSError, psutil.Error):
            continue
    return {other: proc for other, proc in found.items() if other not in protected}


def _signal_all(pid: int, procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    """Send `sig` to the process group `pid` and to each of `procs`, ignoring the vanished.

    `pid` must have been checked against `_protected_pids()`.
    """
    # One killpg reaches every group member atomically, even those forked a moment ago.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for proc in procs:
        # psutil checks the pid still names the process we collected (pid reuse).
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


@dataclass(slots=True)
class _Member:
    """One process of a watched tree, with the last totals read from it."""

    proc: psutil.Process
    create_time: float
    cpu_seconds: float = 0.0
    read_bytes: int = 0
    write_bytes: int = 0


class _Downsampler:
    """Keeps at most `limit` samples evenly spread over a run of any length.

    Keeps every `every`-th sample taken; when the list is full, drops every other kept sample
    and doubles `every`, so the first sample stays and the spacing stays uniform.
    """

    __slots__ = ("every", "limit", "samples", "seen")

    def __init__(self, samples: list[Sample], limit: int) -> None:
        self.samples = samples
        self.limit = limit
        self.every = 1
        self.seen = 0

    def add(self, sample: Sample) -> None:
        index = self.seen
        self.seen += 1
        if index % self.every:
            return
        if len(self.samples) >= self.limit:
            del self.samples[1::2]
            self.every *= 2
            if index % self.every:
                return
        self.samples.append(sample)

    def add_final(self, sample: Sample) -> None:
        """Keep the very last sample even off the grid, so the series reaches the end."""
        self.seen += 1
        if len(self.samples) >= self.limit:
            del self.samples[1::2]
            self.every *= 2
        self.samples.append(sample)


@dataclass(slots=True, eq=False)
class _Watch:
    key: str
    pid: int
    root: psutil.Process | None
    own_session: bool
    memory_limit: int | None
    timeout: float | None
    grace: float
    started: float
    """`time.monotonic()` at watch()."""
    born: float
    """The step's own process's create time (0.0 if it was gone before watch())."""
    stats: TreeStats
    series: _Downsampler
    members: dict[int, _Member] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    """Pids of members that exited but are still listed (zombies), so we don't adopt them again."""
    exited_cpu_seconds: float = 0.0
    exited_read_bytes: int = 0
    exited_write_bytes: int = 0
    killed: bool = False
    timed_out: bool = False
    callback_failed: bool = False


class Monitor:
    """Samples the process trees of running steps from one daemon thread.

    `on_sample(key, sample)` is called for every sample taken: from the monitor thread, except
    for the first and last samples, which `watch()` and `unwatch()` take in the caller's thread.
    Limits are checked on every sample, so timeouts are only enforced while the thread runs.
    """

    def __init__(
        self,
        interval: float = 0.2,
        max_samples: int = 240,
        on_sample: Callable[[str, Sample], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be at least 2, got {max_samples!r}")
        self.interval = interval
        self.max_samples = max_samples
        self.on_sample = on_sample
        # One lock for all state: a round holds it for about a millisecond, and callbacks and
        # kills run after it is released so they can call back into the monitor.
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        # Session leaders seen on the machine: pid -> (parent pid, create time), read once each.
        self._leaders: dict[int, tuple[int, float]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle

    def start(self) -> None:
        """Start the sampling thread (no-op if it is already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping,), name="dagtop-monitor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread; watched processes keep running. Safe to call twice."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout=5.0)
        if thread.is_alive():
            logger.warning("monitor thread did not stop within 5 s (an on_sample callback hung?)")

    # --- watching

    def watch(
        self,
        key: str,
        pid: int,
        *,
        memory_limit: int | None = None,
        timeout: float | None = None,
        grace: float = 5.0,
    ) -> None:
        """Start watching the tree rooted at `pid` under `key`, and take a first sample now.

        A process that already exited is not an error: the watch simply records nothing.

        Raises:
            ValueError: `key` is already watched, or `pid` is init or ours (a limit would then
                kill the wrong processes).
        """
        if pid <= 1 or pid in _protected_pids():
            raise ValueError(f"refusing to watch pid {pid}: it is init or ours")
        root: psutil.Process | None
        try:
            root = psutil.Process(pid)
            born = root.create_time()
            own_session = os.getsid(pid) == pid
        except (psutil.Error, OSError):
            root, born, own_session = None, 0.0, True
        if root is not None and not own_session:
            logger.warning(
                "step %s (pid %d) does not lead its own session; finding its processes the "
                "slow way",
                key,
                pid,
            )
        stats = TreeStats()
        watch = _Watch(
            key=key,
            pid=pid,
            root=root,
            own_session=own_session,
            memory_limit=memory_limit,
            timeout=timeout,
            grace=grace,
            started=time.monotonic(),
            born=born,
            stats=stats,
            series=_Downsampler(stats.samples, self.max_samples),
        )
        if root is not None:
            watch.members[pid] = _Member(root, born)
        with self._lock:
            if key in self._watches:
                raise ValueError(f"already watching {key!r}")
            self._watches[key] = watch
            report = self._round_locked([watch])
        self._deliver(report)

    def unwatch(self, key: str) -> TreeStats:
        """Stop watching `key` and return its final stats.

        Takes one last sample if any process of the tree is still alive.

        Raises:
            KeyError: `key` is not watched.
        """
        with self._lock:
            watch = self._watches.pop(key)
            sample = self._measure(watch)
            if sample is not None:
                self._record(watch, sample)
                watch.series.add_final(sample)
            stats = _copy(watch.stats)
        if sample is not None:
            self._deliver(([(watch, sample)], []))
        return stats

    def leftovers(
        self, key: str, children: Iterable[int] = (), reported_at: float | None = None
    ) -> list[psutil.Process]:
        """The processes of `key`'s tree still alive once its step's own process has exited.

        Looks for them as a round does (the step's session, and the sessions its processes
        created), after adopting `children`: pids the step's process named as its children just
        before it exited, at `reported_at`. Each is taken only if it was born while the step
        ran, so a pid reused since is never taken for one of them. Call before `unwatch`.
        Returns [] when `key` is not watched.
        """
        with self._lock:
            watch = self._watches.get(key)
            if watch is None:
                return []
            latest = (reported_at if reported_at is not None else time.time()) + _CLOCK_SLACK
            owner = {pid: watch for pid in watch.members}
            for pid in children:
                if pid in watch.members or pid in watch.dead or pid <= 1:
                    continue
                try:
                    born = psutil.Process(pid).create_time()
                except psutil.Error:
                    continue
                if watch.born - _CLOCK_SLACK <= born <= latest:
                    self._adopt(watch, pid, owner)
            self._discover([watch])
            return [
                member.proc
                for pid, member in watch.members.items()
                if pid != watch.pid and alive(member.proc)
            ]

    def stats(self, key: str) -> TreeStats | None:
        """A snapshot of `key`'s stats so far, or None if it is not watched."""
        with self._lock:
            watch = self._watches.get(key)
            return None if watch is None else _copy(watch.stats)

    # --- the sampling thread

    def _run(self, stopping: threading.Event) -> None:
        next_round = time.monotonic()
        while True:
            next_round += self.interval
            delay = next_round - time.monotonic()
            if delay < 0:
                # Behind (suspended laptop, starved thread): skip the missed rounds, don't burst.
                next_round, delay = time.monotonic(), 0.0
            if stopping.wait(delay):
                return
            try:
                self._round()
            except Exception:
                logger.exception("monitor round failed")

    def _round(self) -> None:
        with self._lock:
            if not self._watches:
                return
            report = self._round_locked(list(self._watches.values()))
        self._deliver(report)

    def _round_locked(
        self, watches: list[_Watch]
    ) -> tuple[list[tuple[_Watch, Sample]], list[Callable[[], None]]]:
        """Discover, sample and check `watches`; return the samples and the kills to run."""
        self._discover(watches)
        samples: list[tuple[_Watch, Sample]] = []
        actions: list[Callable[[], None]] = []
        for watch in watches:
            sample = self._measure(watch)
            if sample is None:
                continue  # the whole tree is gone: nothing to show, nothing to enforce
            self._record(watch, sample)
            watch.series.add(sample)
            samples.append((watch, sample))
            action = self._enforce(watch, sample)
            if action is not None:
                actions.append(action)
        return samples, actions

    def _deliver(
        self, report: tuple[list[tuple[_Watch, Sample]], list[Callable[[], None]]]
    ) -> None:
        """Run the kills and callbacks of a round, outside the lock."""
        samples, actions = report
        for action in actions:
            try:
                action()
            except Exception:
                logger.exception("killing a process tree failed")
        if self.on_sample is None:
            return
        for watch, sample in samples:
            try:
                self.on_sample(watch.key, sample)
            except Exception:
                # A broken callback would fire several times a second: one traceback per step.
                if watch.callback_failed:
                    logger.debug("on_sample failed again for %s", watch.key, exc_info=True)
                else:
                    watch.callback_failed = True
                    logger.exception("on_sample callback failed for %s", watch.key)

    # --- finding the processes of a tree

    def _discover(self, watches: list[_Watch]) -> None:
        """Adopt the processes that joined `watches`' trees since the last round."""
        # A process belongs to a tree if its session was created by the step or by one of the
        # step's processes. Session ids are pids that the kernel will not reuse while the
        # session exists, so this can't pick up a stranger.
        by_session: dict[int, _Watch] = {}
        owner: dict[int, _Watch] = {}
        pids = psutil.pids()
        listed = set(pids)
        for watch in watches:
            if watch.own_session and self._session_is_ours(watch, listed):
                by_session[watch.pid] = watch
            for pid in watch.members:
                by_session[pid] = watch
                owner[pid] = watch
        found: list[tuple[_Watch, int]] = []
        for pid in pids:
            try:
                sid = os.getsid(pid)
            except OSError:
                continue  # exited since the listing
            in_session = by_session.get(sid)
            if in_session is not None:
                if pid not in in_session.members and pid not in in_session.dead:
                    found.append((in_session, pid))
            elif sid == pid and pid not in self._leaders:
                self._leaders[pid] = _parent_and_birth(pid)
        self._leaders = {pid: v for pid, v in self._leaders.items() if pid in listed}
        for watch in watches:
            watch.dead &= listed
        for watch, pid in found:
            self._adopt(watch, pid, owner)
        for watch in watches:
            if not watch.own_session:
                self._adopt_children(watch, owner)
        # A process that called setsid() leads a session of its own: it is ours if its parent
        # is. Loop because such a leader's parent may have been adopted only just now.
        adopted = True
        while adopted:
            adopted = False
            for pid, (ppid, born) in self._leaders.items():
                parent = owner.get(ppid)
                if parent is None or pid in owner or pid in parent.dead:
                    continue
                # A parent is older than its child; a younger "parent" reused the pid.
                if parent.members[ppid].create_time <= born and self._adopt(parent, pid, owner):
                    adopted = True

    @staticmethod
    def _session_is_ours(watch: _Watch, listed: set[int]) -> bool:
        """Whether the session the step's process led may still hold the step's processes.

        Once that process has exited, its pid (the session id) may be reused, but only after
        every process of its session is gone: a process listed under that pid that is not
        the step's own (a zombie not reaped yet) means the session id names a stranger's now.
        """
        if watch.pid in watch.members or watch.pid not in listed:
            return True
        try:
            return abs(psutil.Process(watch.pid).create_time() - watch.born) < _CLOCK_SLACK
        except psutil.Error:
            return True  # gone in the meantime: its session id can't name another's yet

    def _adopt_children(self, watch: _Watch, owner: dict[int, _Watch]) -> None:
        """The slow way, for a step started without a session of its own."""
        if watch.root is None or watch.pid not in watch.members:
            return
        try:
            children = watch.root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            if child.pid not in watch.members and child.pid not in watch.dead:
                self._adopt(watch, child.pid, owner)

    @staticmethod
    def _adopt(watch: _Watch, pid: int, owner: dict[int, _Watch]) -> bool:
        try:
            proc = psutil.Process(pid)
            born = proc.create_time()
        except psutil.Error:
            return False
        watch.members[pid] = _Member(proc, born)
        owner[pid] = watch
        return True

    # --- measuring

    def _measure(self, watch: _Watch) -> Sample | None:
        """Read every member of `watch`; None if none of them is alive any more."""
        t = time.time()
        rss = threads = live = 0
        cpu_percent = 0.0
        root_alive = False
        for pid, member in list(watch.members.items()):
            reading = _read(member)
            if reading is None:
                _retire(watch, pid)
                continue
            live += 1
            root_alive = root_alive or pid == watch.pid
            rss += reading[0]
            threads += reading[1]
            cpu_percent += reading[2]
        stats = watch.stats
        members = watch.members.values()
        # Totals of exited processes stay in, and max() keeps a total from ever going down.
        stats.cpu_seconds = max(
            stats.cpu_seconds, watch.exited_cpu_seconds + sum(m.cpu_seconds for m in members)
        )
        stats.read_bytes = max(
            stats.read_bytes, watch.exited_read_bytes + sum(m.read_bytes for m in members)
        )
        stats.write_bytes = max(
            stats.write_bytes, watch.exited_write_bytes + sum(m.write_bytes for m in members)
        )
        if not live:
            return None
        return Sample(
            t=t,
            cpu_percent=cpu_percent,
            cpu_seconds=stats.cpu_seconds,
            rss_bytes=rss,
            read_bytes=stats.read_bytes,
            write_bytes=stats.write_bytes,
            threads=threads,
            children=live - 1 if root_alive else live,
        )

    @staticmethod
    def _record(watch: _Watch, sample: Sample) -> None:
        stats = watch.stats
        stats.peak_rss_bytes = max(stats.peak_rss_bytes, sample.rss_bytes)
        stats.peak_cpu_percent = max(stats.peak_cpu_percent, sample.cpu_percent)
        stats.peak_threads = max(stats.peak_threads, sample.threads)
        stats.peak_children = max(stats.peak_children, sample.children)

    # --- limits

    def _enforce(self, watch: _Watch, sample: Sample) -> Callable[[], None] | None:
        """Decide whether `watch`'s tree must die; return the kill to run outside the lock."""
        stats = watch.stats
        limit = watch.memory_limit
        if limit is not None and sample.rss_bytes > limit and not watch.killed:
            watch.killed = True
            reason = (
                f"memory limit exceeded: peak {format_bytes(stats.peak_rss_bytes)} "
                f"of limit {format_bytes(limit)}"
            )
            stats.violation = stats.violation or reason
            logger.warning("step %s: %s; killing its process tree", watch.key, reason)
            procs = [member.proc for member in watch.members.values()]
            # No grace: a tree over its memory limit may be about to take the machine down.
            return lambda: _terminate(watch.pid, None, procs)
        timeout = watch.timeout
        if (
            timeout is not None
            and not watch.timed_out
            and not watch.killed
            and time.monotonic() - watch.started >= timeout
        ):
            watch.timed_out = True
            reason = f"timed out after {timeout:g} s"
            stats.violation = stats.violation or reason
            logger.warning("step %s: %s; stopping its process tree", watch.key, reason)
            procs = [member.proc for member in watch.members.values()]
            # The grace period must not stall sampling, so it is waited out in its own thread.
            return lambda: threading.Thread(
                target=_terminate_logged,
                args=(watch.pid, watch.grace, procs),
                name=f"dagtop-stop-{watch.key}",
                daemon=True,
            ).start()
        return None


def _terminate_logged(pid: int, grace: float, procs: list[psutil.Process]) -> None:
    try:
        _terminate(pid, grace, procs)
    except Exception:
        logger.exception("stopping the process tree of pid %d failed", pid)


def _read(member: _Member) -> tuple[int, int, float] | None:
    """(rss, threads, cpu %) of one process, updating its totals; None once it has exited."""
    proc = member.proc
    try:
        # oneshot() lets the calls below share one read of each /proc file.
        with proc.oneshot():
            times = proc.cpu_times()
            member.cpu_seconds = max(member.cpu_seconds, times.user + times.system)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None  # its times above are final; a zombie has no memory left
            rss = proc.memory_info().rss
            threads = proc.num_threads()
            cpu_percent = proc.cpu_percent()
            if _HAS_IO_COUNTERS:
                try:
                    io = proc.io_counters()
                except psutil.AccessDenied:
                    pass  # e.g. a setuid child: keep what we knew
                else:
                    member.read_bytes = max(member.read_bytes, io.read_bytes)
                    member.write_bytes = max(member.write_bytes, io.write_bytes)
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return None
    except psutil.AccessDenied:
        # Alive but opaque to us: it still counts as a process of the tree.
        return 0, 0, 0.0
    return rss, threads, cpu_percent


def _retire(watch: _Watch, pid: int) -> None:
    """Move an exited member's last totals into the tree's exited totals."""
    member = watch.members.pop(pid)
    watch.exited_cpu_seconds += member.cpu_seconds
    watch.exited_read_bytes += member.read_bytes
    watch.exited_write_bytes += member.write_bytes
    watch.dead.add(pid)


def _parent_and_birth(pid: int) -> tuple[int, float]:
    """(parent pid, create time) of `pid`; (0, 0.0) if it can't be read, which matches no one."""
    try:
        proc = psutil.Process(pid)
        return proc.ppid(), proc.create_time()
    except psutil.Error:
        return 0, 0.0


def _copy(stats: TreeStats) -> TreeStats:
    return replace(stats, samples=list(stats.samples))
