"""Backfills at scale and in the history: an engine's pass costs the same whatever the size of
the backfill, a resume leaves the canceled runs canceled, and the progress reads well in a log.
Real engines, real subprocesses, real SQLite."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from engine.client import Client
from engine.loading.config import load_config, resolve_paths
from engine.storage import repo

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = textwrap.dedent(
    """
    import time

    from engine import DailyPartitions, asset

    days = DailyPartitions(start="2020-01-01", end="2021-01-01")


    @asset(partitions=days)
    def slow_day(context):
        time.sleep(float(context.params.get("sleep", 2.0)))
        return 1


    @asset(partitions=days)
    def day(context):
        time.sleep(0.05)
        return 1


    @asset(partitions=days)
    def report(day):
        return day + 1
    """
)


def wait_for(what: Callable[[], object], timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_project(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "days.py").write_text(PIPELINE)
    (root / "dagtop.toml").write_text("max_workers = 4\n")
    return root


def days(n: int) -> list[str]:
    from engine import DailyPartitions

    return DailyPartitions(start="2020-01-01", end="2021-01-01").keys()[:n]


def pass_costs(root: Path, keys: int, window: tuple[float, float] = (1.0, 3.5)) -> list[Any]:
    """(statements, SQLite VM steps) of each admission pass of an engine that runs a backfill
    of `keys` slow keys, two at a time, counted in the time `window` after it started."""
    from engine.service.daemon import Engine

    project = make_project(root)
    paths = resolve_paths(project / "home", project / "pipelines")
    engine = Engine(paths, load_config(paths.project), schedules=False, sensors=False, watch=False)
    current: list[int] | None = None
    costs: list[tuple[int, int]] = []

    def counting() -> bool:
        return current is not None and threading.current_thread().name == "dagtop-housekeeping"

    def on_statement(*_args: Any) -> None:
        if counting():
            assert current is not None
            current[0] += 1

    def on_vm_steps() -> int:
        if counting():
            assert current is not None
            current[1] += 1
        return 0  # 0: go on

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(on_vm_steps, 1)  # called at every VM instruction

    engine.db.dispose()  # connections from now on get the handler
    event.listen(engine.db, "connect", on_connect)
    event.listen(engine.db, "before_cursor_execute", on_statement)
    admit = engine._admit
    started = 0.0

    def counted_admit() -> None:
        nonlocal current
        current = [0, 0]
        try:
            admit()
        finally:
            elapsed = time.monotonic() - started
            if window[0] <= elapsed <= window[1]:
                costs.append((current[0], current[1]))
            current = None

    engine._admit = counted_admit  # type: ignore[method-assign]
    client = Client(project / "home", project / "pipelines")
    backfill_id = client.backfill(["slow_day"], keys=days(keys), max_parallel=2)
    started = time.monotonic()
    engine.start()
    try:
        time.sleep(window[1] + 0.1)
        client.attach(engine)
        client.backfill_action("cancel", backfill_id)
        wait_for(lambda: client.backfill_progress(backfill_id)["status"] == "canceled")
    finally:
        engine.stop()
    return costs


def test_an_engine_pass_costs_the_same_for_a_backfill_of_20_and_of_200_keys(
    tmp_path: Path,
) -> None:
    small = pass_costs(tmp_path / "small", 20)
    large = pass_costs(tmp_path / "large", 200)
    assert len(small) >= 5 and len(large) >= 5
    # Most passes find nothing changed (the steps sleep): what they cost must not depend on
    # how many runs the backfill has. A pass that sees a run end costs a little more, the
    # same in both, and is rare enough not to be the most common.
    assert statistics.mode(small) == statistics.mode(large), (small, large)
    # And no pass grows with it: one that read every run would cost ten times as much.
    assert max(vm for _, vm in large) <= 2 * max(vm for _, vm in small), (small, large)


def test_a_resumed_key_gets_a_new_run_and_the_canceled_run_stays_canceled(
    tmp_path: Path,
) -> None:
    from engine.service.daemon import Engine

    project = make_project(tmp_path)
    paths = resolve_paths(project / "home", project / "pipelines")
    engine = Engine(paths, load_config(paths.project), schedules=False, sensors=False, watch=False)
    engine.start()
    try:
        client = Client(project / "home", project / "pipelines")
        client.attach(engine)
        keys = days(6)
        backfill_id = client.backfill(["day", "report"], keys=keys, max_parallel=1)
        wait_for(lambda: client.backfill_progress(backfill_id)["counts"].get("success", 0) >= 1)
        client.backfill_action("cancel", backfill_id)
        info = wait_for(
            lambda: (i := client.backfill_progress(backfill_id))["status"] != "running" and i
        )
        assert info["status"] == "canceled"
        with client._read() as s:
            before = {r.id: (r.partition, r.status) for r in repo.runs_of_backfill(s, backfill_id)}
        canceled = {rid: key for rid, (key, status) in before.items() if status == "canceled"}
        assert canceled, before

        client.backfill_action("resume", backfill_id)
        info = wait_for(
            lambda: (i := client.backfill_progress(backfill_id))["status"] != "running" and i,
            timeout=60,
        )
        assert info["status"] == "success", info
        assert info["counts"] == {"success": 6}  # each key counted by its newest run
        with client._read() as s:
            old = repo.runs_by_id(s, canceled)
            current = repo.runs_of_backfill(s, backfill_id)
        # The history still shows the cancel: the canceled runs are canceled, and still say
        # which backfill made them.
        assert {rid: run.status for rid, run in old.items()} == dict.fromkeys(canceled, "canceled")
        assert {run.trigger_ref for run in old.values()} == {backfill_id}
        # Each of their keys has a new run, which succeeded.
        resumed = {run.partition: run for run in current if run.id not in before}
        assert set(resumed) == set(canceled.values())
        assert all(run.status == "success" for run in resumed.values())
        assert sorted(run.partition for run in current) == keys
    finally:
        engine.stop()


def test_the_progress_of_a_backfill_in_a_log_is_lines_not_carriage_returns(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    keys = days(12)
    cli = subprocess.run(  # stdout is a pipe, as in CI, not a terminal
        [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
         "backfill", "day", "report", "--partitions", ",".join(keys), "--max-parallel", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    out = cli.stdout
    assert "\r" not in out
    lines = out.splitlines()
    assert lines[0].startswith("backfill ") and "12 partitions of day, report" in lines[0]
    assert lines[-1].startswith("✓ backfill ") and "success: 12/12" in lines[-1]
    # A line per tenth of the keys at most, not one per update.
    progress = lines[1:-1]
    assert 1 <= len(progress) <= 10, out
    assert all(line.startswith("  ") and "/12 finished" in line for line in progress), out
    assert progress[-1].startswith("  12/12 finished")


def test_each_run_of_a_backfill_records_its_own_key_on_its_steps(tmp_path: Path) -> None:
    # The runs are planned once and copied per key: a step copied with the first run's key
    # made every key's newest step (what the matrix reads: running, failed) the first key's.
    project = make_project(tmp_path)
    client = Client(project / "home", project / "pipelines")
    keys = days(3)
    backfill_id = client.backfill(["day", "report"], keys=keys, max_parallel=1)
    with client._read() as s:
        runs = repo.runs_of_backfill(s, backfill_id)
        steps = repo.steps_of(s, [run.id for run in runs])
    assert sorted(run.partition or "" for run in runs) == keys
    for run in runs:
        assert {(st.key, st.partition) for st in steps[run.id]} == {
            ("day", run.partition),
            ("report", run.partition),
        }
