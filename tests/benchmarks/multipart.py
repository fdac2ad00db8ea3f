"""What partitions over two dimensions cost, against one dimension with as many keys.

    python -m tests.benchmarks.multipart [--repeat 3]

A project with, at two sizes (8,760 and 87,600 keys), a `MultiPartitions` asset (days × 24
regions) and an `HourlyPartitions` asset with the same number of keys, on a real home (empty
history). For each: listing the keys, `client.partitions` (the engine's read behind
`dagtop partitions` and the matrix), and the partition matrix's first full states in the real
app, headless. The cost per key should not grow with the size (linear), and two dimensions
should cost about what one does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

SIZES = {8_760: 365, 87_600: 3_650}  # keys: days (x 24 regions, or x 24 hours)

PIPELINE = """
from engine import DailyPartitions, HourlyPartitions, MultiPartitions, StaticPartitions, asset

grid_{n} = MultiPartitions({{
    "date": DailyPartitions(start="2000-01-01", end="{end}"),
    "region": StaticPartitions([f"r{{i:02d}}" for i in range(24)]),
}})


@asset(group="multi_{n}", partitions=grid_{n})
def multi_{n}(context):
    return 1


@asset(group="hourly_{n}", partitions=HourlyPartitions(start="2000-01-01-00:00", end="{end}"))
def hourly_{n}(context):
    return 1
"""


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def first_states(client: Any, asset: str) -> float:
    from tests.benchmarks.ui import SIZE, until
    from tui.app import DagtopApp
    from tui.screens.partitions import PartitionsScreen

    app = DagtopApp(client, mode="offline")
    async with app.run_test(size=SIZE):
        screen = PartitionsScreen(asset)
        started = time.perf_counter()
        await app.push_screen(screen)
        await until(lambda: screen.polls >= 1, "the matrix's first states", 300)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from datetime import date, timedelta

    from engine.client import Client

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dagtop-multipart-") as tmp:
        pipelines = Path(tmp) / "pipelines"
        pipelines.mkdir()
        for n, days in SIZES.items():
            end = (date(2000, 1, 1) + timedelta(days=days)).isoformat()
            (pipelines / f"p{n}.py").write_text(textwrap.dedent(PIPELINE.format(n=n, end=end)))
        client = Client(home=Path(tmp) / "home", pipelines=pipelines)
        manifest = client.load()
        assert manifest.ok, manifest.errors
        rows = []
        for n in SIZES:
            for kind in ("multi", "hourly"):
                asset = f"{kind}_{n}"
                pdef = manifest.assets[asset].partitions_def
                assert pdef is not None and len(pdef.keys()) == n
                keys = timed(pdef.keys, args.repeat)
                read = timed(partial(client.partitions, asset), args.repeat)
                ui = statistics.median(
                    asyncio.run(first_states(client, asset)) for _ in range(args.repeat)
                )
                rows.append((asset, n, keys, read, ui))
    print(f"{'asset':<14}{'keys':>8}  {'keys()':>10}  {'partitions':>11}  {'matrix':>9}  per key")
    for asset, n, keys, read, ui in rows:
        print(
            f"{asset:<14}{n:>8,}  {keys * 1e3:>8.1f}ms  {read * 1e3:>9.1f}ms  "
            f"{ui * 1e3:>7.0f}ms  {ui / n * 1e6:.1f} µs"
        )
    by = {(a.split("_")[0], n): (k, r, u) for a, n, k, r, u in rows}
    small, large = SIZES
    for kind in ("multi", "hourly"):
        growth = [by[(kind, large)][i] / by[(kind, small)][i] / (large / small) for i in range(3)]
        print(
            f"{kind}: per-key cost at {large:,} / at {small:,}: "
            + ", ".join(f"{g:.2f}" for g in growth)
        )
    for n in SIZES:
        ratio = [by[("multi", n)][i] / by[("hourly", n)][i] for i in range(3)]
        print(f"{n:,} keys, multi / hourly: " + ", ".join(f"{r:.2f}" for r in ratio))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
