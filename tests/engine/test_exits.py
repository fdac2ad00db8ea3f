"""How attempts end: every exit seen at once, nothing a step started left running, and a last
log line from dagtop saying how and why. Real step processes, real SQLite, a real daemon."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlmodel import select

from engine.client import Client, RunView
from engine.status import RunStatus
from engine.storage.db import read_scope
from engine.storage.models import Event, StepAttempt
from tests.engine.test_executor import alive, log_text, make_project

pytestmark = pytest.mark.serial

DAGTOP = str(Path(__import__("sys").executable).with_name("dagtop"))

# How far apart the two chains' first steps end, in ms: the coordinator is busy starting the
# step after `extract_a` for the first few of them.
OFFSETS_MS = (5, 10, 20, 30)
# The longest a finished step's exit may go unrecorded, and its downstream unstarted. An exit
# that went unnoticed waited for `train` to end (10 s, the fixture's WAIT); a healthy one is
# recorded within milliseconds, a few hundred on a machine loaded past its cores (CI's).
LATE = 1.0


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
    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
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


ORPHANED = """\
import os
import time
from pathlib import Path

from engine import asset


@asset
def outlives_its_server():
    Path("running").write_text(str(os.getpid()))
    time.sleep(1.5)
    return 1
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_a_step_whose_fork_server_died_still_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    """The fork server dies while its child runs: the coordinator watches the orphan itself
    (by pidfd, or by polling where the kernel has none) and records its end."""
    import engine.executor.coordinator as coordinator
    from engine.executor.local import HAS_PIDFD

    monkeypatch.setattr(coordinator, "HAS_PIDFD", pidfd and HAS_PIDFD)
    client = make_project(tmp_path)
    (client.paths.pipelines / "orphaned.py").write_text(ORPHANED)
    running = client.paths.project / "running"
    outcome: dict[str, RunView] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(view=client.materialize(["outlives_its_server"])),
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not running.exists():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.02)
    server = psutil.Process(int(running.read_text())).parent()
    assert server is not None and "engine.executor.forkserver" in server.cmdline()
    server.kill()

    thread.join(timeout=20)

    assert not thread.is_alive(), "the step's end was never noticed"
    assert outcome["view"].status == RunStatus.SUCCESS, outcome["view"].steps


# --- nothing a step starts outlives its attempt -----------------------------------------------


def marked(marker: str) -> list[str]:
    """Every process on the machine with `marker` on its command line (zombies are dead)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{proc.pid} {' '.join(cmdline)}")
    return found


def last_lines(view: RunView, key: str, n: int = 2) -> list[str]:
    return log_text(view, key).splitlines()[-n:]


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[str]:
    marker = f"dagtop-test-leftover-{uuid.uuid4().hex}"
    yield marker
    for proc in psutil.process_iter(["cmdline"]):  # whatever a failing test left
        if marker in (proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.mark.timeout(60)
def test_a_step_that_succeeds_leaves_no_helper_running(tmp_path: Path, marker: str) -> None:
    """Helpers in the step's group, in a session of their own, and orphaned at once."""
    client = make_project(tmp_path, "leftovers")

    view = client.materialize(["leaves_helpers"], params={"marker": marker})

    assert marked(marker) == []
    assert view.status == RunStatus.SUCCESS
    ended, last = last_lines(view, "leaves_helpers")
    assert ended.startswith("dagtop: ended 3 leftover processes: "), ended
    assert ended.count(" python") == 3, ended
    assert last == "dagtop: step succeeded"


@pytest.mark.timeout(60)
def test_a_step_that_fails_leaves_no_helper_running(tmp_path: Path, marker: str) -> None:
    client = make_project(tmp_path, "leftovers")

    view = client.materialize(["fails_with_helpers"], params={"marker": marker})

    assert marked(marker) == []
    ended, last = last_lines(view, "fails_with_helpers")
    assert ended.startswith("dagtop: ended 2 leftover processes: "), ended
    assert last == "dagtop: step failed: RuntimeError: failed on purpose"


@pytest.mark.timeout(60)
def test_a_step_that_exits_without_a_result_leaves_no_helper(tmp_path: Path, marker: str) -> None:
    client = make_project(tmp_path, "leftovers")

    view = client.materialize(["exits_with_a_helper"], params={"marker": marker})

    assert marked(marker) == []
    ended, last = last_lines(view, "exits_with_a_helper")
    assert ended.startswith("dagtop: ended 1 leftover process: "), ended
    assert last == "dagtop: step failed: the worker exited without reporting a result"


def forked_child_is_gone(client: Client, pidfile: Path, marker: str) -> RunView:
    """Materialize `forks_a_child`; its forked copy must be gone when that returns."""
    started = time.monotonic()
    view = client.materialize(["forks_a_child"], params={"marker": marker, "pidfile": str(pidfile)})
    took = time.monotonic() - started
    child = psutil.Process(int(pidfile.read_text())) if pidfile.exists() else None
    try:
        assert child is None or not child.is_running() or child.status() == "zombie"
    except psutil.NoSuchProcess:
        pass
    finally:
        if child is not None:
            with contextlib.suppress(psutil.Error):
                child.kill()
    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    assert took < 20, f"took {took:.1f} s"
    ended, last = last_lines(view, "forks_a_child")
    assert ended.startswith("dagtop: ended 1 leftover process: "), ended
    assert last == "dagtop: step succeeded"
    return view


@pytest.mark.timeout(60)
def test_a_forked_copy_of_the_step_holding_its_pipes_is_ended(tmp_path: Path, marker: str) -> None:
    forked_child_is_gone(make_project(tmp_path, "leftovers"), tmp_path / "child.pid", marker)


@pytest.mark.timeout(60)
def test_an_exit_and_the_last_events_of_a_step_with_leftovers_in_one_wake_up(
    tmp_path: Path, marker: str
) -> None:
    """While the coordinator does not look, one step exits, then another sends its last events
    and exits leaving a helper: one wake-up then sees the fork server's socket (both exits) and,
    after it, the second step's events pipe, of a step that has exited but is not over yet."""
    from engine.executor.coordinator import Coordinator
    from engine.history.plan import RunRequest

    client = make_project(tmp_path, "leftovers")
    flags = tmp_path / "flags"
    flags.mkdir()
    keys = ("waits_for_go", "ends_after_it_with_a_helper")
    params = {"marker": marker, "flags": str(flags)}
    run_id = client.create_run(RunRequest(selection=keys, params=params))
    coordinator = Coordinator(client.db, client.paths, client.config, client.load)
    coordinator.submit(run_id)
    deadline = time.monotonic() + 30
    while not ((flags / "waits_for_go.pid").exists() and (flags / "second.started").exists()):
        assert time.monotonic() < deadline, "the steps never started"
        coordinator.step_once(timeout=0.05)
    for _ in range(3):  # take the events both sent as they started
        coordinator.step_once(timeout=0.05)
    second = attempt(client, run_id, "ends_after_it_with_a_helper")

    (flags / "go").touch()  # the coordinator is not looking now
    while not (flags / "done.pid").exists() or alive(second.pid or 0):
        assert time.monotonic() < deadline, "the steps never ended"
        time.sleep(0.01)
    time.sleep(0.2)  # for the fork server to reap it and report its exit
    coordinator.run_until_complete({run_id})
    coordinator.close()

    assert client.run(run_id).status == RunStatus.SUCCESS
    assert marked(marker) == []


@pytest.mark.timeout(60)
def test_a_helper_that_ignores_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, marker: str
) -> None:
    client = make_project(tmp_path, "leftovers")

    started = time.monotonic()
    view = client.materialize(["succeeds_with_a_stubborn_helper"], params={"marker": marker})
    took = time.monotonic() - started

    assert marked(marker) == []
    assert view.status == RunStatus.SUCCESS
    assert took < 15, f"took {took:.1f} s"
    ended, last = last_lines(view, "succeeds_with_a_stubborn_helper")
    assert ended.startswith("dagtop: ended 1 leftover process: "), ended
    assert last == "dagtop: step succeeded"


@pytest.mark.timeout(90)
def test_materialize_returns_only_once_a_timed_out_steps_children_are_gone(
    tmp_path: Path, marker: str
) -> None:
    """No daemon: the command runs the step itself, and its children ignore SIGTERM."""
    client = make_project(tmp_path, "leftovers")
    argv = [DAGTOP, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines),
            "materialize", "stubborn", "--param", f"marker={marker}"]  # fmt: skip

    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert marked(marker) == [], done.stdout + done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    view = client.runs(1)[0]
    ended, last = last_lines(view, "stubborn")
    assert ended.startswith("dagtop: ended 2 leftover processes: "), ended
    assert last == "dagtop: step failed: timed out after 1 s"


# --- the log says why the engine ended a step ----------------------------------------------------

TALKER = """\
import time

from engine import asset


@asset
def talker():
    print("working", flush=True)
    time.sleep(1.0)
    print("done, no newline", end="", flush=True)
    return 1
"""


@pytest.mark.timeout(60)
def test_dagtop_logs_and_follow_end_with_dagtops_line(tmp_path: Path) -> None:
    client = make_project(tmp_path)
    (client.paths.pipelines / "talk.py").write_text(TALKER)
    cli = [DAGTOP, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines)]
    run = subprocess.Popen([*cli, "materialize", "talker"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (client.paths.home / "dagtop.db").exists() or not client.runs(1):
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        run_id = client.runs(1)[0].id
        follow = subprocess.run(
            [*cli, "logs", run_id, "talker", "--follow"], capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip
    finally:
        assert run.wait(timeout=30) == 0
    whole = subprocess.run(
        [*cli, "logs", run_id, "talker"], capture_output=True, text=True, timeout=30
    )

    for out in (follow.stdout, whole.stdout):
        assert out.endswith("working\ndone, no newline\ndagtop: step succeeded\n"), out
