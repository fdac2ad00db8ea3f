"""The backfill cases of the scale benchmark (`python -m tests.benchmarks.scale --only backfill`).

An hourly two-asset chain (`raw -> clean`, each step returns a number), backfilled over its
first N hours with `--max-parallel 2`, from a cold `dagtop backfill` to its exit:

- through the CLI with no engine running (the command starts an engine of its own);
- handed to a running `dagtop daemon` (the CLI follows what the daemon pushes).

The cost of a key is the wall time over the number of keys, and the orchestrator's own CPU
time over the number of keys (what other work on a shared machine barely moves); neither
should grow with N. The floor is what two steps of a plain run cost in the same run: `dagtop
materialize` of a chain, per step beyond its first 3 (as compare.py measures it), times two.
Peak memory is the orchestrator's RSS with its helpers (fork server, loader child), never the
steps', and its CPU is the same processes': the CLI's without a daemon, the daemon's with one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil

from engine.status import BackfillStatus
from tests.benchmarks import _cases as gen
from tests.benchmarks.compare import HELPERS, BenchError, run
from tests.benchmarks.scale import Case, Floor, Result, Usage

GROUP = "backfill"
SIZES = (100, 1_000, 10_000)
START = "2024-01-01-00:00"
CHAIN = 43  # steps of the floor's plain run
PIPELINE = f'''\
from engine import HourlyPartitions, asset

hours = HourlyPartitions(start="{START}")


@asset(partitions=hours)
def raw(context):
    return 1


@asset(partitions=hours)
def clean(context, raw):
    return raw + 1
'''


def _dagtop(project: Path, *args: str) -> list[str]:
    exe = str(Path(sys.executable).with_name("dagtop"))
    return [exe, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"), *args]


def _project(root: Path, source: str) -> Path:
    project = root / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "bench.py").write_text(source)
    # Untimed: load and cache the definitions, create the database.
    run(_dagtop(project, "check"), timeout=120, cwd=project)
    run(_dagtop(project, "runs"), timeout=120, cwd=project)
    return project


def _hours(n: int) -> tuple[str, str]:
    from engine import HourlyPartitions

    keys = HourlyPartitions(start=START).keys()
    if len(keys) < n:
        raise BenchError(f"only {len(keys)} hours since {START}")
    return keys[0], keys[n - 1]


def floor(root: Path) -> Floor:
    """Two steps of a plain run: per step of a `CHAIN`-step `materialize`, beyond its first 3
    (wall time and the command's own CPU time, each the median of three)."""
    project = _project(root, gen.dagtop_chain(CHAIN))
    walls, cpus = [], []
    for _ in range(3):
        short, _, short_use = _run(_dagtop(project, "materialize", "*s2"), project, 120)
        cmd = _dagtop(project, "materialize", f"*s{CHAIN - 1}")
        long, _, long_use = _run(cmd, project, 60 + 5 * CHAIN)
        walls.append((long - short) / (CHAIN - 3))
        cpus.append((long_use.cpu_seconds - short_use.cpu_seconds) / (CHAIN - 3))
    return Floor(
        "two steps of a plain `dagtop materialize` run",
        2 * statistics.median(walls),
        2 * statistics.median(cpus),
    )


def _backfill(project: Path, n: int) -> list[str]:
    first, last = _hours(n)
    return _dagtop(project, "backfill", "raw", "clean", "--from", first, "--to", last,
                   "--max-parallel", "2")  # fmt: skip


def _check(output: str, n: int) -> None:
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if BackfillStatus.SUCCESS not in last or f"{n}/{n}" not in last:
        raise BenchError(f"the backfill did not succeed: {last!r}")


def _run(cmd: list[str], cwd: Path, timeout: float) -> tuple[float, str, Usage]:
    """Run a dagtop command to its end: its wall time, output, and the usage of it and its
    helpers (never its steps).

    Raises:
        BenchError: it failed or ran past `timeout` (its process group is killed).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)  # fmt: skip
    usage = Usage(proc.pid, HELPERS["dagtop"], from_zero=True)
    usage.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise BenchError(f"timed out after {timeout} s") from None
    finally:
        usage.done.set()
        usage.join()
    seconds = time.perf_counter() - start
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"exit code {proc.returncode}: {text.strip().splitlines()[-1:]}")
    return seconds, text, usage


def without_daemon(n: int) -> Callable[[Path], Result]:
    def measure(root: Path) -> Result:
        project = _project(root, PIPELINE)
        seconds, text, usage = _run(_backfill(project, n), project, 120 + 2 * n)
        _check(text, n)
        return Result(seconds, usage.peak, usage.cpu_seconds)

    return measure


def with_daemon(n: int) -> Callable[[Path], Result]:
    def measure(root: Path) -> Result:
        project = _project(root, PIPELINE)
        with _daemon(project) as daemon:
            usage = Usage(daemon.pid, HELPERS["dagtop"], from_zero=False)
            usage.start()
            try:
                outcome = run(_backfill(project, n), timeout=120 + 2 * n, cwd=project,
                              helpers=())  # fmt: skip
            finally:
                usage.stop()
        _check(outcome.output, n)
        cli_rss = f"{outcome.peak_rss / 1e6:.0f} MB"
        return Result(outcome.seconds, usage.peak, usage.cpu_seconds, {"CLI RSS": cli_rss})

    return measure


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def _daemon(project: Path) -> Iterator[psutil.Process]:
    """`dagtop daemon` on the project while the block runs; yields once it holds the lease."""
    log_file = project / "home" / "daemon.log"
    proc = subprocess.Popen(_dagtop(project, "daemon"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=project,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (log_file.exists() and "engine started" in log_file.read_text(errors="replace")):
            if proc.poll() is not None:
                raise BenchError(f"`dagtop daemon` exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise BenchError("`dagtop daemon` did not start within 60 s")
            time.sleep(0.05)
        yield psutil.Process(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill(proc)


def cases(sizes: Sequence[int]) -> list[Case]:
    out = []
    for label, make in (("backfill, CLI, no daemon", without_daemon),
                        ("backfill, via `dagtop daemon`", with_daemon)):  # fmt: skip
        # A measurement of 10,000 keys takes a quarter of an hour: once is enough.
        out += [Case(GROUP, label, n, "key", make(n), 1 if n >= 5_000 else None) for n in sizes]
    return out
