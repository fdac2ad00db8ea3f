"""Tests for the process-tree monitor, run against real child processes."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from engine.executor.monitor import (
    Monitor,
    Sample,
    TreeStats,
    _Downsampler,
    _protected_pids,
    describe_exit,
    kill_tree,
    stop_tree,
)
from engine.units import format_bytes

pytestmark = pytest.mark.serial

MiB = 1024**2

# Code run with `python -c CODE CODE ROLE`: passing the code to itself lets one snippet play
# every part of a process tree. `spawn(role)` starts another copy in the given role.
PRELUDE = """
import os, signal, subprocess, sys, time
me, role = sys.argv[1], sys.argv[2]

def spawn(r):
    return subprocess.Popen([sys.executable, "-c", me, me, r, *sys.argv[3:]])

def ready():
    # One write() below PIPE_BUF is atomic, so lines of several processes never interleave.
    os.write(1, f"{role} {os.getpid()}\\n".encode())
"""

# A root and a child that both ignore SIGTERM: only SIGKILL ends them.
IGNORES_SIGTERM = """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if role == "root":
    spawn("child")
ready()
time.sleep(60)
"""


class Tree:
    """A step-like process tree, with the pids its processes report as they get ready."""

    def __init__(self, code: str, *args: str, own_session: bool = True) -> None:
        source = PRELUDE + textwrap.dedent(code)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source, source, "root", *args],
            start_new_session=own_session,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.members: dict[str, psutil.Process] = {}

    def wait_ready(self, count: int) -> dict[str, psutil.Process]:
        """Read `count` "role pid" lines from the tree's processes."""
        assert self.proc.stdout is not None
        for _ in range(count):
            line = self.proc.stdout.readline()
            assert line, "a process of the tree died before it was ready"
            role, pid = line.split()
            self.members[role] = psutil.Process(int(pid))
        return self.members

    def cleanup(self) -> None:
        kill_tree(self.pid)
        # Orphans that left the session are out of kill_tree's reach: end them by identity.
        for proc in self.members.values():
            with suppress(psutil.NoSuchProcess):
                proc.kill()
        self.proc.wait(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextmanager
def tree(code: str, *args: str, own_session: bool = True) -> Iterator[Tree]:
    started = Tree(code, *args, own_session=own_session)
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    mon = Monitor(interval=0.05)
    mon.start()
    try:
        yield mon
    finally:
        mon.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def stats_of(mon: Monitor, key: str) -> TreeStats:
    stats = mon.stats(key)
    assert stats is not None
    return stats


def is_gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- measuring


def test_peak_rss_of_a_process_holding_150_mib(monitor: Monitor) -> None:
    with tree("data = b'x' * (150 << 20)\nready()\ntime.sleep(60)") as step:
        monitor.watch("big", step.pid)
        step.wait_ready(1)
        assert wait_for(lambda: stats_of(monitor, "big").peak_rss_bytes >= 120 * MiB)
        final = monitor.unwatch("big")
    assert final.peak_rss_bytes >= 120 * MiB
    assert final.samples[-1].rss_bytes >= 120 * MiB
    assert final.violation is None


def test_rss_is_summed_over_the_tree_including_a_setsid_child(monitor: Monitor) -> None:
    code = """
    if role == "root":
        spawn("child"), spawn("setsid")
    else:
        if role == "setsid":
            os.setsid()
        data = b"x" * (60 << 20)
        ready()
    time.sleep(60)
    """
    with tree(code) as step:
        monitor.watch("tree", step.pid)
        step.wait_ready(2)

        def both_children_counted() -> bool:
            stats = stats_of(monitor, "tree")
            return stats.peak_rss_bytes >= 120 * MiB and stats.peak_children >= 2

        assert wait_for(both_children_counted), stats_of(monitor, "tree")
        final = monitor.unwatch("tree")
    assert final.samples[-1].children == 2
    assert final.peak_threads >= 3


def test_a_step_without_a_session_of_its_own_is_measured_the_slow_way(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    code = """
    if role == "root":
        spawn("child")
    else:
        data = b"x" * (60 << 20)
        ready()
    time.sleep(60)
    """
    with (
        caplog.at_level(logging.WARNING, logger="engine.executor.monitor"),
        tree(code, own_session=False) as step,
    ):
        monitor.watch("shared", step.pid)
        child = step.wait_ready(1)["child"]
        assert wait_for(lambda: stats_of(monitor, "shared").peak_rss_bytes >= 60 * MiB)
        monitor.unwatch("shared")
        kill_tree(step.pid)
        assert step.proc.wait(timeout=2) == -signal.SIGKILL
        assert wait_for(lambda: is_gone(child), timeout=1)
    assert "does not lead its own session" in caplog.text


def test_busy_loop_cpu(monitor: Monitor) -> None:
    with tree("while True:\n    pass") as step:
        monitor.watch("busy", step.pid)
        time.sleep(0.6)
        assert wait_for(lambda: stats_of(monitor, "busy").cpu_seconds > 0.3, timeout=2.0)
        stats = stats_of(monitor, "busy")
        monitor.unwatch("busy")
    assert stats.peak_cpu_percent > 30
    assert stats.samples[-1].cpu_seconds == stats.cpu_seconds


def test_cpu_of_exited_children_is_kept(monitor: Monitor) -> None:
    code = """
    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    if role == "root":
        spawn("burner").wait()
        burn(0.25)
        ready()
        time.sleep(60)
    else:
        burn(0.4)
    """
    with tree(code) as step:
        monitor.watch("burn", step.pid)
        step.wait_ready(1)  # the burner has exited and been reaped by now
        time.sleep(0.15)
        stats = stats_of(monitor, "burn")
        final = monitor.unwatch("burn")
    # The burner's 0.4 s must still be in: the root alone has used about 0.3 s.
    assert stats.cpu_seconds >= 0.55
    assert final.samples[-1].children == 0
    series = [sample.cpu_seconds for sample in final.samples]
    assert series == sorted(series)
    assert final.cpu_seconds >= stats.cpu_seconds


def test_io_of_exited_children_is_kept(monitor: Monitor, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    before = psutil.Process().io_counters().write_bytes
    with probe.open("wb") as f:
        f.write(b"x" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())
    if psutil.Process().io_counters().write_bytes - before < 1 << 20:
        pytest.skip("this file system does not account writes to processes (tmpfs?)")
    code = """
    if role == "root":
        spawn("writer").wait()
        ready()
        time.sleep(60)
    else:
        with open(sys.argv[3], "wb") as f:
            f.write(b"x" * (4 << 20))
            f.flush()
            os.fsync(f.fileno())
        time.sleep(0.3)
    """
    with tree(code, str(tmp_path / "out")) as step:
        monitor.watch("io", step.pid)
        step.wait_ready(1)  # the writer has exited by now
        final = monitor.unwatch("io")
    assert final.write_bytes >= 4 << 20
    assert final.samples[-1].write_bytes == final.write_bytes


# --- limits


def test_memory_limit_kills_the_tree(monitor: Monitor) -> None:
    code = """
    chunks = []
    while True:
        chunks.append(b"x" * (20 << 20))
        time.sleep(0.05)
    """
    limit = 100 * MiB
    with tree(code) as step:
        monitor.watch("hog", step.pid, memory_limit=limit)
        assert step.proc.wait(timeout=3) == -signal.SIGKILL
        final = monitor.unwatch("hog")
    assert final.violation is not None
    assert final.violation.startswith("memory limit exceeded: peak ")
    assert final.violation.endswith(f"of limit {format_bytes(limit)}")
    assert final.peak_rss_bytes > limit


def test_memory_limit_reaches_an_orphan_that_left_the_session(monitor: Monitor) -> None:
    # The hog calls setsid() and its parent exits: no group, session or parent links it to the
    # step any more, only the monitor's memory of having seen it.
    code = """
    if role == "root":
        spawn("mid")
        time.sleep(60)
    elif role == "mid":
        spawn("hog")
        time.sleep(0.4)
    else:
        os.setsid()
        ready()
        time.sleep(0.6)
        chunks = []
        while True:
            chunks.append(b"x" * (20 << 20))
            time.sleep(0.05)
    """
    with tree(code) as step:
        monitor.watch("orphan", step.pid, memory_limit=100 * MiB)
        hog = step.wait_ready(1)["hog"]
        assert wait_for(lambda: is_gone(hog))
        assert step.proc.wait(timeout=3) == -signal.SIGKILL
        final = monitor.unwatch("orphan")
    assert final.violation is not None
    assert final.violation.startswith("memory limit exceeded")


def test_timeout_terminates_the_tree(monitor: Monitor) -> None:
    with tree("time.sleep(60)") as step:
        started = time.monotonic()
        monitor.watch("slow", step.pid, timeout=0.5, grace=1)
        assert step.proc.wait(timeout=3) == -signal.SIGTERM
        elapsed = time.monotonic() - started
        final = monitor.unwatch("slow")
    assert 0.45 <= elapsed < 2.0
    assert final.violation == "timed out after 0.5 s"


def test_timeout_sigkills_what_ignores_sigterm_after_grace(monitor: Monitor) -> None:
    with tree(IGNORES_SIGTERM) as step:
        child = step.wait_ready(2)["child"]
        started = time.monotonic()
        monitor.watch("stubborn", step.pid, timeout=0.3, grace=0.5)
        assert step.proc.wait(timeout=3) == -signal.SIGKILL
        elapsed = time.monotonic() - started
        assert wait_for(lambda: is_gone(child), timeout=1)
        final = monitor.unwatch("stubborn")
    assert 0.75 <= elapsed < 2.5
    assert final.violation == "timed out after 0.3 s"


# --- stopping trees


def test_stop_tree_kills_grandchildren_including_a_setsid_one() -> None:
    code = """
    if role == "root":
        spawn("child")
    elif role == "child":
        spawn("grandchild"), spawn("setsid")
    elif role == "setsid":
        os.setsid()
    ready()
    time.sleep(60)
    """
    with tree(code) as step:
        members = step.wait_ready(4)
        assert members["setsid"].pid == os.getsid(members["setsid"].pid)
        started = time.monotonic()
        stop_tree(step.pid, grace=1)
        assert time.monotonic() - started < 1.0  # all of them obeyed SIGTERM
        assert step.proc.wait(timeout=1) == -signal.SIGTERM
        for role, proc in members.items():
            assert wait_for(functools.partial(is_gone, proc), timeout=1), role


def test_kill_tree_kills_at_once() -> None:
    with tree(IGNORES_SIGTERM) as step:
        child = step.wait_ready(2)["child"]
        kill_tree(step.pid)
        assert step.proc.wait(timeout=1) == -signal.SIGKILL
        assert wait_for(lambda: is_gone(child), timeout=1)


def test_stopping_a_vanished_tree_is_quiet() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=5)
    stop_tree(proc.pid, grace=0.1)
    kill_tree(proc.pid)


def test_never_signals_init_or_ourselves() -> None:
    # Checked without sending anything: a broken guard must not take the test run down.
    protected = _protected_pids()
    assert {1, os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0)} <= protected
    with tree("ready()\ntime.sleep(60)") as step:
        step.wait_ready(1)
        assert step.pid not in protected
    # Were the guard missing, psutil would raise ValueError for these before any signal.
    stop_tree(-1, grace=0)
    kill_tree(-42)


# --- the series


def test_samples_stay_bounded_and_span_the_whole_run() -> None:
    mon = Monitor(interval=0.01, max_samples=20)
    mon.start()
    try:
        with tree("time.sleep(60)") as step:
            started = time.time()
            mon.watch("long", step.pid)
            time.sleep(1.0)
            samples = stats_of(mon, "long").samples
            final = mon.unwatch("long")
    finally:
        mon.stop()
    assert 2 <= len(samples) <= 20
    assert samples[0].t - started < 0.5  # the first sample is taken by watch() itself
    assert samples[-1].t - samples[0].t > 0.6
    assert len(final.samples) <= 20
    assert final.samples[0] == samples[0]
    assert final.samples[-1].t >= samples[-1].t


def test_downsampler_keeps_a_uniform_grid() -> None:
    kept: list[Sample] = []
    series = _Downsampler(kept, limit=10)
    for i in range(1000):
        series.add(Sample(float(i), 0.0, 0.0, 0, 0, 0, 0, 0))
        assert len(kept) <= 10
    times = [sample.t for sample in kept]
    assert times[0] == 0.0
    steps = {b - a for a, b in zip(times, times[1:], strict=False)}
    assert len(steps) == 1
    assert times[-1] > 800
    series.add_final(Sample(999.5, 0.0, 0.0, 0, 0, 0, 0, 0))
    assert len(kept) <= 10
    assert kept[-1].t == 999.5


# --- exits


def test_describe_exit_of_real_processes() -> None:
    no_core = "import resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); "
    cases = {
        "segmentation fault (SIGSEGV)": no_core
        + "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
        "aborted (SIGABRT)": no_core + "import os; os.abort()",
        "exited with code 3": "raise SystemExit(3)",
        "killed by SIGKILL": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        "terminated by SIGTERM": "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        "killed by SIGUSR1": "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)",
    }
    procs = {
        words: subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        for words, code in cases.items()
    }
    try:
        for words, proc in procs.items():
            assert describe_exit(proc.wait(timeout=10)) == words
    finally:
        for proc in procs.values():
            kill_tree(proc.pid)
            proc.wait(timeout=5)


def test_describe_exit_values() -> None:
    assert describe_exit(-11) == "segmentation fault (SIGSEGV)"
    assert describe_exit(-6) == "aborted (SIGABRT)"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "terminated by SIGTERM"
    assert describe_exit(-int(signal.SIGINT)) == "killed by SIGINT"
    assert describe_exit(-int(signal.SIGBUS)) == "killed by SIGBUS"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(137) == "exited with code 137"
    assert describe_exit(-200) == "killed by signal 200"


# --- callbacks and lifecycle


def test_failing_on_sample_does_not_stop_sampling(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, Sample]] = []

    def broken(key: str, sample: Sample) -> None:
        calls.append((key, sample))
        raise RuntimeError("storage is down")

    mon = Monitor(interval=0.02, on_sample=broken)
    mon.start()
    try:
        with (
            caplog.at_level(logging.ERROR, logger="engine.executor.monitor"),
            tree("time.sleep(60)") as step,
        ):
            mon.watch("cb", step.pid)
            assert wait_for(lambda: len(calls) >= 10, timeout=2)
            mon.unwatch("cb")
    finally:
        mon.stop()
    assert {key for key, _ in calls} == {"cb"}
    failures = [r for r in caplog.records if "on_sample callback failed" in r.getMessage()]
    assert len(failures) == 1  # one traceback per step, not one per sample


def test_lifecycle_and_unknown_keys() -> None:
    mon = Monitor(interval=0.05)
    with tree("time.sleep(60)") as step:
        mon.watch("a", step.pid)  # not started: watch still samples once
        assert len(stats_of(mon, "a").samples) == 1
        with pytest.raises(ValueError):
            mon.watch("a", step.pid)
        mon.start()
        mon.start()
        kill_tree(step.pid)
        step.proc.wait(timeout=5)
        final = mon.unwatch("a")  # the process is gone: no last sample, no error
    mon.stop()
    mon.stop()
    assert final.samples
    assert mon.stats("a") is None
    with pytest.raises(KeyError):
        mon.unwatch("a")


def test_watching_a_process_that_already_exited() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=5)
    mon = Monitor()
    mon.watch("gone", proc.pid)
    final = mon.unwatch("gone")
    assert final.samples == []
    assert final.peak_rss_bytes == 0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Monitor(interval=0)
    with pytest.raises(ValueError):
        Monitor(max_samples=1)
    for pid in (0, 1, os.getpid()):
        with pytest.raises(ValueError):
            Monitor().watch("bad", pid, memory_limit=1)
