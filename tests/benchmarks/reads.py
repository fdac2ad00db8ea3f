"""How fast a short read command answers while an engine runs: the real `dagtop` command.

    python -m tests.benchmarks.reads [--quick] [--write | --no-write]

A temp project (a few assets, one partitioned, a task pipeline) with some history and a real
`dagtop daemon` process; then `dagtop runs`, `list`, `logs RUN`, `partitions ASSET` and
`asset ASSET`, each answered over the daemon's socket without importing storage, timed from
process start to exit beside `python -c pass` and `dagtop --version` (the command line's own
floor: the interpreter, click and the facade's imports), alternating, medians of each. The
goal is 0.15 s a read. A full run (not --quick) rewrites the section of docs/benchmarks.md
between `<!-- reads:start -->` and `<!-- reads:end -->`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

from tests.benchmarks._docs import add_write_option, write_section
from tests.benchmarks.ui import Row, ms, print_table
from tests.daemons import stop_all

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
GOAL = 0.15
PIPELINE = textwrap.dedent(
    """
    from engine import Pipeline, StaticPartitions, asset, task

    @asset
    def raw(context):
        context.add_metadata({"rows": 3})
        return [1, 2, 3]

    @asset
    def cleaned(raw):
        return [x * 2 for x in raw]

    @asset(partitions=StaticPartitions(["eu", "us", "apac"]))
    def sales(context):
        context.log.info("sales of %s", context.partition)
        return context.partition

    with Pipeline("chores"):

        @task
        def sweep():
            return 1
    """
)


def measure(root: Path, repeat: int) -> list[Row]:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "shop.py").write_text(PIPELINE)
    base = [DAGTOP, "--home", str(root / "home"), "--pipelines", str(root / "pipelines")]

    def dagtop(*args: str) -> str:
        return subprocess.run([*base, *args], capture_output=True, text=True, check=True).stdout

    for _ in range(3):
        dagtop("materialize", "raw", "cleaned")
    for key in ("eu", "us", "apac"):
        dagtop("materialize", "sales", "--partition", key)
    dagtop("run", "chores")
    run_id = json.loads(dagtop("runs", "--limit", "1", "--json"))[0]["id"]
    daemon = subprocess.Popen([*base, "daemon"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (root / "home" / "engine.sock").exists():
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not open its socket in 30 s")
            time.sleep(0.05)
        cases = {
            "`python -c pass`": [sys.executable, "-c", "pass"],
            "`dagtop --version`": [DAGTOP, "--version"],
            "`dagtop runs`": [*base, "runs"],
            "`dagtop list`": [*base, "list"],
            "`dagtop logs RUN`": [*base, "logs", run_id],
            "`dagtop partitions sales`": [*base, "partitions", "sales"],
            "`dagtop asset raw`": [*base, "asset", "raw"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeat):
            for name, command in cases.items():
                started = time.perf_counter()
                subprocess.run(command, capture_output=True, check=True)
                times[name].append(time.perf_counter() - started)
    finally:
        stop_all([daemon])
    floor = statistics.median(times["`python -c pass`"])
    rows = []
    for name, found in times.items():
        median = statistics.median(found)
        is_read = name not in ("`python -c pass`", "`dagtop --version`")
        rows.append(
            Row(
                name + (" (over the daemon's socket)" if is_read else ""),
                f"{ms(median)}, {median / floor:.1f}× `python -c pass`",
                f"< {GOAL:g} s" if is_read else "",
                median < GOAL if is_read else None,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 measurements of each, not 15")
    add_write_option(parser)
    args = parser.parse_args(argv)
    loads = [os.getloadavg()[0]]
    root = Path(tempfile.mkdtemp(prefix="dagtop-readsbench-"))
    try:
        rows = measure(root, 3 if args.quick else 15)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    loads.append(os.getloadavg()[0])
    header = (
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, load average (1 min) "
        f"{min(loads):.1f} to {max(loads):.1f}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; medians of {3 if args.quick else 15}, alternating"
        + ("; --quick" if args.quick else "")
        + "."
    )
    print_table(rows, header)
    if args.write if args.write is not None else not args.quick:
        lines = [header, "", "| command | measured | goal | |", "|---|---:|---|---|"]
        for r in rows:
            mark = "" if r.ok is None else ("✓ pass" if r.ok else "✗ miss")
            lines.append(f"| {r.case} | {r.value} | {r.goal} | {mark} |")
        write_section("reads", "Reads with an engine up", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
