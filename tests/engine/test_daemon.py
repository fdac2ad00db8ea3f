"""The engine process: lease, daemon lifecycle, commands from other terminals, backfills that
survive a kill -9, and hot reload. Real daemons, real subprocesses, real SQLite."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.client import Client
from engine.loading.config import load_config, resolve_paths
from engine.status import BackfillStatus, PartitionStatus, RunStatus
from tests.daemons import stop_all
from tests.postgres import BACKENDS, database_for
from tests.waiting import backfill_ended, wait_for

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = textwrap.dedent(
    """
    import time

    from engine import DailyPartitions, asset

    days = DailyPartitions(start="2025-01-01", end="2025-02-01")


    @asset(partitions=days)
    def orders(context):
        time.sleep(float(context.params.get("sleep", 0.3)))
        return len(context.partition)


    @asset(partitions=days)
    def revenue(orders):
        return orders * 2


    @asset
    def slow():
        time.sleep(1.5)
        return 1
    """
)


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "sales.py").write_text(PIPELINE)
    config = "max_workers = 8\n"
    if getattr(request, "param", "sqlite") != "sqlite":  # every process finds it in the config
        config += f"database_url = {database_for(request, tmp_path)!r}\n"
    (tmp_path / "dagtop.toml").write_text(config)
    return tmp_path


def dagtop(project: Path, *args: str) -> list[str]:
    return [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
            *args]  # fmt: skip


@pytest.fixture
def start_daemon(project: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            dagtop(project, "daemon"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        client = Client(project / "home", project / "pipelines")
        wait_for(lambda: proc.poll() is not None or client.daemon() is not None)
        return proc

    yield start
    stop_all(procs)


@pytest.mark.parametrize("project", BACKENDS, indirect=True)
def test_a_second_daemon_on_the_same_home_says_so_and_exits_non_zero(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    first = start_daemon()
    assert first.poll() is None
    second = subprocess.run(dagtop(project, "daemon"), capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr


def test_the_daemon_stops_cleanly_on_sigterm(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    daemon = start_daemon()
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    client = Client(project / "home", project / "pipelines")
    assert client.daemon() is None  # the lease is released


@pytest.mark.parametrize("project", BACKENDS, indirect=True)
def test_materialize_from_another_terminal_runs_on_the_daemon(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    daemon = start_daemon()
    client = Client(project / "home", project / "pipelines")
    cli = subprocess.Popen(dagtop(project, "materialize", "slow", "--json"),
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    run = wait_for(lambda: next(iter(client.runs(1)), None))
    owner = wait_for(lambda: _owner(client, run.id))
    assert str(owner).split(":")[0] == str(daemon.pid)
    out, _ = cli.communicate(timeout=30)
    assert cli.returncode == 0
    assert f'"status": "{RunStatus.SUCCESS}"' in out
    configured = "database_url" in (project / "dagtop.toml").read_text()
    assert (project / "home" / "dagtop.db").exists() != configured


def _owner(client: Client, run_id: str) -> str | None:
    from engine.storage import repo

    with client._read() as s:
        return repo.find_run(s, run_id).owner


def test_a_killed_daemons_lease_is_taken_over_at_once(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    first = start_daemon()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = start_daemon()
    assert second.poll() is None


def test_a_backfill_honors_its_limit_and_survives_a_kill_9_of_the_daemon(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    daemon = start_daemon()
    client = Client(project / "home", project / "pipelines")
    backfill_id = client.backfill(["orders", "revenue"], first="2025-01-01", last="2025-01-30",
                                  max_parallel=4)  # fmt: skip
    most = 0

    def running() -> int:
        counts = client.backfill_progress(backfill_id)["counts"]
        return int(counts.get(RunStatus.RUNNING, 0))

    deadline = time.monotonic() + 60
    while client.backfill_progress(backfill_id)["counts"].get(RunStatus.SUCCESS, 0) < 8:
        most = max(most, running())
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(daemon.pid, signal.SIGKILL)  # the engine and its workers, mid-backfill
    daemon.wait()
    start_daemon()
    while (info := client.backfill_progress(backfill_id))["status"] == BackfillStatus.RUNNING:
        most = max(most, running())
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert info["status"] == BackfillStatus.SUCCESS, info
    assert info["counts"] == {RunStatus.SUCCESS: 30}
    assert 1 <= most <= 4
    states = client.partitions("revenue")
    assert sum(1 for p in states if p.status == PartitionStatus.MATERIALIZED) == 30
    from engine.storage import repo

    with client._read() as s:
        for key in info["partitions"]:
            mats = [
                m for m in repo.latest_per_partition(s, "orders").values() if m.partition == key
            ]
            assert len(mats) == 1 and Path(mats[0].value_path or "").is_file()


def test_hot_reload_of_an_edited_a_broken_and_a_deleted_file(project: Path) -> None:
    from engine.service.daemon import Engine

    paths = resolve_paths(project / "home", project / "pipelines")
    engine = Engine(paths, load_config(paths.project), schedules=False, sensors=False)
    engine.start()
    try:
        extra = project / "pipelines" / "extra.py"
        extra.write_text("from engine import asset\n\n\n@asset\ndef first():\n    return 1\n")
        wait_for(lambda: "first" in engine.manifest().assets, timeout=10)
        extra.write_text("from engine import asset\n\n\n@asset\ndef second():\n    return 2\n")
        wait_for(lambda: "second" in engine.manifest().assets, timeout=10)
        assert "first" not in engine.manifest().assets
        extra.write_text("from engine import asset\n\n\n@asset\ndef second(:\n")
        wait_for(lambda: "extra.py" in engine.manifest().errors, timeout=10)
        assert "second" in engine.manifest().assets  # its last good definition keeps running
        extra.unlink()
        wait_for(lambda: "second" not in engine.manifest().assets, timeout=10)
        assert "extra.py" not in engine.manifest().errors
    finally:
        engine.stop()


def test_a_backfill_can_be_canceled_and_resumed(project: Path) -> None:
    from engine.service.daemon import Engine

    paths = resolve_paths(project / "home", project / "pipelines")
    engine = Engine(paths, load_config(paths.project), schedules=False, sensors=False, watch=False)
    engine.start()
    try:
        client = Client(project / "home", project / "pipelines")
        client.attach(engine)
        backfill_id = client.backfill(["orders"], first="2025-01-01", last="2025-01-12",
                                      max_parallel=2)  # fmt: skip
        wait_for(
            lambda: client.backfill_progress(backfill_id)["counts"].get(RunStatus.SUCCESS, 0) >= 2
        )
        client.backfill_action("cancel", backfill_id)
        info = wait_for(lambda: backfill_ended(client.backfill_progress(backfill_id)))
        assert info["status"] == BackfillStatus.CANCELED
        done = info["counts"].get(RunStatus.SUCCESS, 0)
        assert 2 <= done < 12 and info["counts"].get(RunStatus.CANCELED, 0) >= 1
        client.backfill_action("resume", backfill_id)
        info = wait_for(lambda: backfill_ended(client.backfill_progress(backfill_id)), timeout=60)
        assert info["status"] == BackfillStatus.SUCCESS and info["counts"] == {
            RunStatus.SUCCESS: 12
        }
    finally:
        engine.stop()


def test_an_unreachable_values_url_is_one_warning_not_a_failed_start(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.service.daemon import Engine

    pytest.importorskip("fsspec")
    values = "ftp://127.0.0.1:1/values"  # nothing listens on port 1: refused at once
    (project / "dagtop.toml").write_text(f'max_workers = 8\nvalues_dir = "{values}"\n')
    paths = resolve_paths(project / "home", project / "pipelines")
    caplog.set_level(logging.WARNING, logger="engine.executor.recovery")
    engine = Engine(paths, load_config(paths.project), schedules=False, sensors=False, watch=False)

    engine.start()
    try:
        assert engine.running
        records = wait_for(lambda: [r for r in caplog.records if "value sweep" in r.getMessage()])
        [record] = records
        message = record.getMessage()
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert "\n" not in message and values in message and "ConnectionRefusedError" in message
    finally:
        engine.stop()


def _importtime_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}


def test_with_a_daemon_up_materialize_goes_through_its_socket_without_storage(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    daemon = start_daemon()
    home = project / "home"
    wait_for(lambda: (home / "engine.sock").exists())
    cli = subprocess.run(dagtop(project, "materialize", "slow"), capture_output=True, text=True,
                         env=_importtime_env(), timeout=60)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "✓ slow" in cli.stdout and RunStatus.SUCCESS in cli.stdout.splitlines()[-1]
    # The daemon ran it, and this process never imported storage nor started steps itself.
    imported = {line.split("|")[-1].strip() for line in cli.stderr.splitlines() if "|" in line}
    assert "sqlalchemy" not in imported and "engine.executor.forkserver" not in imported
    assert daemon.poll() is None


def test_a_daemon_refuses_a_bad_selection_in_one_line(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    start_daemon()
    wait_for(lambda: (project / "home" / "engine.sock").exists())
    cli = subprocess.run(dagtop(project, "materialize", "nope"), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.startswith("dagtop: error:") and "nope" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


def test_a_backfill_is_followed_through_the_daemons_socket(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    start_daemon()
    wait_for(lambda: (project / "home" / "engine.sock").exists())
    cli = subprocess.run(
        dagtop(project, "backfill", "orders", "--from", "2025-01-01", "--to", "2025-01-04",
               "--json"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f'"status": "{RunStatus.SUCCESS}"' in cli.stdout and '"total": 4' in cli.stdout


def test_a_dead_daemons_socket_file_is_ignored(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    daemon = start_daemon()
    sock = project / "home" / "engine.sock"
    wait_for(sock.exists)
    os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()
    assert sock.exists()  # kill -9 leaves it behind
    cli = subprocess.run(dagtop(project, "materialize", "slow"), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert RunStatus.SUCCESS in cli.stdout.splitlines()[-1]


def test_a_materialize_whose_daemon_is_killed_mid_run_finishes_its_run_itself(
    project: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    daemon = start_daemon()
    wait_for(lambda: (project / "home" / "engine.sock").exists())
    client = Client(project / "home", project / "pipelines")
    cli = subprocess.Popen(dagtop(project, "materialize", "slow"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    # The daemon answered `run` and is pushing it when it dies: no engine will come after it.
    wait_for(lambda: any(s.status == "running" for r in client.runs(5) for s in r.steps))
    os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()
    try:
        out, err = cli.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        cli.kill()
        cli.communicate()
        pytest.fail("`dagtop materialize` still follows a run its dead engine left")
    assert cli.returncode == 0, err
    assert RunStatus.SUCCESS in out.splitlines()[-1]
    (run,) = client.runs(5)
    assert run.status == RunStatus.SUCCESS and [s.key for s in run.steps] == ["slow"]
