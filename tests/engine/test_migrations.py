"""The versioned schema: Alembic migrations and the models agree on both backends, databases
from before migrations are upgraded in place with their history, newer ones are refused, and
opening an up-to-date database never imports Alembic."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import Session, SQLModel, select

from engine.errors import StorageError
from engine.status import RunStatus
from engine.storage import repo, schema
from engine.storage.db import (
    connect,
    ensure_schema,
    open_db,
    read_scope,
    revision,
    session_scope,
)
from engine.storage.models import HEAD, Meta, Run, StepAttempt


def schema_version(s: Session) -> str | None:
    """What `meta` says, which dagtop releases from before migrations read."""
    row = s.get(Meta, "schema_version")
    return None if row is None else row.value


LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
ROOT = Path(__file__).resolve().parents[2]


def _legacy_db(tmp_path: Path, dump: str) -> str:
    """A SQLite file restored from a dump of a database an earlier dagtop wrote."""
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((LEGACY / dump).read_text())
    return f"sqlite:///{path}"


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), SQLModel.metadata))
    finally:
        engine.dispose()


def test_head_is_the_newest_migration() -> None:
    assert schema.revisions() == ["0001", "0002", "0003", "tasks", "auto"]
    assert schema.revisions()[-1] == HEAD


def test_the_migrations_build_exactly_the_models_schema(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(schema._config(conn), "head")
    engine.dispose()
    assert _schema_diff(db_url) == []
    assert revision(open_db(db_url)) == HEAD


def test_a_new_database_is_created_from_the_models_and_stamped(db_url: str) -> None:
    db = open_db(db_url)
    assert revision(db) == HEAD
    assert _schema_diff(db_url) == []
    with read_scope(db) as s:
        assert schema_version(s) == "2"


@pytest.mark.parametrize(
    ("dump", "was", "worker"), [("8da044e.sql", "0001", None), ("d5a0c62.sql", "0002", "local")]
)
def test_a_database_from_before_migrations_is_upgraded_in_place(
    tmp_path: Path, dump: str, was: str, worker: str | None
) -> None:
    url = _legacy_db(tmp_path, dump)
    assert revision(connect(url)) is None
    assert ensure_schema(connect(url)) == (was, HEAD)
    db = open_db(url)
    assert revision(db) == HEAD
    with read_scope(db) as s:
        runs = repo.recent_runs(s, 10)
        assert {r.status for r in runs} == {RunStatus.SUCCESS} and len(runs) == 2
        attempts = list(s.exec(select(StepAttempt)).all())
        assert len(attempts) == 3 and all(a.worker == worker for a in attempts)
        # An old release reads only this row: it now refuses the database.
        assert schema_version(s) == "2"
    with session_scope(db) as s:  # and new history goes in beside the old
        repo.add_run(s, Run(id="new1", kind="assets", target="x", created_at=2e9), [])
    # Only the declared INTEGER of byte counts differs: SQLite stores it as it stores BIGINT.
    for diff in _schema_diff(url):
        assert isinstance(diff, list) and len(diff) == 1, diff
        op, *_, old, new = diff[0]
        assert (op, str(old), str(new)) == ("modify_type", "INTEGER", "BIGINT"), diff


def test_opening_an_old_database_upgrades_it(tmp_path: Path) -> None:
    db = open_db(_legacy_db(tmp_path, "8da044e.sql"))
    assert "worker" in {c["name"] for c in inspect(db).get_columns("stepattempt")}


def test_a_newer_database_is_refused(db_url: str) -> None:
    db = open_db(db_url)
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StorageError, match="newer dagtop"):
        open_db(db_url)


def test_a_legacy_database_that_says_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = _legacy_db(tmp_path, "8da044e.sql")
    with sqlite3.connect(url.split("///", 1)[1]) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="newer dagtop"):
        open_db(url)


def test_postgresql_is_upgraded_only_on_purpose(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        command.upgrade(schema._config(conn), "0001")
    engine.dispose()
    with pytest.raises(StorageError, match="dagtop db migrate"):
        open_db(pg_url)
    assert ensure_schema(connect(pg_url)) == ("0001", HEAD)
    assert revision(open_db(pg_url)) == HEAD


def open_at_once(url: str, engines: int = 4) -> list[BaseException]:
    """Open `url` from `engines` threads at the same moment; the errors they met."""
    errors: list[BaseException] = []
    start = threading.Barrier(engines)

    def open_it() -> None:
        start.wait()
        try:
            open_db(url)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_engines_opening_a_new_database_at_once_create_it_once(db_url: str) -> None:
    assert open_at_once(db_url) == []
    assert revision(open_db(db_url)) == HEAD


def test_opening_an_up_to_date_database_does_not_import_alembic(db_url: str) -> None:
    open_db(db_url)
    code = (
        "import sys; from engine.storage.db import open_db, revision; "
        f"db = open_db({db_url!r}); assert revision(db) == {HEAD!r}; "
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"


def test_new_sqlite_files_opened_by_many_threads_at_once_never_say_locked(tmp_path: Path) -> None:
    # Switching a new file to WAL answers "locked" at once (no busy wait) while another
    # connection creates the schema; a few percent of such races failed before the retry.
    errors = [e for i in range(60) for e in open_at_once(f"sqlite:///{tmp_path / f'{i}.db'}")]
    assert errors == []


def test_a_database_at_0002_is_upgraded_in_place_with_its_steps_partitions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(schema._config(conn), "0002")
        conn.exec_driver_sql(
            "INSERT INTO run (id, kind, target, selection, partition, params, trigger, status, "
            "created_at, updated_at, cancel_requested) VALUES "
            "('r1', 'assets', 'raw', '[\"raw\"]', '2025-01-01', '{}', 'manual', 'success', "
            "1.0, 1.0, 0), ('r2', 'pipeline', 'etl', '\"etl\"', NULL, '{}', 'manual', "
            "'success', 2.0, 2.0, 0)"
        )
        conn.exec_driver_sql(
            "INSERT INTO step (run_id, key, kind, position, upstream, status, attempts, "
            "max_attempts) VALUES ('r1', 'raw', 'asset', 0, '[]', 'success', 1, 1), "
            "('r2', 'extract', 'python', 0, '[]', 'success', 1, 1)"
        )
    engine.dispose()
    db = open_db(url)  # SQLite upgrades on open
    assert revision(db) == HEAD
    with read_scope(db) as s:
        steps = repo.steps_of(s, ["r1", "r2"])
        assert [st.partition for st in steps["r1"]] == ["2025-01-01"]
        assert [st.partition for st in steps["r2"]] == [None]
        assert repo.newest_steps_per_partition(s, "raw")["2025-01-01"].run_id == "r1"
    assert {"ix_step_key", "ix_step_key_partition"} <= {
        i["name"] for i in inspect(db).get_indexes("step")
    }
    assert _schema_diff(url) == []
