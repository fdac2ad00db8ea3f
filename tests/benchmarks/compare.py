"""dagtop against Dagster and Luigi: the same trivial pipelines, on this machine, in one run.

    python -m tests.benchmarks.compare [--repeat 3] [--quick] [--only CASE,...]
                                       [--tools dagtop,dagster,luigi] [--write | --no-write]

Run it from the repository root with dagtop's own interpreter (`.venv/bin/python`). Dagster
and Luigi are installed from PyPI, each into its own virtual environment under
`tests/benchmarks/.envs/` (reused when it already imports); never into dagtop's. A tool that
cannot be installed is skipped with one line.

Every case writes equivalent pipelines for each tool into a temporary folder, then runs the
tools alternately (dagtop, Dagster, Luigi, dagtop, ...) `--repeat` times and keeps medians,
so a burst of load from other work on these shared machines hits every tool alike. Each tool
runs from a cold process through its own command line, with its history persisted where it
has one (dagtop's SQLite file, a file-based DAGSTER_HOME; Luigi keeps none). The floors
(spawning `python -c pass`, forking a warm process) are measured in the same run.

A full run (every case, not --quick) rewrites the section of docs/benchmarks.md between
`<!-- compare:start -->` and `<!-- compare:end -->`; `--write` / `--no-write` override that.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import psutil

from tests.benchmarks import _cases as gen
from tests.benchmarks._docs import add_write_option, write_section
from tests.benchmarks.steps import fork_floor, spawn_floor

REPO = Path(__file__).resolve().parents[2]
ENVS = Path(__file__).resolve().parent / ".envs"

TOOLS = ("dagtop", "dagster", "luigi")
TITLES = {"dagtop": "dagtop", "dagster": "Dagster", "luigi": "Luigi"}
PACKAGES = {"dagster": "dagster", "luigi": "luigi"}  # tool -> PyPI distribution (and module)
SAMPLE_EVERY = 0.05  # seconds between memory samples
# Processes that belong to the orchestrator itself (not steps), by a piece of their command line.
HELPERS = {
    "dagtop": ("engine.executor.forkserver", "engine.loading.loader_child"),
    "dagster": ("multiprocessing.resource_tracker",),
    "luigi": (),
}


class BenchError(Exception):
    """A command failed or timed out; the case reports it and the run goes on."""


# --- running commands -------------------------------------------------------------------------


class PeakRss(threading.Thread):
    """Samples the RSS of a process plus its helper children (never its steps)."""

    def __init__(self, pid: int, helpers: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.helpers = helpers
        self.known: dict[tuple[int, float], bool] = {}  # (pid, create time) -> is a helper
        self.peak = 0
        self.done = threading.Event()

    def _is_helper(self, child: psutil.Process) -> bool:
        key = (child.pid, child.create_time())
        if key not in self.known:
            cmdline = " ".join(child.cmdline())
            self.known[key] = any(h in cmdline for h in self.helpers)
        return self.known[key]

    def sample(self) -> None:
        try:
            total = self.root.memory_info().rss
            children = self.root.children()
        except psutil.Error:
            return
        for child in children:
            with contextlib.suppress(psutil.Error):
                if self._is_helper(child):
                    total += child.memory_info().rss
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while True:
            self.sample()
            if self.done.wait(SAMPLE_EVERY):
                return


@dataclass
class Outcome:
    seconds: float
    peak_rss: int = 0
    output: str = ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    helpers: tuple[str, ...] | None = None,
) -> Outcome:
    """Run `cmd` to its end and time it; with `helpers`, also sample its peak memory.

    Raises:
        BenchError: it exited non-zero or ran past `timeout` (its process group is killed).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    sampler = None
    if helpers is not None:
        with contextlib.suppress(psutil.Error):
            sampler = PeakRss(proc.pid, helpers)
            sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise BenchError(f"timed out after {timeout:g} s: {shlex.join(cmd)}") from None
    finally:
        if sampler is not None:
            sampler.done.set()
            sampler.join()
    seconds = time.perf_counter() - start
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join("    " + line for line in text.splitlines()[-8:])
        raise BenchError(f"exit code {proc.returncode}: {shlex.join(cmd)}\n{tail}")
    return Outcome(seconds, sampler.peak if sampler else 0, text)


# --- the other tools' environments ------------------------------------------------------------


def _probe(python: Path, module: str) -> str | None:
    """The version of `module` importable by `python`, or None."""
    if not python.exists():
        return None
    code = f"import importlib.metadata as m; import {module}; print(m.version({module!r}))"
    try:
        return run([str(python), "-c", code], timeout=120).output.strip().splitlines()[-1]
    except (BenchError, IndexError, OSError):
        return None


def ensure_env(tool: str) -> str | None:
    """Build (or reuse) the tool's virtual environment; returns its version, or None."""
    package = PACKAGES[tool]
    env_dir = ENVS / tool
    python = env_dir / "bin" / "python"
    version = _probe(python, package)
    if version is not None:
        return version
    print(f"installing {package} into {env_dir.relative_to(REPO)} ...", flush=True)
    try:
        shutil.rmtree(env_dir, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(env_dir)], timeout=300)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        run([*pip, package], timeout=1800)
    except (BenchError, OSError) as exc:
        why = str(exc).splitlines()[0]
        print(f"skipping {TITLES[tool]}: `pip install {package}` failed ({why})")
        return None
    version = _probe(python, package)
    if version is None:
        print(f"skipping {TITLES[tool]}: installed, but `import {package}` fails")
    return version


# --- the bench: folders, commands, sizes --------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    chain: int = 20
    fanout: int = 100
    partitions: int = 30
    groups: int = 10
    per_group: int = 100

    @property
    def assets(self) -> int:
        return self.groups * self.per_group


QUICK = Sizes(chain=5, fanout=10, partitions=5, groups=2, per_group=50)


@dataclass
class Bench:
    root: Path
    sizes: Sizes
    versions: dict[str, str]  # the tools available in this run
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # per case
    counter: int = 0
    loads: list[float] = field(default_factory=list)  # 1-minute load average, per measurement

    @property
    def cores(self) -> int:
        return os.cpu_count() or 1

    def fresh(self, *parts: str) -> Path:
        """A new, empty folder under the run's temp folder."""
        self.counter += 1
        path = self.root.joinpath(*parts[:-1], f"{parts[-1]}-{self.counter}")
        path.mkdir(parents=True)
        return path

    # dagtop

    def dagtop_project(self, name: str, source: str) -> Path:
        project = self.fresh("dagtop", name)
        (project / "pipelines").mkdir()
        (project / "pipelines" / f"{name}.py").write_text(source)
        return project

    def dagtop(self, project: Path, *args: str, home: Path | None = None) -> list[str]:
        home = home or project / "home"
        exe = str(Path(sys.executable).with_name("dagtop"))
        return [exe, "--home", str(home), "--pipelines", str(project / "pipelines"), *args]

    def dagtop_ready(self, project: Path) -> None:
        """Untimed: load and cache the definitions and create the database."""
        run(self.dagtop(project, "check"), timeout=120, cwd=project)
        run(self.dagtop(project, "runs"), timeout=120, cwd=project)

    # Dagster

    @property
    def dagster_home(self) -> Path:
        home = self.root / "dagster-home"
        if not home.exists():
            home.mkdir(parents=True)
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            # Untimed: create the instance's SQLite storage once for every case.
            run(self.dagster_cli("instance", "migrate"), timeout=300, env=self.dagster_env)
        return home

    @property
    def dagster_env(self) -> dict[str, str]:
        return {**os.environ, "DAGSTER_HOME": str(self.root / "dagster-home")}

    def dagster_cli(self, *args: str) -> list[str]:
        return [str(ENVS / "dagster" / "bin" / "dagster"), *args]

    def dagster_module(self, name: str, source: str) -> tuple[Path, list[str]]:
        """Writes module `bench_NAME`; returns its folder and the CLI options that load it."""
        folder = self.fresh("dagster", name)
        (folder / f"bench_{name}.py").write_text(source)
        _ = self.dagster_home
        return folder, ["-d", str(folder), "-m", f"bench_{name}"]

    # Luigi

    def luigi_module(self, name: str, source: str) -> Path:
        folder = self.fresh("luigi", name)
        (folder / f"bench_{name}.py").write_text(source)
        # Luigi's default exit code is 0 even when a task fails: make failures visible.
        (folder / "luigi.cfg").write_text(
            "[retcode]\nalready_running=10\nmissing_data=20\nnot_run=25\n"
            "task_failed=30\nscheduling_error=35\nunhandled_exception=40\n"
        )
        return folder

    def luigi_run(
        self, folder: Path, name: str, args: list[str], timeout: float, memory: bool = False
    ) -> Outcome:
        """`luigi --module bench_NAME ARGS --local-scheduler`, with a fresh output folder
        (outputs that exist would make Luigi skip its tasks as complete)."""
        env = {
            **os.environ,
            "PYTHONPATH": str(folder),
            "LUIGI_CONFIG_PATH": str(folder / "luigi.cfg"),
            "BENCH_LUIGI_OUT": str(self.fresh("luigi", "out")),
        }
        exe = str(ENVS / "luigi" / "bin" / "luigi")
        cmd = [exe, "--module", f"bench_{name}", *args, "--local-scheduler"]
        return run(cmd, timeout=timeout, env=env, cwd=folder,
                   helpers=HELPERS["luigi"] if memory else None)  # fmt: skip


Measure = Callable[[], dict[str, float]]  # one measurement: metric key -> value
Prepare = Callable[[Bench], Measure]  # untimed set-up for one tool in one case


# --- the cases: one function per tool per case ------------------------------------------------


def import_dagtop(b: Bench) -> Measure:
    return _import_measure(Path(sys.executable), "engine", b.root)


def import_dagster(b: Bench) -> Measure:
    return _import_measure(ENVS / "dagster" / "bin" / "python", "dagster", b.root)


def import_luigi(b: Bench) -> Measure:
    return _import_measure(ENVS / "luigi" / "bin" / "python", "luigi", b.root)


def _import_measure(python: Path, module: str, cwd: Path) -> Measure:
    cmd = [str(python), "-c", f"import {module}"]
    return lambda: {"import": run(cmd, timeout=120, cwd=cwd).seconds}


def cold3_dagtop(b: Bench) -> Measure:
    project = b.dagtop_project("cold3", gen.dagtop_chain(3))
    b.dagtop_ready(project)
    cmd = b.dagtop(project, "materialize", "*s2")
    return lambda: {"cold3": run(cmd, timeout=120, cwd=project).seconds}


def cold3_dagster(b: Bench) -> Measure:
    folder, where = b.dagster_module("cold3", gen.dagster_chain(3))
    cmd = b.dagster_cli("asset", "materialize", *where, "--select", "*s2")
    return lambda: {"cold3": run(cmd, timeout=300, env=b.dagster_env, cwd=folder).seconds}


def cold3_luigi(b: Bench) -> Measure:
    folder = b.luigi_module("cold3", gen.luigi_chain(3))
    return lambda: {"cold3": b.luigi_run(folder, "cold3", ["S2"], timeout=120).seconds}


def daemon3_dagtop(b: Bench) -> Measure:
    project = b.dagtop_project("daemon3", gen.dagtop_chain(3))
    b.dagtop_ready(project)
    _start_daemon(b, project)
    cmd = b.dagtop(project, "materialize", "*s2")
    run(cmd, timeout=120, cwd=project)  # untimed: the daemon's first run warms it up
    return lambda: {"daemon3": run(cmd, timeout=120, cwd=project).seconds}


def _start_daemon(b: Bench, project: Path) -> None:
    """`dagtop daemon` on the project, until the case ends; returns once it holds the lease."""
    log_file = project / "home" / "daemon.log"
    proc = subprocess.Popen(
        b.dagtop(project, "daemon"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=project,
        start_new_session=True,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill_group(proc)

    b.stack.callback(stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"`dagtop daemon` exited with code {proc.returncode}")
        if log_file.exists() and "engine started" in log_file.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise BenchError("`dagtop daemon` did not start within 60 s")


# The chain case runs the chain's first 3 steps, then all of it, back to back: the difference
# is what each step adds once the command's fixed cost is paid, measured under the same load.


def chain_dagtop(b: Bench) -> Measure:
    n = b.sizes.chain
    project = b.dagtop_project("chain", gen.dagtop_chain(n))
    b.dagtop_ready(project)

    def upto(last: int) -> Outcome:
        cmd = b.dagtop(project, "materialize", f"*s{last}")
        return run(cmd, timeout=60 + 5 * n, cwd=project)

    return _chain_measure(n, upto)


def chain_dagster(b: Bench) -> Measure:
    n = b.sizes.chain
    folder, where = b.dagster_module("chain", gen.dagster_chain(n))

    def upto(last: int) -> Outcome:
        cmd = b.dagster_cli("asset", "materialize", *where, "--select", f"*s{last}")
        return run(cmd, timeout=300 + 30 * n, env=b.dagster_env, cwd=folder)

    return _chain_measure(n, upto)


def chain_luigi(b: Bench) -> Measure:
    n = b.sizes.chain
    folder = b.luigi_module("chain", gen.luigi_chain(n))
    return _chain_measure(
        n, lambda last: b.luigi_run(folder, "chain", [f"S{last}"], timeout=60 + 5 * n)
    )


def _chain_measure(n: int, upto: Callable[[int], Outcome]) -> Measure:
    def measure() -> dict[str, float]:
        three = upto(2).seconds
        total = upto(n - 1).seconds
        return {
            "chain_total": total,
            "chain_step": total / n,
            "chain_marginal": (total - three) / (n - 3),
        }

    return measure


def fanout_dagtop(b: Bench) -> Measure:
    n = b.sizes.fanout
    project = b.dagtop_project("fanout", gen.dagtop_fanout(n))
    b.dagtop_ready(project)
    cmd = b.dagtop(project, "materialize", "*")
    return _per_step(
        n, lambda: run(cmd, timeout=60 + 5 * n, cwd=project, helpers=HELPERS["dagtop"]), "fanout"
    )


def fanout_dagster(b: Bench) -> Measure:
    n = b.sizes.fanout
    folder, where = b.dagster_module("fanout", gen.dagster_fanout(n))
    cmd = b.dagster_cli("asset", "materialize", *where, "--select", "*")
    return _per_step(
        n,
        lambda: run(cmd, timeout=300 + 30 * n, env=b.dagster_env, cwd=folder,
                    helpers=HELPERS["dagster"]),
        "fanout",
    )  # fmt: skip


def fanout_luigi(b: Bench) -> Measure:
    n = b.sizes.fanout
    folder = b.luigi_module("fanout", gen.luigi_fanout(n))
    args = ["All", "--workers", str(b.cores)]
    return _per_step(
        n, lambda: b.luigi_run(folder, "fanout", args, timeout=60 + 5 * n, memory=True), "fanout"
    )


def _per_step(n: int, once: Callable[[], Outcome], key: str) -> Measure:
    def measure() -> dict[str, float]:
        out = once()
        values = {f"{key}_total": out.seconds, f"{key}_step": out.seconds / n}
        if out.peak_rss:
            values["memory"] = out.peak_rss / 2**20
        return values

    return measure


def _day(n: int) -> str:
    """The daily partition key `n` days after the first."""
    return (date.fromisoformat(gen.PARTITION_START) + timedelta(days=n)).isoformat()


# dagtop and Dagster are measured both ways: the whole range in one run (an asset with
# BackfillPolicy.single_run()) and a run per day. Luigi's one number fills both rows.


def backfill_dagtop(b: Bench) -> Measure:
    n = b.sizes.partitions
    project = b.dagtop_project("backfill", gen.dagtop_partitioned())
    b.dagtop_ready(project)
    days = ["--from", _day(0), "--to", _day(n - 1)]
    per_day = b.dagtop(project, "backfill", "daily", *days)
    one_run = b.dagtop(project, "backfill", "daily_range", *days)

    def measure() -> dict[str, float]:
        return {
            "backfill": run(one_run, timeout=60 + 10 * n, cwd=project).seconds,
            "backfill_runs": run(per_day, timeout=60 + 10 * n, cwd=project).seconds,
        }

    return measure


def backfill_dagster(b: Bench) -> Measure:
    n = b.sizes.partitions
    folder, where = b.dagster_module("backfill", gen.dagster_partitioned())
    materialize = b.dagster_cli("asset", "materialize", *where)
    whole = [*materialize, "--select", "daily", "--partition-range", f"{_day(0)}...{_day(n - 1)}"]

    def one(key: str) -> Outcome:
        cmd = [*materialize, "--select", "daily_each", "--partition", key]
        return run(cmd, timeout=600, env=b.dagster_env, cwd=folder)

    def measure() -> dict[str, float]:
        single = run(whole, timeout=600, env=b.dagster_env, cwd=folder).seconds
        start = time.perf_counter()
        with ThreadPoolExecutor(b.cores) as pool:  # as many runs at once as cores
            list(pool.map(one, [_day(i) for i in range(n)]))
        return {"backfill": single, "backfill_runs": time.perf_counter() - start}

    return measure


def backfill_luigi(b: Bench) -> Measure:
    n = b.sizes.partitions
    folder = b.luigi_module("backfill", gen.luigi_partitioned())
    args = [
        "RangeDaily", "--of", "Daily", "--start", _day(0), "--stop", _day(n),  # stop: exclusive
        "--days-back", "100000", "--task-limit", "100000", "--workers", str(b.cores),
    ]  # fmt: skip

    def measure() -> dict[str, float]:
        seconds = b.luigi_run(folder, "backfill", args, timeout=60 + 10 * n).seconds
        return {"backfill": seconds, "backfill_runs": seconds}

    return measure


def load_dagtop(b: Bench) -> Measure:
    s = b.sizes
    project = b.dagtop_project("many", gen.dagtop_many(s.groups, s.per_group))

    def measure() -> dict[str, float]:
        home = b.fresh("dagtop", "load-home")  # no manifest cache yet
        cmd = b.dagtop(project, "check", home=home)
        fresh = run(cmd, timeout=300, cwd=project).seconds
        cached = run(cmd, timeout=300, cwd=project).seconds
        return {"load_fresh": fresh, "load_cached": cached}

    return measure


def load_dagster(b: Bench) -> Measure:
    s = b.sizes
    folder, where = b.dagster_module("many", gen.dagster_many(s.groups, s.per_group))
    cmd = b.dagster_cli("definitions", "validate", *where)

    def measure() -> dict[str, float]:
        seconds = run(cmd, timeout=600, env=b.dagster_env, cwd=folder).seconds
        return {"load_fresh": seconds, "load_cached": seconds}  # Dagster has no cache

    return measure


def floors_dagtop(b: Bench) -> Measure:
    return lambda: {"spawn": spawn_floor(20), "fork": fork_floor(50)}


@dataclass(frozen=True)
class Case:
    name: str
    tools: dict[str, Prepare]
    repeat: int | None = None  # fixed count of measurements (default: --repeat)


CASES = [
    Case("floors", {"dagtop": floors_dagtop}),
    Case("import", {"dagtop": import_dagtop, "dagster": import_dagster, "luigi": import_luigi},
         repeat=5),  # fmt: skip
    Case("cold3", {"dagtop": cold3_dagtop, "dagster": cold3_dagster, "luigi": cold3_luigi}),
    Case("daemon3", {"dagtop": daemon3_dagtop}),
    Case("chain", {"dagtop": chain_dagtop, "dagster": chain_dagster, "luigi": chain_luigi}),
    Case("fanout", {"dagtop": fanout_dagtop, "dagster": fanout_dagster, "luigi": fanout_luigi}),
    Case("backfill",
         {"dagtop": backfill_dagtop, "dagster": backfill_dagster, "luigi": backfill_luigi}),
    Case("load", {"dagtop": load_dagtop, "dagster": load_dagster}),
]  # fmt: skip


def run_case(b: Bench, case: Case, tools: list[str], repeat: int) -> dict[tuple[str, str], float]:
    """Prepare each tool, then measure them alternately; returns (metric, tool) -> median."""
    measures: dict[str, Measure] = {}
    samples: dict[tuple[str, str], list[float]] = {}
    b.stack = contextlib.ExitStack()
    with b.stack:
        for tool in tools:
            if tool not in case.tools:
                continue
            try:
                measures[tool] = case.tools[tool](b)
            except Exception as exc:  # a broken case must not end the run
                print(f"  {case.name} · {TITLES[tool]}: set-up failed: {_why(exc)}", flush=True)
        for i in range(case.repeat or repeat):
            for tool, measure in list(measures.items()):
                try:
                    values = measure()
                except Exception as exc:  # a broken case must not end the run
                    print(f"  {case.name} · {TITLES[tool]}: failed: {_why(exc)}", flush=True)
                    del measures[tool]  # a broken set-up would fail every time
                    continue
                b.loads.append(os.getloadavg()[0])
                for key, value in values.items():
                    samples.setdefault((key, tool), []).append(value)
                shown = "  ".join(f"{k} {_fmt(k, v)}" for k, v in values.items())
                print(f"  {case.name} · {TITLES[tool]:<7} #{i + 1}  {shown}", flush=True)
    return {k: statistics.median(v) for k, v in samples.items()}


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


# --- the table and the goals ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str  # "s", "ms" or "MB"


def rows(s: Sizes) -> list[Row]:
    return [
        Row("import", "`import` of the tool (median of 5)", "ms"),
        Row("cold3", "3-asset chain, cold CLI start to exit", "s"),
        Row("daemon3", "3-asset chain, cold CLI, `dagtop daemon` running", "s"),
        Row("chain_total", f"{s.chain}-step chain, total", "s"),
        Row("chain_step", f"{s.chain}-step chain, per step (total / {s.chain})", "ms"),
        Row("chain_marginal", f"{s.chain}-step chain, per step beyond the first 3", "ms"),
        Row("fanout_total", f"{s.fanout}-step fan-out, total", "s"),
        Row("fanout_step", f"{s.fanout}-step fan-out, per step (total / {s.fanout})", "ms"),
        Row("memory", f"peak orchestrator RSS, {s.fanout}-step fan-out", "MB"),
        Row("backfill", f"{s.partitions}-day backfill in one run (`single_run()` policy)", "s"),
        Row("backfill_runs", f"{s.partitions}-day backfill, a run per day", "s"),
        Row("load_fresh", f"load {s.assets:,} asset definitions, no cache", "s"),
        Row("load_cached", f"load {s.assets:,} asset definitions, cached", "s"),
        Row("spawn", "floor: spawn `python -c pass`", "ms"),
        Row("fork", "floor: fork of a warm process", "ms"),
    ]


def _fmt(key: str, value: float | None, unit: str | None = None) -> str:
    """Seconds as ms or s, whatever the row's unit; megabytes as MB."""
    if value is None:
        return "n/a"
    unit = unit or next((r.unit for r in rows(Sizes()) if r.key == key), "s")
    if unit == "MB":
        return f"{value:,.0f} MB"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.2f} s"


def table(results: dict[tuple[str, str], float], s: Sizes, tools: list[str]) -> list[list[str]]:
    with_ratio = "dagtop" in tools and "dagster" in tools
    out = [["case", *(TITLES[t] for t in tools), *(["Dagster / dagtop"] if with_ratio else [])]]
    for row in rows(s):
        cells = [results.get((row.key, t)) for t in tools]
        if all(c is None for c in cells):
            continue
        ours, theirs = results.get((row.key, "dagtop")), results.get((row.key, "dagster"))
        ratio = f"{theirs / ours:,.1f}x" if ours and theirs and row.key not in FLOORS else ""
        cells_text = [_fmt(row.key, c, row.unit) for c in cells]
        out.append([row.label, *cells_text, *([ratio] if with_ratio else [])])
    return out


FLOORS = ("spawn", "fork")


@dataclass(frozen=True)
class Goal:
    label: str
    value: Callable[[dict[tuple[str, str], float]], float | None]
    passes: Callable[[float], bool]
    shown: Callable[[float], str]
    absolute: bool = False  # a time limit in seconds (also shown in spawn floors)


def _ratio(key: str) -> Callable[[dict[tuple[str, str], float]], float | None]:
    def value(r: dict[tuple[str, str], float]) -> float | None:
        ours, theirs = r.get((key, "dagtop")), r.get((key, "dagster"))
        return theirs / ours if ours and theirs else None

    return value


def _vs_spawn(key: str) -> Callable[[dict[tuple[str, str], float]], float | None]:
    def value(r: dict[tuple[str, str], float]) -> float | None:
        ours, spawn = r.get((key, "dagtop")), r.get(("spawn", "dagtop"))
        return ours / spawn if ours and spawn else None

    return value


def _ours(key: str) -> Callable[[dict[tuple[str, str], float]], float | None]:
    return lambda r: r.get((key, "dagtop"))


def goals(s: Sizes) -> list[Goal]:
    def times(x: float) -> str:
        return f"{x:,.1f}x"

    def at_least(n: float) -> Callable[[float], bool]:
        return lambda x: x >= n

    def below(n: float) -> Callable[[float], bool]:
        return lambda x: x < n

    def secs(x: float) -> str:
        return _fmt("", x, "s")

    out = [
        Goal(f"per step, {s.chain}-step chain: ≥ 40x below Dagster's multiprocess executor",
             _ratio("chain_step"), at_least(40), times),
        Goal(f"per step, {s.fanout}-step fan-out: ≥ 40x below Dagster's multiprocess executor",
             _ratio("fanout_step"), at_least(40), times),
        Goal(f"per step, {s.chain}-step chain: within 3x of spawning `python -c pass`",
             _vs_spawn("chain_step"), lambda x: x <= 3, times),
        Goal(f"per step, {s.fanout}-step fan-out: within 3x of spawning `python -c pass`",
             _vs_spawn("fanout_step"), lambda x: x <= 3, times),
    ]  # fmt: skip
    for key, what in [
        ("cold3", "3-asset chain, cold CLI"),
        ("backfill", f"{s.partitions}-day backfill in one run vs. Dagster's"),
        ("backfill_runs", f"{s.partitions}-day backfill, a run per day vs. Dagster's"),
        ("load_fresh", f"load {s.assets:,} definitions, no cache"),
        ("load_cached", f"load {s.assets:,} definitions, cached"),
        ("import", "`import` of the tool"),
    ]:
        out.append(Goal(f"{what}: ≥ 10x faster than Dagster", _ratio(key), at_least(10), times))
    out += [
        Goal("cold 3-step `dagtop materialize` < 0.5 s",
             _ours("cold3"), below(0.5), secs, absolute=True),
        Goal("same with a daemon running < 0.2 s",
             _ours("daemon3"), below(0.2), secs, absolute=True),
        Goal(f"{s.assets:,} asset definitions loaded < 1 s, no cache",
             _ours("load_fresh"), below(1.0), secs, absolute=True),
        Goal(f"{s.assets:,} asset definitions loaded < 1 s, cached",
             _ours("load_cached"), below(1.0), secs, absolute=True),
        Goal(f"orchestrator memory < 150 MB during the {s.fanout}-step run",
             _ours("memory"), below(150), lambda x: f"{x:,.0f} MB"),
    ]  # fmt: skip
    return out


def goal_lines(results: dict[tuple[str, str], float], s: Sizes) -> list[tuple[str, str, str]]:
    """(mark, goal, measured) for each goal measured in this run; mark is ✓ or ✗.

    A time limit is also shown in multiples of this run's spawn floor: on a busy machine
    that reads better than seconds (the floor is ~11-17 ms when the machine is quiet).
    """
    spawn = results.get(("spawn", "dagtop"))
    out = []
    for g in goals(s):
        value = g.value(results)
        if value is None:
            continue
        shown = g.shown(value)
        if g.absolute and spawn:
            shown += f" (= {value / spawn:,.0f}x this run's spawn floor)"
        out.append(("✓" if g.passes(value) else "✗", g.label, shown))
    return out


def machine(versions: dict[str, str], loads: list[float]) -> str:
    mem = psutil.virtual_memory().total / 2**30
    tools = ", ".join(f"{TITLES[t]} {v}" for t, v in versions.items())
    load = f"{min(loads):.1f} to {max(loads):.1f}" if loads else "n/a"
    return (
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"load average (1 min) {load} during the measurements, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; {tools}"
    )


def print_text(grid: list[list[str]], marks: list[tuple[str, str, str]], header: str) -> None:
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    print()
    print(header)
    for n, r in enumerate(grid):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))))  # fmt: skip
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("\nGoals:" if marks else "\nGoals: none measured in this run")
    for mark, label, shown in marks:
        print(f"  {mark} {label}: {shown}")


def markdown(grid: list[list[str]], marks: list[tuple[str, str, str]], header: str) -> str:
    lines = [header, ""]
    lines.append("| " + " | ".join(grid[0]) + " |")
    lines.append("|---|" + "---:|" * (len(grid[0]) - 1))
    lines += ["| " + " | ".join(r) + " |" for r in grid[1:]]
    lines += ["", "Goals (ratios from this one run):", ""]
    lines += [f"- {mark} {label}: {shown}" for mark, label, shown in marks]
    return "\n".join(lines)


def write_docs(block: str) -> None:
    write_section("compare", "dagtop, Dagster and Luigi", block)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    # Every tool runs as installed, with its bytecode cache: pip precompiled Dagster's and
    # Luigi's, and dagtop's (editable) source writes its own on first import. A shell that
    # forbids writing bytecode would make only dagtop recompile itself on every command.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="measurements per tool and case")
    parser.add_argument("--quick", action="store_true", help="small pipelines, one repeat")
    parser.add_argument(
        "--only",
        help="comma-separated cases: " + ",".join(c.name for c in CASES) + " (fanout: with memory)",
    )
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated tools")
    add_write_option(parser)
    parser.add_argument("--json", type=Path, help="also save the raw medians to this file")
    args = parser.parse_args(argv)

    tools = [t.strip().lower() for t in args.tools.split(",") if t.strip()]
    only = [c.strip() for c in args.only.split(",")] if args.only else [c.name for c in CASES]
    unknown = [t for t in tools if t not in TOOLS] + [
        c for c in only if c not in {case.name for case in CASES}
    ]
    if unknown:
        parser.error(f"unknown tool or case: {', '.join(unknown)}")
    if not Path(sys.executable).with_name("dagtop").exists():
        parser.error("run it with dagtop's own interpreter: .venv/bin/python -m ...")
    sizes = QUICK if args.quick else Sizes()
    repeat = 1 if args.quick else max(1, args.repeat)

    versions = {"dagtop": importlib.metadata.version("dagtop")} if "dagtop" in tools else {}
    for tool in tools:
        if tool != "dagtop":
            version = ensure_env(tool)
            if version is not None:
                versions[tool] = version
    tools = [t for t in TOOLS if t in versions]
    print("versions: " + ", ".join(f"{TITLES[t]} {v}" for t, v in versions.items()), flush=True)

    root = Path(tempfile.mkdtemp(prefix="dagtop-compare-"))
    results: dict[tuple[str, str], float] = {}
    bench = Bench(root, sizes, versions)
    try:
        for case in CASES:
            if case.name in only:
                print(f"\n{case.name}", flush=True)
                results.update(run_case(bench, case, tools, repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    header = (
        f"{machine(versions, bench.loads)}. Median of {repeat} alternating runs "
        f"(imports: of 5){'; --quick sizes' if args.quick else ''}."
    )
    grid = table(results, sizes, tools)
    marks = goal_lines(results, sizes)
    print_text(grid, marks, header)
    if args.json:
        args.json.write_text(
            json.dumps({f"{k}/{t}": v for (k, t), v in sorted(results.items())}, indent=2)
        )
    full = not args.quick and not args.only and tools == list(TOOLS)
    if args.write if args.write is not None else full:
        write_docs(markdown(grid, marks, header))
    elif args.write is None:
        print("\n(docs/benchmarks.md not written: not a full run; --write to force)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
