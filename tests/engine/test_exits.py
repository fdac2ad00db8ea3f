"""How attempts end: every exit seen at once, nothing a step started left running, and a last
log line from dagtop saying how and why. Real step processes, real SQLite, a real daemon."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from engine.client import Client, RunView
from engine.storage.db import read_scope
from engine.storage.models import Event, StepAttempt
from tests.engine.test_executor import make_project

pytestmark = pytest.mark.serial

DAGTOP = str(Path(__import__("sys").executable).with_name("dagtop"))

# How far apart the two chains' first steps end, in ms: the coordinator is busy starting the
# step after `extract_a` for the first few of them.
OFFSETS_MS = (5, 10, 20, 30)
# The longest a finished step's exit may go unrecorded, and its downstream unstarted.
LATE = 0.2


def finished_at(client: Client, run_id: str, key: str) -> float:
    """When the step's worker said it finished: its own clock, just before it exited."""
    with read_scope(client.db) as s:
        query = select(Event).where(
            Event.run_id == run_id, Event.step_key == key, Event.kind == "finished"
        )
        return s.exec(query).one().ts


def attempt(client: Client, run_id: str, key: str) -> StepAttempt:
    with read_scope(client.db) as s:
        query = select(StepAttempt).where(StepAttempt.run_id == run_id, StepAttempt.key == key)
        return s.exec(query).one()


def lateness(client: Client, view: RunView) -> tuple[float, float]:
    """(how late extract_b's end was recorded, how late report_b started), in seconds."""
    assert view.status == "success", [(s.key, s.status, s.error) for s in view.steps]
    ended = finished_at(client, view.id, "extract_b")
    recorded = attempt(client, view.id, "extract_b").ended_at
    started = attempt(client, view.id, "report_b").started_at
    assert recorded is not None
    return recorded - ended, started - ended


def run_offsets(client: Client) -> dict[str, tuple[float, float]]:
    """How late, for each offset, and for an exit right after extract_a's."""
    late = {
        f"{ms} ms": lateness(client, client.run_pipeline("two_chains", params={"offset_ms": ms}))
        for ms in OFFSETS_MS
    }
    view = client.run_pipeline("two_chains", params={"after_a_exits": 1})
    late["right after extract_a exited"] = lateness(client, view)
    return late


def assert_on_time(late: dict[str, tuple[float, float]]) -> None:
    shown = "; ".join(
        f"{when}: end recorded +{r * 1000:.0f} ms, report_b started +{s * 1000:.0f} ms"
        for when, (r, s) in late.items()
    )
    print(shown)
    assert all(r < LATE and s < LATE for r, s in late.values()), shown


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Client]:
    client = make_project(tmp_path, "exits")
    proc = subprocess.Popen(
        [DAGTOP, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines),
         "daemon"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while client.daemon() is None:
        assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.05)
    try:
        yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- every exit is seen at once ---------------------------------------------------------------


@pytest.mark.timeout(120)
def test_an_exit_while_the_next_step_starts_is_recorded_at_once(tmp_path: Path) -> None:
    client = make_project(tmp_path, "exits")
    assert_on_time(run_offsets(client))


@pytest.mark.timeout(120)
def test_an_exit_while_the_next_step_starts_is_recorded_at_once_on_a_daemon(
    daemon: Client,
) -> None:
    assert_on_time(run_offsets(daemon))
