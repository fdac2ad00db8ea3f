"""Per-step overhead of the executor, against the floors of starting a process.

    python -m tests.benchmarks.steps [--steps 100] [--repeat 3]

Runs a chain and a fan-out of trivial assets through the real executor (subprocesses,
monitoring, SQLite history), and in the same run measures the floors: spawning
`python -c pass` and forking a warm process. Machines here are shared and noisy, so the
ratios, measured side by side, are what to read; absolute numbers move from run to run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from engine.status import RunStatus


def _chain(n: int) -> str:
    lines = ["from engine import asset", "", "@asset", "def s0():", "    return 0", ""]
    for i in range(1, n):
        lines += ["@asset", f"def s{i}(s{i - 1}):", f"    return s{i - 1} + 1", ""]
    return "\n".join(lines)


def _fanout(n: int) -> str:
    lines = ["from engine import asset", ""]
    for i in range(n):
        lines += ["@asset", f"def f{i}():", f"    return {i}", ""]
    return "\n".join(lines)


def spawn_floor(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fork_floor(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(root: Path, name: str, source: str, selection: list[str], repeat: int) -> float:
    from engine.client import Client

    project = root / name
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / f"{name}.py").write_text(source)
    client = Client(home=project / "home", pipelines=project / "pipelines")
    client.load()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        view = client.materialize(selection)
        times.append(time.perf_counter() - start)
        assert view.status == RunStatus.SUCCESS, view
    return statistics.median(times)


def cold_cli(root: Path, repeat: int) -> float:
    project = root / "cold"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "three.py").write_text(_chain(3))
    dagtop = str(Path(sys.executable).with_name("dagtop"))
    base = [dagtop, "--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
    subprocess.run([*base, "check"], check=True, capture_output=True)  # warm the manifest cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([*base, "materialize", "*s2"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    # Every tool runs as installed, with its bytecode cache: pip precompiled Dagster's and
    # Luigi's, and dagtop's (editable) source writes its own on first import. A shell that
    # forbids writing bytecode would make only dagtop recompile itself on every command.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.steps
    root = Path(tempfile.mkdtemp(prefix="dagtop-bench-"))
    try:
        spawn = spawn_floor(20)
        fork = fork_floor(50)
        chain = run_case(root, "chain", _chain(n), ["*"], args.repeat) / n
        fan = run_case(root, "fanout", _fanout(n), ["*"], args.repeat) / n
        cold = cold_cli(root, args.repeat)
        spawn_after = spawn_floor(20)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    spawn = statistics.median([spawn, spawn_after])
    rows = [
        ("floor: spawn `python -c pass`", spawn, 1.0),
        ("floor: fork of a warm process", fork, fork / spawn),
        (f"per step, {n}-step chain", chain, chain / spawn),
        (f"per step, {n}-step fan-out", fan, fan / spawn),
        ("cold `dagtop materialize` of 3 steps", cold, cold / spawn),
    ]
    print(
        textwrap.dedent(f"""
        dagtop executor benchmark  ({os.cpu_count()} cores, Python {sys.version.split()[0]},
        max_workers default, median of {args.repeat} runs)
    """).strip()
    )
    print(f"{'case':<40} {'time':>10} {'× spawn':>9}")
    for label, secs, ratio in rows:
        print(f"{label:<40} {secs * 1000:>8.1f}ms {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
