"""The history half of the scale benchmark: reads over histories of 10,000 and 100,000 runs,
the UI on them, and a 1 GiB log through `dagtop logs`.

    python -m tests.benchmarks._scale_history [--sizes 10000,100000] [--quick]

For each size a project (an hourly two-asset chain over a year, a report reading every hour,
30 feature assets, a task pipeline) gets a history built by `_history_data.build_history`
(bulk inserts into a real database built by dagtop's schema), then, in this process, on a
fresh `Client` (nothing cached but the manifest, as any earlier `dagtop` command leaves it):

- the read commands as the CLI calls them: `runs`, `partitions` (of the chain's 8,760 keys, and
  of an asset never materialized), `lineage --partition` both ways, `list` (`describe()`), the
  home screen's `node_statuses()`, `logs` (a run found by an id prefix);
- the UI headless (Textual's `run_test`): the home screen's first full frame, and the partition
  matrix of the chain: its first full states, then what its polls cost while it stays open;
- once, a 1 GiB log through a real `dagtop logs` process against `cat`: time and peak RSS.

Each case is timed several times (the median is kept). `cases(sizes)` returns rows (name, size,
seconds, per-unit, notes) for the scale runner; run alone, this prints them with the ratio of
each case's per-unit cost between the smallest and the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.status import PartitionStatus
from tests.benchmarks import _history_data as history

SIZES = (10_000, 100_000)
REPEAT = 5
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Row:
    name: str
    size: int | str  # runs in the history (or the log's size)
    seconds: float
    per_unit: float  # seconds per unit (per key, per run listed, ...), or the same as seconds
    unit: str  # what per_unit is per
    notes: str = ""


def timed(fn: Callable[[], Any], repeat: int = REPEAT) -> tuple[float, Any]:
    """The median wall time of `fn` over `repeat` calls (after one call to warm up)."""
    result = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def read_cases(client: Any, h: history.History, repeat: int) -> list[Row]:
    rows: list[Row] = []
    size = h.runs

    def add(name: str, fn: Callable[[], Any], units: Callable[[Any], int] | None = None,
            unit: str = "read", notes: Callable[[Any], str] = lambda _: "") -> None:  # fmt: skip
        seconds, result = timed(fn, repeat)
        n = units(result) if units is not None else 1
        rows.append(Row(name, size, seconds, seconds / max(1, n), unit, notes(result)))

    add("runs (newest 20)", lambda: client.runs(20), len, "run shown")
    add(
        "partitions clean",
        lambda: client.partitions("clean"),
        len,
        "key",
        lambda states: (
            f"{sum(s.status == PartitionStatus.MATERIALIZED for s in states):,} materialized"
        ),
    )
    add("partitions never (never materialized)", lambda: client.partitions("never"), len, "key")
    add("lineage clean --partition KEY", lambda: client.lineage("clean", h.a_key))
    add(
        "lineage raw --partition KEY --downstream",
        lambda: client.lineage("raw", h.a_key, downstream=True),
    )
    add("list (describe)", client.describe, lambda d: len(d["assets"]), "asset")
    add("home: node_statuses()", client.node_statuses, len, "asset")
    add("logs RUN (an id prefix)", lambda: client.logs(h.a_run[:6]), len, "log")
    return rows


async def _home_frame(client: Any) -> float:
    """Seconds from starting the app to the paint of its first full home frame: the newest
    runs listed, the first group's graph laid out and coloured, the tree's status glyphs."""
    import re

    from tests.benchmarks.ui import full_home_frame, home_of
    from tui.app import DagtopApp

    def missing(app: DagtopApp, text: str) -> str | None:
        home = home_of(app)
        newest = max(home.runs_table.runs.values(), key=lambda r: r.created_at)
        if newest.id[:6] not in text:
            return f"the newest run's id ({newest.id[:6]})"
        if not re.search(r"[✓✗⊘■◧] (raw|clean)", text):
            return "a status glyph in the pipelines tree"
        return None

    return await full_home_frame(client, 20, missing)


async def _matrix(client: Any, idle: float) -> tuple[float, float, int]:
    """Open the partition matrix of `clean`: seconds to its first full states, then the CPU
    the process spends per second while it stays open (polling), and how many polls ran."""
    import psutil

    from tests.benchmarks.ui import SIZE, until
    from tui.app import DagtopApp
    from tui.screens.partitions import PartitionsScreen

    app = DagtopApp(client, mode="offline")
    me = psutil.Process()
    async with app.run_test(size=SIZE):
        screen = PartitionsScreen("clean")
        started = time.perf_counter()
        await app.push_screen(screen)
        await until(lambda: screen.polls >= 1, "the matrix's first states", 120)
        first = time.perf_counter() - started
        polls = screen.polls
        cpu = me.cpu_times()
        await asyncio.sleep(idle)
        spent = me.cpu_times()
        busy = (spent.user - cpu.user) + (spent.system - cpu.system)
        return first, busy / idle, screen.polls - polls


def ui_cases(client: Any, h: history.History, idle: float) -> list[Row]:
    client.start_engine(kind="tui")
    try:
        frame = asyncio.run(_home_frame(client))
    finally:
        client.engine.stop(grace=1.0)
    first, share, polls = asyncio.run(_matrix(client, idle))
    return [
        Row("UI: home, first full frame", h.runs, frame, frame, "frame"),
        Row(
            f"UI: partition matrix of {h.keys:,} keys, first states",
            h.runs,
            first,
            first / h.keys,
            "key",
        ),
        Row(
            "UI: partition matrix open, CPU per second",
            h.runs,
            share,
            share,
            "second open",
            f"{polls} polls in {idle:g} s: {share:.1%} of a core",
        ),
    ]


class _PeakRss:
    """A child's peak RSS, sampled with psutil every few ms once it runs its own program (a
    forked child shows its parent's pages until it execs)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.mine = psutil.Process().cmdline()
        self.peak = 0

    def sample(self) -> None:
        import psutil

        try:
            if self.proc.cmdline() != self.mine:
                self.peak = max(self.peak, self.proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass


def _through_pipe(argv: list[str]) -> tuple[float, int]:
    """Run `argv` with its stdout read (and dropped) through a pipe, as `dagtop logs RUN | tail`
    does: (seconds, its peak RSS in bytes)."""
    import selectors

    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    peak = _PeakRss(proc.pid)
    fd = proc.stdout.fileno()
    last = 0.0
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            if time.perf_counter() - last > 0.005:
                peak.sample()
                last = time.perf_counter()
            if sel.select(0.005) and not os.read(fd, 1 << 20):
                break
    proc.wait()
    assert proc.returncode == 0, argv
    return time.perf_counter() - started, peak.peak


def log_cases(root: Path, size: int) -> list[Row]:
    """A `size`-byte log of realistic lines through `dagtop logs RUN STEP | (reader)` and
    through `cat`, with PYTHONUNBUFFERED=1; each twice, the faster kept (the first warms the
    page cache)."""
    from tests.benchmarks import _ui_data as data

    client = history.write_project(root / "log", end="2025-01-02-00:00")
    run_id, log = data.seed_finished_attempt(client, "feat_000")
    data.write_big_log(log, size)
    real = log.stat().st_size
    dagtop = str(Path(sys.executable).with_name("dagtop"))
    argv = [dagtop, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines),
            "logs", run_id, "feat_000"]  # fmt: skip
    env_unbuffered = os.environ.get("PYTHONUNBUFFERED")
    os.environ["PYTHONUNBUFFERED"] = "1"  # the harder case: no buffer to complete writes
    try:
        ours = min((_through_pipe(argv) for _ in range(2)), key=lambda r: r[0])
        cat = min((_through_pipe(["cat", str(log)]) for _ in range(2)), key=lambda r: r[0])
    finally:
        if env_unbuffered is None:
            os.environ.pop("PYTHONUNBUFFERED", None)
        else:
            os.environ["PYTHONUNBUFFERED"] = env_unbuffered
    label = f"{real / MiB:,.0f} MiB"
    return [
        Row(f"logs of a {label} log (dagtop logs into a pipe)", label, ours[0],
            ours[0] * GiB / real, "GiB",
            f"peak RSS {ours[1] / MiB:.0f} MiB; {ours[0] / cat[0]:.1f}x cat"),
        Row(f"cat of the same {label} log", label, cat[0], cat[0] * GiB / real, "GiB",
            f"peak RSS {cat[1] / MiB:.1f} MiB"),
    ]  # fmt: skip


def cases(
    sizes: Sequence[int] = SIZES,
    *,
    repeat: int = REPEAT,
    ui: bool = True,
    log_bytes: int = 1 << 30,
    idle: float = 6.0,
    say: Callable[[str], None] = print,
) -> list[Row]:
    """Every case at every history size; rows in the order they ran."""
    from engine.client import Client

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dagtop-scale-") as tmp:
        root = Path(tmp)
        for size in sizes:
            client = history.write_project(root / f"h{size}")
            h = history.build_history(client, size)
            say(f"history of {history.history_summary(h)}")
            client = Client(home=client.paths.home, pipelines=client.paths.pipelines)
            rows += read_cases(client, h, repeat)
            if ui:
                rows += ui_cases(client, h, idle)
            client.db.dispose()
        if log_bytes:
            rows += log_cases(root, log_bytes)
    return rows


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def table(rows: list[Row]) -> str:
    """A Markdown table: each case at each size, and its per-unit ratio largest/smallest."""
    by_case: dict[str, list[Row]] = {}
    for row in rows:
        by_case.setdefault(row.name, []).append(row)
    sizes = sorted({r.size for r in rows if isinstance(r.size, int)})
    head = ["case", *(f"{s:,} runs" for s in sizes), "per unit", "ratio", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, found in by_case.items():
        at = {r.size: r for r in found}
        cells = [fmt_seconds(at[s].seconds) if s in at else "" for s in sizes]
        if not any(isinstance(r.size, int) for r in found):
            cells = [fmt_seconds(found[0].seconds)] + [""] * (len(sizes) - 1)
        first, last = found[0], found[-1]
        per = "; ".join(f"{fmt_seconds(r.per_unit)}/{r.unit}" for r in found)
        ratio = f"{last.per_unit / first.per_unit:.2f}x" if len(found) > 1 else ""
        if name.startswith("UI: partition matrix open"):
            per = "; ".join(f"{r.seconds:.1%} of a core" for r in found)
            cells = [f"{at[s].seconds:.1%}" if s in at else "" for s in sizes]
        notes = "; ".join(r.notes for r in found if r.notes)
        lines.append("| " + " | ".join([name, *cells, per, ratio, notes]) + " |")
    return "\n".join(lines)


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    return (
        f"{time.strftime('%Y-%m-%d')}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs ({cpu}), {psutil.virtual_memory().total / (1 << 30):.0f} GiB, "
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--quick", action="store_true", help="small sizes, no UI, a small log")
    parser.add_argument("--no-ui", action="store_true")
    parser.add_argument("--log-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [1_000, 10_000]
    rows = cases(
        sizes,
        repeat=3 if args.quick else REPEAT,
        ui=not (args.quick or args.no_ui),
        log_bytes=(64 if args.quick else args.log_mib) * MiB,
    )
    print(machine())
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
