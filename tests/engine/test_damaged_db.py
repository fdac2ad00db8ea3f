"""A damaged history database: real SQLite files damaged on disk, the real `dagtop` command.

Every command answers a damaged, cut-short, empty or full database with one line on stderr
that names the file, says what is wrong and what to do, and a non-zero exit; the daemon and the
UI refuse to start on it, and no value file is deleted because the database could not be read.
`dagtop db check`, `db backup`, `db restore` and the rolling backups are here too.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_for

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
PIPELINE = textwrap.dedent(
    """
    from engine import DailyPartitions, asset

    days = DailyPartitions(start="2025-01-01")


    @asset(partitions=days)
    def orders(context):
        return list(range(100))


    @asset
    def total():
        return 5
    """
)


def dagtop(
    project: Path, *args: str, preexec_fn: Callable[[], object] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGTOP_DATABASE_URL"}
    base = [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
    return subprocess.run(
        [*base, *args], capture_output=True, text=True, timeout=60, env=env,
        stdin=subprocess.DEVNULL, preexec_fn=preexec_fn,
    )  # fmt: skip


def values(project: Path) -> dict[str, bytes]:
    """Every file under the home's values, with its content."""
    root = project / "home" / "values"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_one_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a history: three runs, each of a partition of `orders` and its value."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "shop.py").write_text(PIPELINE)
    done = dagtop(tmp_path, "backfill", "orders", "--from", "2025-01-01", "--to", "2025-01-03")
    assert done.returncode == 0, done.stderr
    assert len(values(tmp_path)) == 3
    return tmp_path


def _settle(db: Path) -> None:
    """Fold the write-ahead log into the file, as after a clean exit, so damage hits the data."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def damage_pages(db: Path) -> None:
    _settle(db)
    with db.open("r+b") as fh:
        fh.seek(8192)
        fh.write(os.urandom(8192))


def truncate(db: Path) -> None:
    _settle(db)
    os.truncate(db, 20_000)


def bad_header(db: Path) -> None:
    _settle(db)
    with db.open("r+b") as fh:
        fh.write(b"not a database!\0")


def empty(db: Path) -> None:
    _settle(db)
    os.truncate(db, 0)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "damaged pages": damage_pages,
    "truncated": truncate,
    "bad header": bad_header,
    "zero bytes": empty,
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_command_on_a_damaged_database_is_one_line_and_no_value_is_lost(
    project: Path, damage: str
) -> None:
    db = project / "home" / "dagtop.db"
    before = values(project)
    DAMAGES[damage](db)
    words = ("empty (0 bytes)",) if damage == "zero bytes" else ("damaged",)

    # () opens the UI: refused before its screen opens, as its first reads are checked.
    for args in ((), ("runs",), ("materialize", "total"), ("daemon",)):
        line = assert_one_line(dagtop(project, *args), str(db), *words)
        assert "no backup" in line and "move it" in line  # what to do, with no backup to restore

    check = dagtop(project, "db", "check")
    assert check.returncode == 1 and check.stdout.startswith("damaged: "), check
    assert values(project) == before  # every value file, byte for byte
    if damage == "zero bytes":
        assert db.stat().st_size == 0  # not silently made a new history


def test_a_zero_byte_database_in_a_home_without_history_is_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "shop.py").write_text(PIPELINE)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagtop.db").write_bytes(b"")
    done = dagtop(tmp_path, "materialize", "total")
    assert done.returncode == 0, done.stderr


def test_a_missing_database_beside_its_write_ahead_log_is_refused(project: Path) -> None:
    db = project / "home" / "dagtop.db"
    wal = db.with_name("dagtop.db-wal")
    wal.write_bytes(os.urandom(4096))  # the log of a history whose file went away
    db.rename(project / "elsewhere.db")
    assert_one_line(dagtop(project, "runs"), str(db), "missing", "write-ahead log")
    assert not db.exists() and wal.stat().st_size == 4096


def test_the_daemon_refuses_a_damaged_database_and_sweeps_nothing(project: Path) -> None:
    """The bug: the daemon started, and its sweep deleted every value of the unreadable rows."""
    db = project / "home" / "dagtop.db"
    before = values(project)
    damage_pages(db)
    started = time.monotonic()
    assert_one_line(dagtop(project, "daemon"), str(db), "quick check")
    assert time.monotonic() - started < 30
    assert values(project) == before
    # Refused before it touched anything: no -wal left behind.
    assert not db.with_name("dagtop.db-wal").exists()
    ui = dagtop(project)  # and so does the UI, before it takes the terminal
    assert_one_line(ui, str(db), "quick check")
    assert values(project) == before


def _start_daemon(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
         "daemon"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


@pytest.fixture
def daemon(project: Path) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        proc = _start_daemon(project)
        started.append(proc)
        wait_for(lambda: (project / "home" / "engine.sock").exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def _run_ids(project: Path) -> list[str]:
    done = dagtop(project, "runs", "--json")
    assert done.returncode == 0, done.stderr
    return [r["id"] for r in json.loads(done.stdout)]


def test_a_damaged_database_names_its_newest_backup_and_that_command_restores_it(
    project: Path,
) -> None:
    home = project / "home"
    db = home / "dagtop.db"
    runs = _run_ids(project)
    backup = home / "backups" / f"dagtop-{_stamp(0)}.db"  # as an engine names its own
    for older in (2, 1):
        (home / "backups").mkdir(exist_ok=True)
        (home / "backups" / f"dagtop-{_stamp(older)}.db").write_bytes(b"older")
    assert dagtop(project, "db", "backup", str(backup)).returncode == 0

    damage_pages(db)
    line = assert_one_line(dagtop(project, "runs"), str(db), "damaged", str(backup))
    command = shlex.split(line.split(" with: ", 1)[1])
    assert command[0] == "dagtop"
    restored = subprocess.run(
        [DAGTOP, *command[1:]], capture_output=True, text=True, timeout=60, cwd="/"
    )  # typed anywhere: the command names the home

    assert restored.returncode == 0, restored.stderr
    assert _run_ids(project) == runs
    [aside] = home.glob("dagtop.db.before-restore-*")
    assert aside.stat().st_size == db.stat().st_size  # the damaged file is kept, not deleted
    check = dagtop(project, "db", "check")
    assert check.returncode == 0 and check.stdout.startswith("ok: "), check


def test_restore_refuses_while_an_engine_has_the_database_open(
    project: Path, daemon: Callable[[], subprocess.Popen[str]]
) -> None:
    copy = project / "copy.db"
    assert dagtop(project, "db", "backup", str(copy)).returncode == 0
    daemon()
    db = project / "home" / "dagtop.db"
    before = db.stat().st_ino
    assert_one_line(dagtop(project, "db", "restore", str(copy)), "open in another process")
    assert db.stat().st_ino == before and not list(db.parent.glob("*.before-restore-*"))


def test_db_backup_copies_a_database_an_engine_is_writing(
    project: Path, daemon: Callable[[], subprocess.Popen[str]]
) -> None:
    daemon()
    submitted = subprocess.Popen(
        [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
         "backfill", "orders", "--from", "2025-02-01", "--to", "2025-02-12", "--no-wait"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    copies = []
    for i in range(2):  # while the daemon records runs
        copy = project / f"copy{i}.db"
        done = dagtop(project, "db", "backup", str(copy))
        assert done.returncode == 0, done.stderr
        assert f"to {copy}" in done.stdout and "checked" in done.stdout
        copies.append(copy)
    submitted.wait(timeout=60)
    for copy in copies:
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM run").fetchone()[0] >= 3
        conn.close()
        assert not copy.with_name(copy.name + "-wal").exists()  # one self-contained file
    again = dagtop(project, "db", "backup", str(copies[0]))
    assert_one_line(again, "exists")


def test_db_check_gives_a_verdict_and_an_exit_code(project: Path) -> None:
    ok = dagtop(project, "db", "check")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: {project / 'home' / 'dagtop.db'} passes")
    assert "3 runs" in ok.stdout
    damage_pages(project / "home" / "dagtop.db")
    for args in (("db", "check"), ("db", "check", "--quick")):
        bad = dagtop(project, *args)
        assert bad.returncode == 1 and len(bad.stdout.splitlines()) == 1, bad
        assert bad.stdout.startswith("damaged: ") and "Traceback" not in bad.stderr
    nothing = dagtop(project, "db", "check", "--url", f"sqlite:///{project / 'none.db'}")
    assert_one_line(nothing, "no history database")
    assert not (project / "none.db").exists()


def test_backup_and_restore_of_postgresql_say_what_to_use(project: Path, pg_url: str) -> None:
    done = dagtop(project, "db", "backup", str(project / "x.db"), "--url", pg_url)
    assert_one_line(done, "pg_dump")
    done = dagtop(project, "db", "restore", str(project / "pipelines" / "shop.py"), "--url", pg_url)
    assert_one_line(done, "pg_restore")


# --- a full disk ---------------------------------------------------------------------------------


@functools.cache
def _namespaces() -> bool:
    """Whether this machine lets us mount a tmpfs in a user namespace of our own."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def on_a_tiny_disk(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the Python `script` in a user and mount namespace of its own, where it mounts a
    tmpfs of its choosing on the folder given as its first argument (skips without one)."""
    if not _namespaces():
        pytest.skip("no user namespaces to mount a small tmpfs in")
    disk = tmp_path / "disk"
    disk.mkdir()
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", script,
         str(disk), *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


FILL = textwrap.dedent(
    """
    import os, shutil, subprocess, sys
    disk, project, leave = sys.argv[1], sys.argv[2], int(sys.argv[3])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk], check=True)
    base = [sys.argv[4], "--home", f"{disk}/home", "--pipelines", f"{project}/pipelines"]
    first = subprocess.run([*base, "materialize", "total"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    with open(f"{disk}/filler", "wb") as fh:  # the disk fills up, to `leave` bytes
        fh.write(b"x" * (shutil.disk_usage(disk).free - leave))
    for args in (["materialize", "total"], ["runs"],
                 ["backfill", "orders", "--from", "2025-03-01", "--to", "2025-03-09"]):
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        print(done.returncode, done.stderr.replace(chr(10), "<NL>"), flush=True)
    """
)


@pytest.mark.parametrize("leave", [0, 40_000])
def test_a_full_disk_is_one_line_that_says_so(project: Path, tmp_path: Path, leave: int) -> None:
    """The real error path: a home on a tiny tmpfs that fills up (ENOSPC from the kernel),
    with no room at all (SQLite cannot even map its shared memory to read) or a little (the
    run starts, and recording it fails)."""
    done = on_a_tiny_disk(tmp_path, FILL, str(project), str(leave), DAGTOP)
    disk = tmp_path / "disk"
    assert done.returncode == 0, done.stderr
    results = [line.split(" ", 1) for line in done.stdout.splitlines()]
    assert len(results) == 3, done.stdout
    for code, stderr in results[:1] + results[2:]:  # the commands that write
        assert code != "0" and "Traceback" not in stderr and stderr.count("<NL>") == 1
        assert str(disk / "home" / "dagtop.db") in stderr and "is full" in stderr, stderr
    code, stderr = results[1]  # reading needs room for SQLite's shared memory
    assert code == "0" or ("is full" in stderr and "Traceback" not in stderr), stderr


def test_a_write_the_file_system_refuses_is_one_line(project: Path) -> None:
    """Portable cousin of the full disk: a file size limit makes every growing write fail."""
    db = project / "home" / "dagtop.db"
    _settle(db)

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 << 10, 48 << 10))

    for args in (("materialize", "total"), ("backfill", "orders", "--from", "2025-04-01",
                                             "--to", "2025-04-09")):  # fmt: skip
        assert_one_line(dagtop(project, *args, preexec_fn=limited), str(db))
    assert len(values(project)) >= 3


# --- rolling backups and a clean exit ------------------------------------------------------------


def _stamp(ago_days: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() - ago_days * 86_400))


def test_an_engine_keeps_the_newest_backups_and_only_deletes_its_own(project: Path) -> None:
    from engine.loading.config import load_config, resolve_paths
    from engine.service.daemon import Engine

    (project / "dagtop.toml").write_text('backups = 2\nbackup_every = "12h"\n')
    backups = project / "home" / "backups"
    backups.mkdir()
    old = [backups / f"dagtop-{_stamp(days)}.db" for days in (3, 2, 1)]
    for path in old:
        path.write_bytes(b"an old backup")
    mine = backups / "my-own-copy.db"
    mine.write_bytes(b"the user's")
    paths = resolve_paths(project / "home", project / "pipelines")
    engine = Engine(paths, load_config(project), schedules=False, sensors=False, watch=False)
    engine.start()
    try:
        new = wait_for(lambda: [p for p in backups.glob("dagtop-*.db") if p not in old])
    finally:
        engine.stop()
    kept = sorted(backups.glob("dagtop-*.db"))
    assert kept == [old[-1], *new]
    assert mine.read_bytes() == b"the user's"
    conn = sqlite3.connect(kept[-1])
    assert conn.execute("SELECT count(*) FROM run").fetchone()[0] == 3
    conn.close()

    # Not due again for 12 hours: a restart takes none.
    engine = Engine(paths, load_config(project), schedules=False, sensors=False, watch=False)
    engine.start()
    time.sleep(0.5)
    engine.stop()
    assert sorted(backups.glob("dagtop-*.db")) == kept


def test_a_damaged_database_is_never_rotated_over_a_good_backup(project: Path) -> None:
    from engine.errors import StorageError
    from engine.storage import backup
    from engine.storage.db import connect

    db = project / "home" / "dagtop.db"
    good = db.parent / "backups" / f"dagtop-{_stamp(1)}.db"
    good.parent.mkdir()
    shutil.copy(db, good)
    damage_pages(db)
    engine = connect(f"sqlite:///{db}")
    with pytest.raises(StorageError, match="damaged"):
        backup.rolling_backup(engine, keep=1)
    engine.dispose()
    assert [p.name for p in good.parent.iterdir()] == [good.name]


def test_no_write_ahead_log_is_left_after_a_clean_exit(
    project: Path, daemon: Callable[[], subprocess.Popen[str]]
) -> None:
    home = project / "home"

    def leftovers() -> list[str]:
        return sorted(p.name for p in home.glob("dagtop.db-*"))

    assert dagtop(project, "materialize", "total").returncode == 0  # a command that wrote
    assert leftovers() == []
    proc = daemon()
    assert dagtop(project, "materialize", "total").returncode == 0  # through the daemon
    assert leftovers() != []  # the daemon has it open
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert leftovers() == []


STOPS = textwrap.dedent(
    """
    import json, os, shutil, subprocess, sys, time
    disk, project = sys.argv[1], sys.argv[2]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk], check=True)
    from engine.client import Client, RunRequest
    client = Client(home=f"{disk}/home", pipelines=f"{project}/pipelines")
    engine = client.start_engine(kind="tui")  # embedded, as the UI's
    events = []
    engine.subscribe(lambda event: events.append((event.kind, event.ref)))
    assert client.materialize(["total"]).status == "success"
    with open(f"{disk}/filler", "wb") as fh:  # room for a run's row, not for running it
        fh.write(b"x" * (shutil.disk_usage(disk).free - 60_000))
    for _ in range(5):
        try:
            client.submit(RunRequest(selection=("total",)))
        except Exception:
            pass
        time.sleep(0.3)
    deadline = time.time() + 30
    while time.time() < deadline and not any(kind == "stopped" for kind, _ in events):
        time.sleep(0.1)
    print(json.dumps([ref for kind, ref in events if kind == "stopped"]), flush=True)
    os._exit(0)
    """
)


def test_an_engine_whose_disk_fills_up_tells_its_ui_why_it_stopped(
    project: Path, tmp_path: Path
) -> None:
    """The embedded engine's coordinator fails on a full disk (the real ENOSPC of a tiny
    tmpfs): the engine stops, and its listeners (the UI) hear why, once, in one line."""
    done = on_a_tiny_disk(tmp_path, STOPS, str(project))
    disk = tmp_path / "disk"
    assert done.returncode == 0, done.stderr
    [why] = json.loads(done.stdout.splitlines()[-1])
    assert str(disk / "home" / "dagtop.db") in why and "is full" in why and "\n" not in why
