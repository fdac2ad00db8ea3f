"""Asset automation across a `kill -9` of a real daemon: one upstream update is one run of its
eager downstreams, also when the daemon dies between the upstream's end and the downstream's
request, or right after the request was recorded, or at any other instant."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.client import Client
from engine.history.views import RunView
from engine.status import RunStatus
from tests.daemons import stop_all
from tests.waiting import wait_for

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = textwrap.dedent(
    """
    from engine import Auto, asset


    @asset
    def raw():
        return 1


    @asset(auto=Auto.eager())
    def cleaned(raw):
        return raw + 1


    @asset(auto=Auto.eager())
    def report(cleaned):
        return cleaned * 2
    """
)

Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "chain.py").write_text(PIPELINE)
    return tmp_path


def dagtop(project: Path, *args: str) -> list[str]:
    return [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
            *args]  # fmt: skip


@pytest.fixture
def start_daemon(project: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(fault: str = "") -> subprocess.Popen[bytes]:
        env = {**os.environ, "DAGTOP_FAULT": fault}
        proc = subprocess.Popen(
            dagtop(project, "daemon"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
        procs.append(proc)
        client = Client(project / "home", project / "pipelines")
        wait_for(lambda: proc.poll() is not None or client.daemon() is not None)
        wait_for(lambda: (project / "home" / "engine.sock").exists() or proc.poll() is not None)
        return proc

    yield start
    stop_all(procs)


def runs(project: Path) -> list[RunView]:
    return list(reversed(Client(project / "home", project / "pipelines").runs(500)))


def raw_updates(project: Path) -> int:
    return sum(
        1
        for r in runs(project)
        if r.target == "raw" and any(s.key == "raw" and s.status == "success" for s in r.steps)
    )


def auto_runs(project: Path) -> list[RunView]:
    return [r for r in runs(project) if r.trigger == "auto"]


def all_done(project: Path, count: int) -> list[RunView] | None:
    found = auto_runs(project)
    if len(found) == count and all(r.status == RunStatus.SUCCESS for r in found):
        return found
    return None


def materialize_raw(project: Path) -> None:
    # The command may see its engine die: its run is then finished by the next engine.
    subprocess.run(dagtop(project, "materialize", "raw"), capture_output=True, timeout=60)


def test_a_kill_9_between_an_upstreams_end_and_the_request_loses_nothing(
    project: Path, start_daemon: Start
) -> None:
    daemon = start_daemon("auto-before-commit")
    materialize_raw(project)
    assert daemon.wait(timeout=30) == -signal.SIGKILL  # died at the fault point
    assert raw_updates(project) == 1 and auto_runs(project) == []  # the request was never made
    start_daemon()
    done = wait_for(lambda: all_done(project, 1), what="the chain's run after the restart")
    assert [s.key for s in done[0].steps] == ["cleaned", "report"]
    time.sleep(1.0)
    assert len(auto_runs(project)) == 1


def test_a_kill_9_right_after_the_request_starts_nothing_twice(
    project: Path, start_daemon: Start
) -> None:
    daemon = start_daemon("auto-after-commit")
    materialize_raw(project)
    assert daemon.wait(timeout=30) == -signal.SIGKILL
    assert len(auto_runs(project)) == 1  # recorded with its cause, not started
    start_daemon()
    wait_for(lambda: all_done(project, 1), what="the recorded run, resumed")
    time.sleep(1.0)
    assert len(auto_runs(project)) == 1


def test_kill_9_at_any_instant_keeps_one_run_per_upstream_update(
    project: Path, start_daemon: Start
) -> None:
    def balanced() -> bool:
        # Settled: a run the last kill left is finished too (by the next engine), so each
        # raw update has had its own pass. Two updates that one pass sees are one cause, as
        # Dagster's eager condition has it, and one run.
        settled = all(r.finished for r in runs(project))
        return settled and all_done(project, raw_updates(project)) is not None

    rng = random.Random(16)
    done = 0
    for _ in range(3):
        daemon = start_daemon()
        wait_for(balanced, timeout=60, what="one chain run per raw update", every=0.2)
        cli = subprocess.Popen(dagtop(project, "materialize", "raw"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(rng.uniform(0.05, 0.6))
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        # No engine comes until it exits: it runs its run itself, or (killed between its
        # request and the answer, when it cannot know whether the run was recorded) says so.
        _, err = cli.communicate(timeout=60)
        assert cli.returncode == 0 or len(err.strip().splitlines()) == 1, err
        done += cli.returncode == 0
    start_daemon()
    wait_for(balanced, timeout=60, what="one chain run per raw update", every=0.2)
    time.sleep(1.0)
    assert raw_updates(project) >= max(done, 1)
    assert len(auto_runs(project)) == raw_updates(project)


def test_dagtop_sensor_off_auto_stops_automation_with_or_without_a_daemon(
    project: Path, start_daemon: Start
) -> None:
    off = subprocess.run(dagtop(project, "sensor", "off", "auto"), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert off.returncode == 0 and off.stdout.strip() == "sensor auto is off", off.stderr
    start_daemon()
    materialize_raw(project)
    time.sleep(1.5)
    assert raw_updates(project) == 1 and auto_runs(project) == []
    on = subprocess.run(dagtop(project, "sensor", "on", "auto"), capture_output=True, text=True,
                        timeout=60)  # fmt: skip
    assert on.returncode == 0, on.stderr
    wait_for(lambda: all_done(project, 1), what="the chain's run once the sensor is on")
    off = subprocess.run(dagtop(project, "sensor", "off", "auto"), capture_output=True,
                         text=True, timeout=60)  # through the daemon's socket  # fmt: skip
    assert off.returncode == 0, off.stderr
    materialize_raw(project)
    time.sleep(1.5)
    assert len(auto_runs(project)) == 1
    shown = subprocess.run(dagtop(project, "runs"), capture_output=True, text=True, timeout=60)
    assert "auto" in shown.stdout and "(cleaned: missing; then report)" in shown.stdout
