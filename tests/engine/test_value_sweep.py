"""The start-up value sweep deletes only what is its own: a real daemon on a home whose values
folder is a link to a folder that also holds the user's files (a common move to a bigger disk)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.status import RunStatus
from tests.engine.test_damaged_db import PIPELINE, dagtop, values

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))


def _recorded(project: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(project / "home" / "dagtop.db")
    try:
        return conn.execute("SELECT run_id, value_path FROM materialization").fetchall()
    finally:
        conn.close()


def test_the_sweep_keeps_the_users_files_and_values_of_runs_it_does_not_know(
    tmp_path: Path,
) -> None:
    project = tmp_path
    (project / "pipelines").mkdir()
    (project / "pipelines" / "shop.py").write_text(PIPELINE)
    elsewhere = tmp_path / "big-disk" / "dagtop-values"
    elsewhere.mkdir(parents=True)
    (project / "home").mkdir()
    (project / "home" / "values").symlink_to(elsewhere)
    done = dagtop(project, "backfill", "orders", "--from", "2025-01-01", "--to", "2025-01-02")
    assert done.returncode == 0, done.stderr
    [(run_id, recorded), _] = sorted(_recorded(project))
    assert Path(recorded).parent.parent.parent == project / "home" / "values"

    mine = {
        "precious.txt": b"the user's",
        "sub/other.csv": b"a,b\n",
        "orders/notes.txt": b"beside the partitions",
        "orders/2025-01-01/notes.txt": b"beside a value",
        # Laid out as a value, of a run this database does not know (a restored backup's
        # newer runs, another history's): not provably unrecorded, so it stays.
        "orders/2025-01-05/0123456789ab.1.pkl": b"unknown run",
        "orders/2025-01-05/.tmp-0123456789ab.1.pkl-x1y2.part": b"unknown run's temp",
    }
    for rel, data in mine.items():
        (elsewhere / rel).parent.mkdir(parents=True, exist_ok=True)
        (elsewhere / rel).write_bytes(data)
    # A crash between a value's rename and its record: attempt 1 of a known, ended run.
    leftover = elsewhere / "orders" / "2025-01-07" / f"{run_id}.1.pkl"
    leftover.parent.mkdir()
    leftover.write_bytes(b"unrecorded")
    stale_temp = leftover.with_name(f".tmp-{run_id}.1.pkl-abcd.part")
    stale_temp.write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale_temp, (hours_ago, hours_ago))
    before = values(project)

    daemon = subprocess.Popen(
        [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
         "daemon"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (project / "home" / "engine.sock").exists() and time.monotonic() < deadline:
            assert daemon.poll() is None
            time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0

    after = values(project)
    for rel, data in mine.items():
        assert (elsewhere / rel).read_bytes() == data, rel
    assert not leftover.exists() and not stale_temp.exists()
    assert {k: v for k, v in before.items() if "2025-01-07" not in k} == after
    assert (elsewhere / "orders" / "2025-01-01").is_dir()
    log = (project / "home" / "daemon.log").read_text()
    [kept] = [line for line in log.splitlines() if "kept" in line]
    assert "4 file(s) that are not dagtop's values" in kept and "precious.txt" in kept
    assert "2 value file(s) of runs this database does not record" in kept
    assert "removed 2 unrecorded value file(s)" in log
    runs = json.loads(dagtop(project, "runs", "--json").stdout)
    assert len(runs) == 2 and all(r["status"] == RunStatus.SUCCESS for r in runs)


def test_the_sweep_of_a_values_url_keeps_what_is_not_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.executor.recovery import sweep_values
    from engine.loading.config import Paths
    from engine.storage.db import open_db

    pytest.importorskip("fsspec")
    project = tmp_path
    (project / "pipelines").mkdir()
    (project / "pipelines" / "shop.py").write_text(PIPELINE)
    shared = tmp_path / "shared"
    url = f"file://{shared}"
    (project / "dagtop.toml").write_text(f'values_dir = "{url}"\n')
    done = dagtop(project, "backfill", "orders", "--from", "2025-01-01", "--to", "2025-01-02")
    assert done.returncode == 0, done.stderr
    [(run_id, recorded), _] = sorted(_recorded(project))
    assert recorded.startswith(url)
    foreign = [shared / "precious.txt", shared / "sub" / "deeper" / "x" / "y.csv"]
    unknown = shared / "orders" / "2025-01-05" / "0123456789ab.1.pkl"
    leftover = shared / "orders" / "2025-01-07" / f"{run_id}.1.pkl"
    for path in (*foreign, unknown, leftover):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    paths = Paths(home=project / "home", pipelines=project / "pipelines")
    db = open_db(f"sqlite:///{project / 'home' / 'dagtop.db'}")
    caplog.set_level(logging.INFO, logger="engine.executor.recovery")

    assert sweep_values(db, paths, url) == 1

    assert not leftover.exists()
    assert all(p.exists() for p in (*foreign, unknown))
    assert all(Path(p.removeprefix("file://")).exists() for _, p in _recorded(project))
    [kept] = [r.getMessage() for r in caplog.records if "kept" in r.getMessage()]
    assert "1 file(s) that are not dagtop's values (precious.txt)" in kept
    assert "1 value file(s) of runs this database does not record" in kept
    db.dispose()
