"""How fast the UI feels: the real app, driven with Textual's Pilot, on a real engine home.

    python -m tests.benchmarks.ui [--quick] [--write | --no-write]

Four cases, each against a real embedded engine and a real SQLite home in a temp folder:

0. **`dagtop` to its first full frame**, end to end: a real `dagtop` process started in a
   pseudo-terminal of 160×48 on the home of case 1, timed until it has written a frame with
   the newest run in the runs table, the first graph node and a status glyph in the tree
   (imports, engine start and first reads included), beside a bare `python -c pass` measured
   in the same run (the goal is 1 s on a quiet machine, 1.5 s under load).
1. **Home, first full frame** with a history of 10,000 runs over 200 assets (seeded through
   the engine's planner and repository). "Full frame" is the first paint after all of these
   hold: the runs table shows its first page, the first group's graph is laid out with its
   nodes coloured by status, and the pipelines tree has its status glyphs.
2. **DAG of 300 nodes**: from moving the tree's cursor to the group to the first paint with
   every node of the new layout (grandalf in a thread, then drawing). Again with the layout
   cached, and the layout alone.
3. **A 1 GB log** in the run screen: from opening the run to the paint that shows the file's
   last line, then to the full newline index; the process RSS before and after.
4. **Live tail** of a real step (through the real executor) printing 20,000 lines a second:
   how fast the bottom line advances on screen, how far it lags behind the writer, and the
   latency of a key press (`tab`, which moves the focus) until its effect is painted.

Times are wall clock; paints are Textual's own screen refreshes (headless, so the last step,
writing escape codes to a terminal, is not counted). A full run (not --quick) rewrites the
section of docs/benchmarks.md between `<!-- ui:start -->` and `<!-- ui:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from textual import events
from textual.widgets.data_table import ColumnKey

from engine.client import Client, RunRequest
from tests.benchmarks import _ui_data as data
from tests.benchmarks._docs import add_write_option, write_section
from tui.app import DagtopApp
from tui.screens.home import HomeScreen, graph_nodes
from tui.screens.run import RunScreen
from tui.widgets.dag import layout_dag
from tui.widgets.log_view import LogView
from tui.widgets.pipelines_tree import NodeRef
from tui.widgets.runs_table import PAGE

REPO = Path(__file__).resolve().parents[2]
SECTION = "## UI speed — `python -m tests.benchmarks.ui`"
SIZE = (160, 48)  # the terminal the wireframes are drawn for
POLL = 0.005  # seconds between looks at the app's state while waiting for something
MiB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    runs: int = 10_000
    assets: int = 200
    files: int = 4  # the assets are spread over this many files, one group each
    dag_nodes: int = 300
    log_bytes: int = 1 << 30
    tail_rate: int = 20_000  # lines a second
    tail_seconds: float = 6.0
    presses: int = 20
    frames: int = 3  # first frames measured (each a fresh app on the same engine)


QUICK = Sizes(
    runs=1_000, assets=40, dag_nodes=60, log_bytes=64 * MiB, tail_rate=5_000, tail_seconds=2.0,
    presses=5, frames=1,
)  # fmt: skip
TINY = Sizes(
    runs=60, assets=12, files=2, dag_nodes=45, log_bytes=12 * MiB, tail_rate=2_000,
    tail_seconds=1.0, presses=3, frames=1,
)  # fmt: skip
"""Just enough to go through every code path (the test suite runs it)."""


@dataclass
class Row:
    case: str
    value: str
    goal: str = ""
    ok: bool | None = None  # None: no goal, a figure to read


class BenchError(Exception):
    """The app did not reach a state the benchmark waits for."""


# --- watching the app -------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until `predicate` holds, looking every POLL seconds and touching nothing (Pilot's
    own pause forces screen updates, which would change what is measured)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001, S112 - the screen may not be mounted yet
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL)


async def painted(app: DagtopApp) -> float:
    """Wait for the screen's next refresh (the paint of what is now true); returns its time.

    A refresh that comes while the app batches updates (a widget recomposing itself) runs its
    callbacks without painting: wait for one that does.
    """
    while True:
        await app.screen.wait_for_refresh()
        if not app._batch_count:
            return time.perf_counter()


async def painted_showing(app: DagtopApp, missing: Callable[[str], str | None]) -> float:
    """The time of the first paint from now after which the screen shows what `missing`
    looks for (it returns what is missing from the screen's text, or None)."""
    deadline = time.monotonic() + 30
    while True:
        at = await painted(app)
        text = screen_text(app)
        absent = missing(text)
        if absent is None:
            return at
        if time.monotonic() > deadline:
            raise BenchError(f"{absent} is not on the screen:\n{text}")


def screen_text(app: DagtopApp) -> str:
    """The current screen as plain text, as the compositor draws it."""
    with app._context():  # callable from a task started before the app (the first frame's)
        return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


class PeakRss(threading.Thread):
    """The process's highest RSS, sampled every 20 ms until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self.peak = max(self.peak, rss())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def press(app: DagtopApp, key: str) -> None:
    """Send a key the way a terminal's input thread does (what `Pilot.press` sends, without
    its waits for the app to go idle: while a log streams in, it never does)."""
    driver = app._driver
    assert driver is not None
    driver.send_message(events.Key(key, None))


async def press_and_wait(app: DagtopApp, key: str = "tab") -> float:
    """Press `key` (which moves the focus) and return the time until that is painted."""
    focused = app.focused
    started = time.perf_counter()
    press(app, key)
    await until(lambda: app.focused is not focused, f"the {key} key's effect", 10)
    return await painted(app) - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def project(root: Path, files: dict[str, str]) -> Client:
    (root / "pipelines").mkdir(parents=True)
    for name, source in files.items():
        (root / "pipelines" / name).write_text(source)
    client = Client(home=root / "home", pipelines=root / "pipelines")
    client.load()  # fills the manifest cache, as any earlier `dagtop` command would have
    return client


def home_of(app: DagtopApp) -> HomeScreen:
    screen = app.screen_stack[1] if len(app.screen_stack) > 1 else app.screen
    assert isinstance(screen, HomeScreen)
    return screen


# --- 1. the home screen -------------------------------------------------------------------------


async def bench_home(root: Path, sizes: Sizes) -> list[Row]:
    per_file = max(1, sizes.assets // sizes.files)
    files = {
        f"team_{k}.py": data.layered_dag(f"t{k}", per_file, f"team_{k}", seed=k, width=8)
        for k in range(sizes.files)
    }
    client = project(root / "home-screen", files)
    started = time.perf_counter()
    steps = data.seed_history(client, sizes.runs)
    seeded = time.perf_counter() - started
    print(f"  seeded {sizes.runs:,} runs ({steps:,} steps) in {seeded:.1f} s", flush=True)
    bare = statistics.median(bare_python() for _ in range(3))
    e2e = [process_first_frame(client, sizes) for _ in range(sizes.frames)]
    client = Client(home=client.paths.home, pipelines=client.paths.pipelines)  # nothing in memory
    started = time.perf_counter()
    client.start_engine(kind="tui")
    engine_start = time.perf_counter() - started
    frames: list[float] = []
    try:
        for _ in range(sizes.frames):
            frames.append(await first_frame(client, min(PAGE, sizes.runs)))
    finally:
        assert client.engine is not None
        client.engine.stop(grace=1.0)
    imports = import_cost()
    frame = statistics.median(frames)
    spread = f" (of {len(frames)}: {ms(min(frames))} to {ms(max(frames))})"
    spread = spread if len(frames) > 1 else ""
    whole = statistics.median(e2e)
    load = os.getloadavg()[0]
    goal = 1.0 if load < 1.0 else 1.5
    return [
        Row(
            f"`dagtop` process start to its first full frame (a pty; load {load:.1f})",
            f"{ms(whole)}, {whole / bare:.1f}× `python -c pass` ({ms(bare)})",
            f"< {goal:g} s",
            whole < goal,
        ),
        Row(
            f"home, first full frame: {sizes.runs:,} runs, {sizes.assets} assets",
            ms(frame) + spread,
            "< 1 s",
            frame < 1.0,
        ),
        Row("engine start before the UI opens (same home)", ms(engine_start)),
        Row("`import tui.app` in a fresh interpreter", ms(imports)),
        Row(
            "≈ `dagtop` to a full home frame (import + engine start + first frame)",
            ms(imports + engine_start + frame),
        ),
    ]


async def first_frame(client: Client, rows: int) -> float:
    def missing(app: DagtopApp, text: str) -> str | None:
        home = home_of(app)
        newest = max(home.runs_table.runs.values(), key=lambda r: r.created_at)
        first = home.dag.layout_data.layers[0][0]
        if newest.id[:6] not in text:
            return f"the newest run's id ({newest.id[:6]})"
        if first not in text:
            return f"the graph's first node ({first})"
        if not re.search(r"[✓✗⊘■◧] t\d_\d{3}", text):
            return "a status glyph in the pipelines tree"
        return None

    return await full_home_frame(client, rows, missing)


async def full_home_frame(
    client: Client, rows: int, missing: Callable[[DagtopApp, str], str | None]
) -> float:
    """Seconds from starting the app to the paint of its first full home frame: `rows` runs
    listed, the first group's graph laid out and coloured, the tree's status glyphs, and
    nothing that `missing(app, painted text)` names still missing."""
    app = DagtopApp(client, mode="embedded")
    done: list[float] = []

    def full() -> bool:
        home = app.screen
        return (
            isinstance(home, HomeScreen)
            and home.manifest is not None
            and home.runs_table.row_count >= rows
            # DataTable sizes its columns when the app is next idle: until then the first
            # page shows with every column cut to a few cells.
            and home.runs_table.columns[ColumnKey("id")].content_width >= 6
            and bool(home.dag.layout_data.boxes)
            and bool(home.dag.statuses)
            and bool(home.asset_statuses)
        )

    async def watch() -> None:
        await until(full, "the home screen's first full frame")
        done.append(await painted_showing(app, lambda text: missing(app, text)))

    started = time.perf_counter()
    watcher = asyncio.ensure_future(watch())
    async with app.run_test(size=SIZE):
        await watcher
    return done[0] - started


ESCAPES = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-_])")
"""Terminal escape sequences (CSI, OSC, two-byte), removed to read the text a frame writes."""


LAST_CPU: list[float] = []
"""The CPU seconds (its own and its children's) that the last `process_first_frame` used."""


def bare_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def process_first_frame(client: Client, sizes: Sizes, command: list[str] | None = None) -> float:
    """Seconds from starting a real `dagtop` process in a pseudo-terminal of SIZE to the
    moment it has written a frame with the newest run's id in the runs table, a status glyph
    in the pipelines tree and the first group's first node in the graph: what a user waits
    for, imports, engine start and first reads included."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    newest = client.runs(limit=1)[0].id[:6]
    first_node = layout_dag(graph_nodes(client.load(), "group", "team_0")).layers[0][0]
    glyphs = re.compile(r"[✓✗⊘■◧] t\d_\d{3}")
    dagtop = command or [str(Path(sys.executable).with_name("dagtop"))]  # another: to compare
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*dagtop, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines)],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen = ""
    try:
        while True:
            if time.perf_counter() - started > 60:
                raise BenchError(f"no full frame from `dagtop` in 60 s; it wrote: {seen[-400:]!r}")
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:
                raise BenchError(f"`dagtop` exited: {seen[-400:]!r}") from None
            seen += ESCAPES.sub("", chunk.decode("utf-8", "replace"))
            if newest in seen and first_node in seen and glyphs.search(seen):
                took = time.perf_counter() - started
                cpu = psutil.Process(proc.pid).cpu_times()
                LAST_CPU[:] = [cpu.user + cpu.system + cpu.children_user + cpu.children_system]
                break
    finally:
        try:
            os.write(master, b"q")
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    print(f"  `dagtop` to its first full frame: {ms(took)}", flush=True)
    return took


def import_cost() -> float:
    """`import tui.app` in a fresh interpreter, less the interpreter's own start."""

    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        return time.perf_counter() - started

    bare = statistics.median(once("pass") for _ in range(3))
    return max(0.0, statistics.median(once("import tui.app") for _ in range(3)) - bare)


# --- 2-4. the graph, a big log, a live tail ----------------------------------------------------


async def bench_screens(root: Path, sizes: Sizes) -> list[Row]:
    files = {
        "a_small.py": data.layered_dag("s", 8, "small", seed=1, width=3),
        "big.py": data.layered_dag("b", sizes.dag_nodes, "big", seed=2),
        "chatty.py": data.chatty_asset(sizes.tail_rate, sizes.tail_seconds),
    }
    client = project(root / "screens", files)
    big_run, big_log = data.seed_finished_attempt(client, "chatty")
    started = time.perf_counter()
    lines = data.write_big_log(big_log, sizes.log_bytes)
    print(
        f"  wrote a {big_log.stat().st_size / MiB:,.0f} MiB log ({lines:,} lines) "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    client.start_engine(kind="tui")
    app = DagtopApp(client, mode="embedded")
    out: list[Row] = []
    try:
        async with app.run_test(size=SIZE):
            await until(lambda: home_of(app).graph_shown == ("group", "small"), "the home screen")
            out += await bench_dag(app, sizes)
            out += await bench_big_log(app, big_run, big_log, lines, sizes.presses)
            big_log.unlink()
            out += await bench_tail(app, client, sizes)
    finally:
        big_log.unlink(missing_ok=True)
        assert client.engine is not None
        client.engine.stop(grace=1.0)
    return out


async def bench_dag(app: DagtopApp, sizes: Sizes) -> list[Row]:
    home = home_of(app)
    assert home.manifest is not None
    n = sizes.dag_nodes
    tree = home.pipelines
    big = tree.find(NodeRef("group", "big", "big.py", "big"))
    small = tree.find(NodeRef("group", "small", "a_small.py", "small"))
    assert big is not None and small is not None

    async def select(node: Any, group: str, count: int) -> float:
        started = time.perf_counter()
        tree.move_cursor(node)
        await until(
            lambda: (
                home.graph_shown == ("group", group) and len(home.dag.layout_data.boxes) == count
            ),
            f"the graph of {group}",
        )
        first = home.dag.layout_data.layers[0][0]
        shown = await painted_showing(app, lambda text: None if first in text else first)
        return shown - started

    cold = await select(big, "big", n)
    await select(small, "small", 8)
    cached = await select(big, "big", n)
    nodes = graph_nodes(home.manifest, "group", "big")
    started = time.perf_counter()
    layout = layout_dag(nodes)
    alone = time.perf_counter() - started
    return [
        Row(
            f"DAG of {n} nodes: select the group → painted",
            ms(cold),
            "",
        ),
        Row(f"DAG of {n} nodes, layout cached: select → painted", ms(cached)),
        Row(
            f"DAG of {n} nodes: `layout_dag` alone ({layout.width}×{layout.height} cells)",
            ms(alone),
        ),
    ]


async def bench_big_log(
    app: DagtopApp, run_id: str, path: Path, lines: int, presses: int
) -> list[Row]:
    size = path.stat().st_size
    gc.collect()
    await asyncio.sleep(0.3)  # let the home screen's first refreshes settle
    before = rss()
    peak = PeakRss()
    peak.start()
    started = time.perf_counter()
    app.push_screen(RunScreen(run_id, step="chatty"))

    def log() -> LogView:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        return screen.query_one("#log", LogView)

    await until(lambda: log().visible_text()[-1:] == [data.LAST_LINE], "the log's last line")
    last_shown = await painted(app) - started
    await until(lambda: log().indexing is None and log().line_count == lines, "the full index", 600)
    indexed = await painted(app) - started
    after = rss()
    high = peak.stop()
    idle = []
    for _ in range(presses):
        idle.append(await press_and_wait(app))
        await asyncio.sleep(0.1)
    app.pop_screen()
    await asyncio.sleep(0.2)
    gc.collect()
    closed = rss()
    index_bytes = lines * 8
    delta = after - before
    flat = delta <= index_bytes * 1.25 + 32 * MiB
    gib = size / (1 << 30)
    return [
        Row(f"{gib:.2f} GiB log ({lines:,} lines): open → last line painted", ms(last_shown)),
        Row(f"{gib:.2f} GiB log: open → full newline index painted", ms(indexed)),
        Row(
            f"{gib:.2f} GiB log: RSS {before / MiB:,.0f} → {after / MiB:,.0f} MiB once indexed",
            f"+{delta / MiB:,.0f} MiB (peak +{(high - before) / MiB:,.0f}, "
            f"+{(closed - before) / MiB:,.0f} after closing)",
            f"flat: ≤ the index ({index_bytes / MiB:,.0f} MiB, 8 B a line) + 25% + 32 MiB",
            flat,
        ),
        Row(
            f"no log streaming (this finished run): key press → painted, median / p95 of {presses}",
            f"{ms(statistics.median(idle))} / {ms(pct(idle, 0.95))}",
        ),
    ]


async def bench_tail(app: DagtopApp, client: Client, sizes: Sizes) -> list[Row]:
    run_id = client.submit(RunRequest(selection=("chatty",)))
    screen = RunScreen(run_id, step="chatty")
    app.push_screen(screen)
    await until(lambda: bool(screen.query("#log")), "the run screen")
    log = screen.query_one("#log", LogView)
    line = re.compile(r"^(\d+\.\d+) INFO  chatty line +(\d+) of (\d+)")

    def bottom() -> tuple[float, int, int] | None:
        # The step's newest line in view (dagtop's own last line follows it at the end).
        for text in reversed(log.visible_text()[-2:]):
            found = line.match(text)
            if found is not None:
                return float(found[1]), int(found[2]), int(found[3])
        return None

    await until(lambda: bottom() is not None, "the step's first log line", 60)
    window_start = time.perf_counter()
    first = bottom()
    assert first is not None
    total = first[2]
    samples: list[tuple[float, int]] = []  # (when, line number at the bottom)
    lags: list[float] = []
    latencies: list[float] = []
    spacing = max(0.05, sizes.tail_seconds / (sizes.presses + 2))
    while len(latencies) < sizes.presses:
        shown = bottom()
        if shown is not None and shown[1] < total - 1:
            samples.append((time.perf_counter(), shown[1]))
            lags.append(time.time() - shown[0])
        latencies.append(await press_and_wait(app))
        await asyncio.sleep(spacing)
    shown = bottom()
    if shown is not None and shown[1] < total - 1:
        samples.append((time.perf_counter(), shown[1]))
    await until(lambda: (bottom() or (0, 0, 0))[1] == total - 1, "the step's last line", 60)
    all_shown = time.perf_counter()
    written = writer_rate(log)
    shown_rate = 0.0
    if len(samples) >= 2:
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        shown_rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
    window = all_shown - window_start
    rows = [
        Row(
            f"live tail, the step writes {sizes.tail_rate:,} lines/s: writer's real rate",
            f"{written:,.0f} lines/s",
        ),
        Row(
            "live tail: lines painted per second (bottom line's advance)",
            f"{shown_rate:,.0f} lines/s",
            "keeps up with the writer (≥ 90%)",
            shown_rate >= 0.9 * min(written, sizes.tail_rate),
        ),
        Row(
            "live tail: bottom line behind the writer, median / p95",
            f"{ms(statistics.median(lags))} / {ms(pct(lags, 0.95))}" if lags else "n/a",
        ),
        Row(
            f"live tail: key press → painted, median / p95 of {len(latencies)}",
            f"{ms(statistics.median(latencies))} / {ms(pct(latencies, 0.95))}",
            "< 100 ms (median)",
            statistics.median(latencies) < 0.1,
        ),
    ]
    print(f"  tail window {window:.1f} s, {total:,} lines", flush=True)
    app.pop_screen()
    return rows


def writer_rate(log: LogView) -> float:
    """Lines a second the step really wrote (from the times on its first and last lines)."""
    count = log.line_count
    if log.line_text(count - 1).startswith("dagtop: "):
        count -= 1  # dagtop's own last line, on how the step ended
    first = float(log.line_text(0).split()[0])
    last = float(log.line_text(count - 1).split()[0])
    return (count - 1) / (last - first) if last > first else 0.0


# --- running and reporting --------------------------------------------------------------------


async def measure(sizes: Sizes, root: Path) -> list[Row]:
    print("home screen", flush=True)
    rows = await bench_home(root, sizes)
    print("graph, big log, live tail", flush=True)
    rows += await bench_screens(root, sizes)
    return rows


def machine(loads: list[float]) -> str:
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"load average (1 min) {min(loads):.1f} to {max(loads):.1f}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"Textual {importlib.metadata.version('textual')}, "
        f"dagtop {importlib.metadata.version('dagtop')}; terminal {SIZE[0]}×{SIZE[1]}, headless"
    )


def verdict(row: Row) -> str:
    return "" if row.ok is None else ("pass" if row.ok else "miss")


def print_table(rows: list[Row], header: str) -> None:
    grid = [["case", "measured", "goal", ""]]
    grid += [[r.case, r.value, r.goal, verdict(r)] for r in rows]
    widths = [max(len(r[i]) for r in grid) for i in range(4)]
    print()
    print(header)
    for n, cells in enumerate(grid):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| case | measured | goal | |", "|---|---:|---|---|"]
    for r in rows:
        mark = {"pass": "✓ pass", "miss": "✗ miss", "": ""}[verdict(r)]
        lines.append(f"| {r.case} | {r.value} | {r.goal} | {mark} |")
    return "\n".join(lines)


def write_docs(block: str) -> None:
    write_section("ui", SECTION.removeprefix("## "), block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    add_write_option(parser)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    loads = [os.getloadavg()[0]]
    root = Path(tempfile.mkdtemp(prefix="dagtop-uibench-"))
    try:
        rows = asyncio.run(measure(sizes, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    loads.append(os.getloadavg()[0])
    header = machine(loads) + ("; --quick sizes" if args.quick else "") + "."
    print_table(rows, header)
    if args.write if args.write is not None else not args.quick:
        write_docs(markdown(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
