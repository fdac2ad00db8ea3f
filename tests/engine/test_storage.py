"""Storage on both backends (a temp SQLite file, a throwaway PostgreSQL database): WAL, the
repository's queries, concurrent writers, and the status chokepoint. Schema versions are in
test_migrations.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session

from engine.errors import RunNotFound, StorageError
from engine.status import IllegalTransition, RunStatus, StepStatus, transition_run, transition_step
from engine.storage import repo
from engine.storage.db import open_db, read_scope, session_scope
from engine.storage.models import Materialization, Run, Step, StepAttempt


@pytest.fixture
def db(db_url: str) -> SAEngine:
    return open_db(db_url)


def _run(run_id: str, created: float, status: str = RunStatus.QUEUED) -> Run:
    return Run(id=run_id, kind="assets", target="a", created_at=created, status=status)


def _ran(s: Session, run_id: str, status: str, asset: str = "a") -> None:
    """A run of `asset` whose first attempt is recorded, as an engine records them."""
    ended = RunStatus.RUNNING if status == RunStatus.RUNNING else status
    repo.add_run(s, _run(run_id, 1.0, status=status), [])
    step = Step(run_id=run_id, key=asset, kind="asset", status=ended, attempts=1)
    s.add(step)
    s.flush()
    assert step.id is not None
    s.add(
        StepAttempt(
            step_id=step.id,
            run_id=run_id,
            key=asset,
            attempt=1,
            status=ended,
            log_path="x.log",
            started_at=1.0,
        )
    )


def test_a_new_sqlite_database_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'dagtop.db'}")
    with db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 5000


def test_an_unusable_database_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((StorageError, OSError)):
        open_db(f"sqlite:///{blocker / 'sub' / 'dagtop.db'}")


def test_runs_come_back_newest_first_and_by_unique_prefix(db: SAEngine) -> None:
    with session_scope(db) as s:
        for i, rid in enumerate(["aaa111", "aab222", "bbb333"]):
            repo.add_run(s, _run(rid, 100.0 + i), [])
    with read_scope(db) as s:
        assert [r.id for r in repo.recent_runs(s, 10)] == ["bbb333", "aab222", "aaa111"]
        assert repo.find_run(s, "bbb").id == "bbb333"
        with pytest.raises(RunNotFound, match="ambiguous"):
            repo.find_run(s, "aa")
        with pytest.raises(RunNotFound, match="no run"):
            repo.find_run(s, "ccc")


def test_a_new_materialization_supersedes_the_old_value(db: SAEngine, tmp_path: Path) -> None:
    old_file, new_file = tmp_path / "old.pkl", tmp_path / "new.pkl"
    with session_scope(db) as s:
        repo.add_materialization(
            s,
            Materialization(
                asset="a", partition="p", run_id="r1", created_at=1.0, value_path=str(old_file)
            ),  # fmt: skip
        )
    with session_scope(db) as s:
        stale = repo.add_materialization(
            s,
            Materialization(
                asset="a", partition="p", run_id="r2", created_at=2.0, value_path=str(new_file)
            ),  # fmt: skip
        )
    assert stale == [str(old_file)]
    with read_scope(db) as s:
        latest = repo.latest_materialization(s, "a", "p")
        assert latest is not None and latest.run_id == "r2"
        assert repo.referenced_values(s) == {str(new_file)}


def test_the_status_chokepoint_refuses_impossible_transitions() -> None:
    run = _run("r", 1.0)
    transition_run(run, RunStatus.RUNNING)
    transition_run(run, RunStatus.SUCCESS)
    with pytest.raises(IllegalTransition):
        transition_run(run, RunStatus.RUNNING)
    step = Step(run_id="r", key="k", kind="asset", status=StepStatus.SUCCESS)
    with pytest.raises(IllegalTransition):
        transition_step(step, StepStatus.QUEUED)


def test_commands_are_taken_once(db: SAEngine) -> None:
    with session_scope(db) as s:
        repo.add_command(s, "run", {"selection": ["a"]}, 1.0)
    taken: list[int] = []

    def take() -> None:
        with session_scope(db) as s:
            taken.extend(c.id or 0 for c in repo.take_commands(s, 2.0))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 1


def test_concurrent_writers_wait_instead_of_failing(db: SAEngine) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(50):
                with session_scope(db) as s:
                    repo.add_run(s, _run(f"w{n}-{i}", float(i)), [])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(db) as s:
        assert len(repo.recent_runs(s, 1000)) == 200


def test_samples_are_replaced_by_the_bounded_series(db: SAEngine) -> None:
    row = {"attempt_id": 7, "t": 0.0, "cpu_percent": 1.0, "cpu_seconds": 0.1, "rss_bytes": 1}
    with session_scope(db) as s:
        repo.add_samples(s, [{**row, "t": float(i)} for i in range(500)])
    with session_scope(db) as s:
        repo.replace_samples(s, 7, [{**row, "t": float(i)} for i in range(0, 500, 10)])
    with read_scope(db) as s:
        assert len(repo.samples_of(s, 7)) == 50


def test_database_url_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.client import Client

    target = tmp_path / "elsewhere" / "history.db"
    monkeypatch.setenv("DAGTOP_DATABASE_URL", f"sqlite:///{target}")
    client = Client(home=tmp_path / "home", pipelines=tmp_path)
    assert client.runs() == []
    assert target.is_file()


def test_the_project_config_names_the_database_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    from engine.client import Client

    monkeypatch.delenv("DAGTOP_DATABASE_URL", raising=False)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "dagtop.toml").write_text(f"database_url = {db_url!r}\n")
    with session_scope(open_db(db_url)) as s:
        repo.add_run(s, _run("configured1", 1.0), [])
    client = Client(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    assert [r.id for r in client.runs()] == ["configured1"]
    assert not (tmp_path / "home" / "dagtop.db").exists()
    monkeypatch.setenv("DAGTOP_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    client = Client(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    assert client.runs() == []


def test_a_database_url_that_is_not_a_url_is_a_config_error(tmp_path: Path) -> None:
    from engine.errors import ConfigError
    from engine.loading.config import load_config

    (tmp_path / "dagtop.toml").write_text('database_url = "history.db"\n')
    with pytest.raises(ConfigError, match="database_url"):
        load_config(tmp_path)


def test_the_value_sweep_spares_running_runs_and_recorded_values(
    db: SAEngine, tmp_path: Path
) -> None:
    from engine.executor.recovery import sweep_values
    from engine.loading.config import Paths

    paths = Paths(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    folder = paths.values / "a" / "_"
    folder.mkdir(parents=True)
    running, done, recorded = (folder / f"{rid}.1.pkl" for rid in ("run1", "done1", "rec1"))
    for path in (running, done, recorded):
        path.write_bytes(b"x")
    with session_scope(db) as s:
        _ran(s, "run1", RunStatus.RUNNING)
        _ran(s, "done1", RunStatus.FAILED)
        _ran(s, "rec1", RunStatus.SUCCESS)
        repo.add_materialization(
            s, Materialization(asset="a", run_id="rec1", created_at=1.0, value_path=str(recorded))
        )
    # A run in another process may be writing its value right now: only the finished run's
    # unrecorded file goes.
    assert sweep_values(db, paths) == 1
    assert running.exists() and recorded.exists() and not done.exists()


def test_the_value_sweep_covers_values_at_a_url(db: SAEngine, tmp_path: Path) -> None:
    import os
    import time

    from engine.executor.recovery import TMP_AGE, sweep_values
    from engine.loading.config import Paths

    pytest.importorskip("fsspec")
    paths = Paths(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    shared = tmp_path / "shared"
    url = f"file://{shared}"
    folder = shared / "a" / "_"
    for sub in (folder, shared / "b" / "_", shared / "@tasks" / "done1"):
        sub.mkdir(parents=True)
    running, done, recorded = (folder / f"{rid}.1.pkl" for rid in ("run1", "done1", "rec1"))
    respelled = shared / "b" / "_" / "rec2.1.pkl"
    task_value = shared / "@tasks" / "done1" / "t.1.pkl"
    stale, fresh = folder / ".tmp-done1.1.pkl-1-aa.part", folder / ".tmp-done1.1.pkl-2-bb.part"
    for path in (running, done, recorded, respelled, task_value, stale, fresh):
        path.write_bytes(b"x")
    long_ago = time.time() - TMP_AGE - 60
    os.utime(stale, (long_ago, long_ago))
    with session_scope(db) as s:
        _ran(s, "run1", RunStatus.RUNNING)
        _ran(s, "done1", RunStatus.FAILED)
        _ran(s, "rec1", RunStatus.SUCCESS)
        _ran(s, "rec2", RunStatus.SUCCESS, asset="b")
        # The second record spells its URL another way than the sweep's listing does.
        for rid, where in (("rec1", f"{url}/a/_/rec1.1.pkl"), ("rec2", f"file:{respelled}")):
            asset = where.split("/")[-3]
            repo.add_materialization(
                s, Materialization(asset=asset, run_id=rid, created_at=1.0, value_path=where)
            )

    removed = sweep_values(db, paths, url)

    assert not done.exists() and not stale.exists()
    for kept in (running, recorded, respelled, task_value, fresh):
        assert kept.exists(), kept
    assert removed == 2


def test_many_processes_and_threads_may_check_one_home_at_once(tmp_path: Path) -> None:
    import threading

    from engine.client import Client

    home = tmp_path / "home"
    errors: list[Exception] = []
    start = threading.Barrier(8)

    def check() -> None:
        client = Client(home, tmp_path / "pipelines")
        start.wait()
        for _ in range(200):
            try:
                client._ensure_home()
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in home.iterdir()] == []  # no probe left behind
