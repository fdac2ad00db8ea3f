"""How dagtop's costs grow with the work: the cost of one unit (a backfilled key, ...) at each
size, and its ratio across sizes, measured in one run.

    python -m tests.benchmarks.scale [--only GROUP,...] [--sizes N,N,...] [--repeat N]
                                     [--write | --no-write]

On demand, never in the test suite. Run it from the repository root with dagtop's own
interpreter (`.venv/bin/python`). The cases come from small modules (`MODULES`), one per group
of cases; each module has:

- `GROUP`: the name `--only` selects it by;
- `SIZES`: its default sizes (`--sizes` replaces them for every group selected);
- `floor(root) -> Floor`: the cost its units are compared with, measured in the same run (this
  module measures it before and after the group's cases and keeps the median);
- `cases(sizes) -> list[Case]`: each `Case.measure(root)` does its untimed set-up in `root` (a
  fresh folder), then measures and returns a `Result`.

This module only collects, runs and prints: one table row per case and size, with the cost
per unit, its ratio to the same case at the group's smallest size, its ratio to the group's
floor, and the orchestrator's peak memory. With `--repeat N` each case is measured N times (at
most its `max_repeat`), in rounds through all the group's cases so that a burst of load from
other work on these shared machines hits every size alike, and the median is kept. A full
run (every group at its default sizes) rewrites the section of docs/benchmarks.md between
`<!-- scale:start -->` and `<!-- scale:end -->`; `--write` / `--no-write` override that.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.benchmarks._docs import add_write_option, write_section

MODULES = ("tests.benchmarks._scale_backfill",)


@dataclass(frozen=True)
class Floor:
    """A cost measured in the same run that a group's units are compared with."""

    label: str
    seconds: float
    cpu_seconds: float | None = None  # the orchestrator's own CPU time, when measured


@dataclass
class Result:
    """One measurement of a case at one size."""

    seconds: float  # wall time of the measured work
    peak_rss: int = 0  # bytes: the orchestrator's peak (0: not sampled)
    cpu_seconds: float | None = None  # the orchestrator's own CPU time (None: not sampled)
    notes: dict[str, str] = field(default_factory=dict)  # anything else worth printing


@dataclass(frozen=True)
class Case:
    group: str
    label: str  # the same label at every size: one series of the table
    size: int
    unit: str  # what `size` counts, singular ("key", "run")
    measure: Callable[[Path], Result]
    max_repeat: int | None = None  # measurements at most, whatever --repeat says


@dataclass
class Row:
    case: Case
    result: Result | None
    error: str = ""

    @property
    def per_unit(self) -> float | None:
        return None if self.result is None else self.result.seconds / self.case.size

    @property
    def cpu_per_unit(self) -> float | None:
        if self.result is None or self.result.cpu_seconds is None:
            return None
        return self.result.cpu_seconds / self.case.size


class Usage(threading.Thread):
    """Samples a process and its helper children (never its steps, which are their children):
    the peak of their summed RSS, and the CPU time they used while sampled (a process first
    seen after the start counts from zero, as does the root with `from_zero`)."""

    def __init__(self, pid: int, helpers: tuple[str, ...], from_zero: bool, every: float = 0.05):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.helpers = helpers
        self.every = every
        self.peak = 0
        self.done = threading.Event()
        self._known: dict[tuple[int, float], bool] = {}  # (pid, create time) -> is a helper
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._primed = False
        self._from_zero = from_zero
        self.sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(self._last[k] - self._first.get(k, 0.0) for k in self._last)

    def _is_helper(self, child: psutil.Process) -> bool:
        key = (child.pid, child.create_time())
        if key not in self._known:
            cmdline = " ".join(child.cmdline())
            self._known[key] = any(h in cmdline for h in self.helpers)
        return self._known[key]

    def sample(self) -> None:
        try:
            procs = [self.root] + [c for c in self.root.children() if self._is_helper(c)]
        except psutil.Error:
            return
        rss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            cpu = times.user + times.system
            if not self._primed and not (proc is self.root and self._from_zero):
                self._first[key] = cpu
            self._last[key] = cpu
        self._primed = True
        self.peak = max(self.peak, rss)

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self.done.set()
        self.join()


def load_modules(names: Sequence[str] = MODULES) -> dict[str, Any]:
    """Every case module, by its GROUP."""
    out: dict[str, Any] = {}
    for name in names:
        module = importlib.import_module(name)
        out[module.GROUP] = module
    return out


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds >= 100:
        return f"{seconds:,.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def _fmt_rss(value: int) -> str:
    return f"{value / 1e6:.0f} MB" if value else "–"


def table(rows: list[Row], floors: dict[str, Floor]) -> list[list[str]]:
    """Header first; per-unit ratios against the same case at its smallest measured size."""
    grid = [["case", "size", "total", "per unit", "× smallest", "× floor", "CPU per unit",
             "× smallest", "× floor", "peak RSS"]]  # fmt: skip
    smallest: dict[tuple[str, str], float] = {}
    smallest_cpu: dict[tuple[str, str], float] = {}
    for row in sorted(rows, key=lambda r: r.case.size):
        key = (row.case.group, row.case.label)
        if row.per_unit is not None and key not in smallest:
            smallest[key] = row.per_unit
        if row.cpu_per_unit is not None and key not in smallest_cpu:
            smallest_cpu[key] = row.cpu_per_unit
    for row in rows:
        case, per, cpu = row.case, row.per_unit, row.cpu_per_unit
        base = smallest.get((case.group, case.label))
        base_cpu = smallest_cpu.get((case.group, case.label))
        floor = floors.get(case.group)
        grid.append(
            [
                case.label,
                f"{case.size:,} {case.unit}s",
                _fmt_time(None if row.result is None else row.result.seconds)
                if not row.error
                else f"failed: {row.error}",
                "–" if per is None else f"{_fmt_time(per)}/{case.unit}",
                "–" if per is None or not base else f"{per / base:.2f}x",
                "–" if per is None or floor is None else f"{per / floor.seconds:.2f}x",
                "–" if cpu is None else f"{_fmt_time(cpu)}/{case.unit}",
                "–" if cpu is None or not base_cpu else f"{cpu / base_cpu:.2f}x",
                "–"
                if cpu is None or floor is None or not floor.cpu_seconds
                else f"{cpu / floor.cpu_seconds:.2f}x",
                _fmt_rss(row.result.peak_rss if row.result else 0),
            ]
        )
    return grid


def machine(loads: list[float]) -> str:
    mem = psutil.virtual_memory().total / 2**30
    load = f"{min(loads):.1f} to {max(loads):.1f}" if loads else "n/a"
    return (
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"load average (1 min) {load} during the measurements, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def print_text(grid: list[list[str]], header: str, notes: list[str]) -> None:
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    print()
    print(header)
    for n, r in enumerate(grid):
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for note in notes:
        print(note)


def markdown(grid: list[list[str]], header: str, notes: list[str]) -> str:
    lines = [header, ""]
    lines.append("| " + " | ".join(grid[0]) + " |")
    lines.append("|---|" + "---:|" * (len(grid[0]) - 1))
    lines += ["| " + " | ".join(r) + " |" for r in grid[1:]]
    if notes:
        lines += [""] + [f"- {note.strip()}" for note in notes]
    return "\n".join(lines)


def write_docs(block: str) -> None:
    write_section("scale", "Scale", block)


def _measure_floor(module: Any, root: Path) -> Floor:
    folder = Path(tempfile.mkdtemp(prefix="floor-", dir=root))
    try:
        floor: Floor = module.floor(folder)
        return floor
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(case: Case, root: Path, group: str) -> Result | str:
    """One measurement of `case` in a fresh folder; the reason, if it failed."""
    folder = Path(tempfile.mkdtemp(prefix=f"{group}-", dir=root))
    print(f"  {case.label} · {case.size:,} {case.unit}s ...", end="", flush=True)
    start = time.perf_counter()
    try:
        result = case.measure(folder)
    except Exception as exc:  # a broken case must not end the run
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f" failed: {why}", flush=True)
        return why
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per = result.seconds / case.size
    cpu = "" if result.cpu_seconds is None else f", CPU {_fmt_time(result.cpu_seconds / case.size)}"
    print(f" {_fmt_time(per)}/{case.unit}{cpu}, peak RSS {_fmt_rss(result.peak_rss)}"
          + "".join(f", {k} {v}" for k, v in result.notes.items())
          + f" ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as compare.py: every tool with its cache
    modules = load_modules()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", help="comma-separated groups: " + ",".join(modules))
    parser.add_argument("--sizes", help="comma-separated sizes, for every group selected")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measurements per case (median; default 1)"
    )
    add_write_option(parser)
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",")] if args.only else list(modules)
    unknown = [g for g in groups if g not in modules]
    if unknown:
        parser.error(f"unknown group: {', '.join(unknown)} (known: {', '.join(modules)})")
    sizes: list[int] | None = None
    if args.sizes:
        try:
            sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
        except ValueError:
            parser.error(f"--sizes takes whole numbers: {args.sizes!r}")
        if not sizes or min(sizes) < 1:
            parser.error("--sizes takes whole numbers of at least 1")
    if not Path(sys.executable).with_name("dagtop").exists():
        parser.error("run it with dagtop's own interpreter: .venv/bin/python -m ...")

    root = Path(tempfile.mkdtemp(prefix="dagtop-scale-"))
    rows: list[Row] = []
    floors: dict[str, Floor] = {}
    loads: list[float] = []
    try:
        for group in groups:
            module = modules[group]
            print(f"\n{group}", flush=True)
            before = _measure_floor(module, root)
            print(f"  floor: {before.label} = {_fmt_time(before.seconds)}", flush=True)
            cases = module.cases(sizes or list(module.SIZES))
            results: dict[int, list[Result]] = {i: [] for i in range(len(cases))}
            errors: dict[int, str] = {}
            for round_ in range(max(1, args.repeat)):
                for i, case in enumerate(cases):
                    if i in errors or round_ >= (case.max_repeat or args.repeat):
                        continue
                    result = _measure(case, root, group)
                    loads.append(os.getloadavg()[0])
                    if isinstance(result, str):
                        errors[i] = result
                    else:
                        results[i].append(result)
            for i, case in enumerate(cases):
                if i in errors:
                    rows.append(Row(case, None, errors[i]))
                    continue
                seconds = statistics.median(r.seconds for r in results[i])
                cpus = [r.cpu_seconds for r in results[i] if r.cpu_seconds is not None]
                cpu = statistics.median(cpus) if cpus else None
                peak = max(r.peak_rss for r in results[i])
                said = results[i][-1].notes
                if len(results[i]) > 1:
                    said = {**said, "runs": str(len(results[i]))}
                rows.append(Row(case, Result(seconds, peak, cpu, said)))
            after = _measure_floor(module, root)
            print(f"  floor: {after.label} = {_fmt_time(after.seconds)}", flush=True)
            cpu_floors = [f.cpu_seconds for f in (before, after) if f.cpu_seconds is not None]
            floors[group] = Floor(
                before.label,
                statistics.median([before.seconds, after.seconds]),
                statistics.median(cpu_floors) if cpu_floors else None,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    notes = [
        f"  floor of {group}: {floor.label} = {_fmt_time(floor.seconds)}"
        + ("" if floor.cpu_seconds is None else f", CPU {_fmt_time(floor.cpu_seconds)}")
        + " (median of before and after its cases)"
        for group, floor in floors.items()
    ]
    repeat = max(1, args.repeat)
    header = f"{machine(loads)}." + (
        f" Median of {repeat} measurements (alternating rounds) where a case allows it."
        if repeat > 1
        else ""
    )
    grid = table(rows, floors)
    print_text(grid, header, notes)
    full = not args.only and not args.sizes
    if args.write if args.write is not None else full:
        write_docs(markdown(grid, header, notes))
    elif args.write is None:
        print("\n(docs/benchmarks.md not written: not a full run; --write to force)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
