"""Recovery end to end: an engine killed with SIGKILL mid-run, and re-runs from failure.

The engine runs as the real `dagtop` console script in a subprocess; the test watches the
run through the SQLite database of its home folder with a `Client`, as the TUI would.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlmodel import select

from engine.client import Client
from engine.status import RunStatus, StepStatus
from engine.storage.db import read_scope
from engine.storage.models import Event, Materialization, StepAttempt
from tests.engine.test_executor import alive, make_project, step
from tests.waiting import wait_for

pytestmark = pytest.mark.serial

DAGTOP = Path(sys.executable).with_name("dagtop")


def dagtop(client: Client, *args: str) -> list[str]:
    return [
        str(DAGTOP),
        "--home",
        str(client.paths.home),
        "--pipelines",
        str(client.paths.pipelines),
        *args,
    ]


def all_rows(client: Client, model: Any) -> list[Any]:
    with read_scope(client.db) as s:
        return list(s.exec(select(model).order_by(model.id)).all())


def stored_value(client: Client, asset: str) -> Any:
    [mat] = [m for m in all_rows(client, Materialization) if m.asset == asset and m.value_path]
    with open(mat.value_path, "rb") as fh:
        return pickle.load(fh)


@pytest.mark.timeout(60)
def test_engine_killed_mid_run_is_finished_by_a_restart(tmp_path: Path) -> None:
    client = make_project(tmp_path, "crash")
    engine = subprocess.Popen(
        dagtop(client, "materialize", "first", "second", "third"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def second_running() -> StepAttempt | None:
            if not (client.paths.home / "dagtop.db").exists():
                return None
            attempts = [a for a in all_rows(client, StepAttempt) if a.key == "second"]
            return attempts[0] if attempts and attempts[0].pid else None

        orphan = wait_for(second_running, 20, "step `second` to start")
        orphan_pid = orphan.pid
        assert orphan_pid is not None
        # Everything the engine started (a fork server, the worker of `second`).
        helpers = psutil.Process(engine.pid).children(recursive=True)
        engine.send_signal(signal.SIGKILL)
        assert engine.wait(timeout=5) == -signal.SIGKILL
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert alive(orphan_pid), "the worker of `second` should outlive its engine"
    assert client.run(orphan.run_id).status == RunStatus.RUNNING

    view = Client(home=client.paths.home, pipelines=client.paths.pipelines).rerun_from_failure(
        orphan.run_id
    )

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    assert not alive(orphan_pid), "reconcile should have killed the orphaned worker"
    assert orphan.pid in {h.pid for h in helpers}
    wait_for(lambda: not any(alive(h.pid) for h in helpers), 5, "the dead engine's helpers")
    assert step(view, "first").attempts == 1, "first's materialization was redone"
    assert step(view, "second").attempts == 2
    assert stored_value(client, "third") == "first+second+third"
    attempts = all_rows(client, StepAttempt)
    assert [a.status for a in attempts if a.key == "second"] == [
        StepStatus.FAILED,
        StepStatus.SUCCESS,
    ]
    assert next(a for a in attempts if a.key == "second").error == "engine stopped while running"
    assert not [a for a in attempts if a.status == StepStatus.RUNNING]
    mats = all_rows(client, Materialization)
    assert sorted(m.asset for m in mats) == ["first", "second", "third"]
    for mat in mats:
        assert mat.value_path and Path(mat.value_path).is_file(), mat


@pytest.mark.timeout(60)
def test_cli_rerun_from_failure_reuses_stored_upstream_values(tmp_path: Path) -> None:
    client = make_project(tmp_path, "flag")
    failed = client.materialize(["base", "needs_flag", "after_flag"])
    assert failed.status == RunStatus.FAILED
    assert [step(failed, k).status for k in ("base", "needs_flag", "after_flag")] == [
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
    ]
    (client.paths.project / "flag.txt").write_text("go")

    done = subprocess.run(
        dagtop(client, "materialize", "--from-failure", failed.id, "--json"),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == RunStatus.SUCCESS
    view = client.run(failed.id)
    assert view.status == RunStatus.SUCCESS
    attempts = {s.key: (s.status, s.attempts) for s in view.steps}
    assert attempts == {
        "base": (StepStatus.SUCCESS, 1),
        "needs_flag": (StepStatus.SUCCESS, 2),
        "after_flag": (StepStatus.SUCCESS, 1),
    }
    assert [r.attempt for r in client.logs(failed.id, "base")] == [1]
    assert [m.asset for m in all_rows(client, Materialization)].count("base") == 1
    assert stored_value(client, "after_flag") == 43
    assert os.path.getsize(client.logs(failed.id, "needs_flag")[0].path) > 0


def test_a_fresh_run_is_not_reported_as_recovered(tmp_path: Path) -> None:
    client = make_project(tmp_path, "parallel")
    view = client.materialize(["*"])
    assert view.status == RunStatus.SUCCESS
    with read_scope(client.db) as s:
        kinds = [e.kind for e in s.exec(select(Event).where(Event.run_id == view.id)).all()]
    assert "recovered" not in kinds
