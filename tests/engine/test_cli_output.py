"""What `dagtop` prints, through real CLI processes: `--json` objects of one shape whatever
the state of a run or step, and one glyph per meaning across commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.status import PartitionStatus, RunStatus, StepStatus

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = """\
import pathlib
import time

from engine import CheckResult, StaticPartitions, asset, check

RELEASE = pathlib.Path({release!r})


@asset
def ok(context):
    context.add_metadata({{"rows": 3}})
    return 1


@check(asset="ok")
def positive(ok):
    return CheckResult(passed=ok > 0, metadata={{"value": ok}})


@asset
def boom(ok):
    raise RuntimeError("boom")


@asset
def after(boom):
    return 2


@asset
def slow():
    while not RELEASE.exists():
        time.sleep(0.05)
    return 1


@asset
def after_slow(slow):
    return 1


@asset(partitions=StaticPartitions(["a", "b"]))
def part():
    return 1


@asset
def task_like():
    return None
"""

# A key, and the JSON types its value may have: a value not known yet is null, a list or an
# object never is.
NULLABLE_STR = (str, type(None))
RUN_SHAPE: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "status": (str,),
    "target": (str,),
    "kind": (str,),
    "partition": NULLABLE_STR,
    "params": (dict,),
    "trigger": (str,),
    "reason": NULLABLE_STR,  # why automation requested it (trigger `auto`)
    "created_at": (str,),
    "started_at": NULLABLE_STR,
    "ended_at": NULLABLE_STR,
    "error": NULLABLE_STR,
    "steps": (list,),
    "checks": (list,),
}
STEP_SHAPE: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "kind": (str,),
    "status": (str,),
    "attempts": (int,),
    "max_attempts": (int,),
    "exit_code": (int, type(None)),
    "error": NULLABLE_STR,
    "peak_rss_bytes": (int, type(None)),
    "cpu_seconds": (float, type(None)),
    "log_path": NULLABLE_STR,
    "started_at": NULLABLE_STR,
    "ended_at": NULLABLE_STR,
    "upstream": (list,),
    "metadata": (dict,),
    "host": NULLABLE_STR,
    "worker": NULLABLE_STR,
    "placements": (list,),  # every attempt: {attempt, status, host, worker, error}
    "skip": NULLABLE_STR,  # a skipped step's kind of skip: "branch", "upstream_failed", ...
    "map_index": (int, type(None)),  # a mapped task's instance: process[2] -> 2
}
CHECK_SHAPE: dict[str, tuple[type, ...]] = {
    "asset": (str,),
    "partition": NULLABLE_STR,
    "name": (str,),
    "passed": (bool,),
    "blocking": (bool,),
    "description": NULLABLE_STR,
    "metadata": (dict,),
    "error": NULLABLE_STR,
}


def dagtop(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(root / "home"), "--pipelines", str(root / "pipelines")]
    return subprocess.run(
        [*base, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def check_shape(what: str, obj: dict[str, Any], shape: dict[str, tuple[type, ...]]) -> None:
    assert set(obj) == set(shape), f"{what}: keys {sorted(set(obj) ^ set(shape))} differ"
    for key, types in shape.items():
        value = obj[key]
        # JSON has no separate bool: True must not pass for an int, nor 1 for a bool.
        ok = isinstance(value, types) and (isinstance(value, bool) == (bool in types))
        assert ok, f"{what}: {key} is {value!r}, expected {[t.__name__ for t in types]}"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Any]]]:
    """A history with runs and steps in every state, one of them running while it is read."""
    root = tmp_path_factory.mktemp("shapes")
    release = root / "release"
    (root / "pipelines").mkdir()
    (root / "pipelines" / "shapes.py").write_text(PIPELINE.format(release=str(release)))
    assert dagtop(root, "materialize", "ok").returncode == 0
    assert dagtop(root, "materialize", "ok", "boom", "after").returncode == 1
    queued = dagtop(root, "backfill", "part", "--partitions", "a,b", "--no-wait", "--json")
    assert queued.returncode == 0, queued.stderr
    runs = json.loads(dagtop(root, "runs", "--json").stdout)
    to_cancel = next(r["id"] for r in runs if r["partition"] == "a")
    assert dagtop(root, "cancel", to_cancel).returncode == 0
    running = subprocess.Popen(
        [DAGTOP, "--home", str(root / "home"), "--pipelines", str(root / "pipelines"),
         "materialize", "slow", "after_slow"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            runs = json.loads(dagtop(root, "runs", "--json").stdout)
            if any(s["status"] == StepStatus.RUNNING for r in runs for s in r["steps"]):
                break
            assert time.monotonic() < deadline, "the slow step never showed as running"
            time.sleep(0.1)
        yield root, runs
    finally:
        release.write_text("")
        _, err = running.communicate(timeout=60)
        assert running.returncode == 0, err


def test_every_run_and_step_of_runs_json_has_one_shape(history: tuple[Path, list[Any]]) -> None:
    _root, runs = history
    run_states = {r["status"] for r in runs}
    step_states = {s["status"] for r in runs for s in r["steps"]}
    assert run_states == {
        RunStatus.SUCCESS,
        RunStatus.FAILED,
        RunStatus.CANCELED,
        RunStatus.QUEUED,
        RunStatus.RUNNING,
    }
    assert step_states == {
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELED,
        StepStatus.QUEUED,
        StepStatus.RUNNING,
    }
    for r in runs:
        check_shape(f"run {r['id']} ({r['status']})", r, RUN_SHAPE)
        for s in r["steps"]:
            check_shape(f"step {s['key']} of {r['id']} ({s['status']})", s, STEP_SHAPE)
        for c in r["checks"]:
            check_shape(f"check {c['name']} of {r['id']}", c, CHECK_SHAPE)
    assert any(r["checks"] for r in runs)
    ok = next(s for r in runs for s in r["steps"] if s["key"] == "ok")
    assert ok["metadata"] == {"rows": 3}  # what a step recorded is still there


def test_a_finished_runs_json_has_the_same_shape(history: tuple[Path, list[Any]]) -> None:
    root, _runs = history
    done = dagtop(root, "materialize", "task_like", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    check_shape("materialize --json", run, RUN_SHAPE)
    for s in run["steps"]:
        check_shape(f"step {s['key']}", s, STEP_SHAPE)
    assert run["steps"][0]["metadata"] == {}


def test_one_glyph_per_meaning_across_commands(history: tuple[Path, list[Any]]) -> None:
    root, runs = history
    assert dagtop(root, "materialize", "part", "--partition", "b").returncode == 0
    partitions = dagtop(root, "partitions", "part").stdout.splitlines()
    materialized = next(
        line for line in partitions if " b " in line and PartitionStatus.MATERIALIZED in line
    )
    listing = dagtop(root, "runs").stdout.splitlines()
    canceled = next(line for line in listing if RunStatus.CANCELED in line)
    # `■` used to mean materialized in `partitions` and canceled in `runs` and backfills.
    assert materialized.split()[0] != canceled.split()[0]
    assert materialized.split()[0] == "✓" and canceled.split()[0] == "■"
