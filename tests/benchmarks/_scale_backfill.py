"""The backfill cases of the scale benchmark (`python -m tests.benchmarks.scale --only backfill`).

An hourly two-asset chain (`raw -> clean`, each step returns a number), backfilled over its
first N hours with `--max-parallel 2`, from a cold `dagtop backfill` to its exit:

- through the CLI with no engine running (the command starts an engine of its own);
- handed to a running `dagtop daemon` (the CLI follows what the daemon pushes).

The cost of a key is the wall time over the number of keys; it should not grow with N. The
floor is what two steps of a plain run cost in the same run: `dagtop materialize` of a chain,
per step beyond its first 3 (as compare.py measures it), times two. Peak memory is the
orchestrator's RSS with its helpers (fork server, loader child), never the steps': the CLI's
without a daemon, the daemon's with one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from tests.benchmarks import _cases as gen
from tests.benchmarks.compare import HELPERS, BenchError, PeakRss, run
from tests.benchmarks.scale import Case, Floor, Result

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
    """Two steps of a plain run: per step of a `CHAIN`-step `materialize`, beyond its first 3."""
    project = _project(root, gen.dagtop_chain(CHAIN))
    samples = []
    for _ in range(3):
        short = run(_dagtop(project, "materialize", "*s2"), timeout=120, cwd=project).seconds
        cmd = _dagtop(project, "materialize", f"*s{CHAIN - 1}")
        long = run(cmd, timeout=60 + 5 * CHAIN, cwd=project).seconds
        samples.append((long - short) / (CHAIN - 3))
    return Floor("two steps of a plain `dagtop materialize` run", 2 * statistics.median(samples))


def _backfill(project: Path, n: int) -> list[str]:
    first, last = _hours(n)
    return _dagtop(project, "backfill", "raw", "clean", "--from", first, "--to", last,
                   "--max-parallel", "2")  # fmt: skip


def _check(output: str, n: int) -> None:
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if "success" not in last or f"{n}/{n}" not in last:
        raise BenchError(f"the backfill did not succeed: {last!r}")


def without_daemon(n: int) -> Callable[[Path], Result]:
    def measure(root: Path) -> Result:
        project = _project(root, PIPELINE)
        outcome = run(_backfill(project, n), timeout=120 + 2 * n, cwd=project,
                      helpers=HELPERS["dagtop"])  # fmt: skip
        _check(outcome.output, n)
        return Result(outcome.seconds, outcome.peak_rss)

    return measure


def with_daemon(n: int) -> Callable[[Path], Result]:
    def measure(root: Path) -> Result:
        project = _project(root, PIPELINE)
        with _daemon(project) as daemon:
            sampler = PeakRss(daemon.pid, HELPERS["dagtop"])
            sampler.start()
            try:
                outcome = run(_backfill(project, n), timeout=120 + 2 * n, cwd=project,
                              helpers=())  # fmt: skip
            finally:
                sampler.done.set()
                sampler.join()
        _check(outcome.output, n)
        cli_rss = f"{outcome.peak_rss / 1e6:.0f} MB"
        return Result(outcome.seconds, sampler.peak, {"CLI RSS": cli_rss})

    return measure


@contextlib.contextmanager
def _daemon(project: Path):  # type: ignore[no-untyped-def]
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
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def cases(sizes: Sequence[int]) -> list[Case]:
    out = []
    for label, make in (("backfill, CLI, no daemon", without_daemon),
                        ("backfill, via `dagtop daemon`", with_daemon)):  # fmt: skip
        # A measurement of 10,000 keys takes a quarter of an hour: once is enough.
        out += [Case(GROUP, label, n, "key", make(n), 1 if n >= 5_000 else None) for n in sizes]
    return out
