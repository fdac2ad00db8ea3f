"""`dagtop db`: migrate, export and import, as a user types them (real processes), and a
SQLite history moved into PostgreSQL end to end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import SQLModel

from engine.storage import transfer
from engine.storage.db import open_db, read_scope, session_scope
from engine.storage.models import HEAD, CheckRecord, Run, Toggle
from tests.engine.test_migrations import LEGACY

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
PIPELINE = textwrap.dedent(
    """
    from engine import CheckResult, asset, check


    @asset
    def numbers(context):
        context.add_metadata({"n": 3})
        return [1, 2, 3]


    @asset
    def total(numbers):
        return sum(numbers)


    @check(asset="total")
    def positive(total):
        return CheckResult(passed=total > 0)
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "numbers.py").write_text(PIPELINE)
    return tmp_path


def dagtop(project: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGTOP_DATABASE_URL"}
    if url:
        env["DAGTOP_DATABASE_URL"] = url
    base = [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


def _runs(project: Path, url: str | None = None) -> list[dict[str, object]]:
    done = dagtop(project, "runs", "--json", url=url)
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, object]] = json.loads(done.stdout)
    return runs


def test_a_sqlite_history_moves_into_postgresql(project: Path, pg_url: str) -> None:
    for selection in ("*", "total"):
        assert dagtop(project, "materialize", selection).returncode == 0
    before = _runs(project)
    export = project / "history.jsonl"
    done = dagtop(project, "db", "export", str(export))
    assert done.returncode == 0, done.stderr
    assert "2 run" in done.stdout and "check" in done.stdout

    done = dagtop(project, "db", "import", str(export), url=pg_url)
    assert done.returncode == 0, done.stderr
    assert "2 run" in done.stdout and "secret" not in done.stdout
    assert _runs(project, pg_url) == before  # every run, step, attempt and time, as it was

    # The imported history is live: lineage reads it, and new runs get fresh ids.
    done = dagtop(project, "lineage", "total", "--json", url=pg_url)
    assert done.returncode == 0, done.stderr
    assert dagtop(project, "materialize", "*", url=pg_url).returncode == 0
    after = _runs(project, pg_url)
    assert len(after) == 3 and after[1:] == before

    # Importing twice is refused: the target has history now.
    again = dagtop(project, "db", "import", str(export), url=pg_url)
    assert_one_line_error(again, "not empty")
    assert len(_runs(project, pg_url)) == 3


@pytest.mark.parametrize(("source", "target"), [("sqlite", "postgresql"), ("postgresql", "sqlite")])
def test_an_export_reads_back_row_for_row(
    request: pytest.FixtureRequest, tmp_path: Path, source: str, target: str
) -> None:
    urls = {
        "sqlite": f"sqlite:///{tmp_path / 'dagtop.db'}",
        "postgresql": request.getfixturevalue("pg_url"),
    }
    src = open_db(urls[source])
    with session_scope(src) as s:
        s.add(Run(id="r1", kind="assets", target="a", created_at=1_700_000_000.123456789))
        s.add(Toggle(kind="sensor", name="inbox", enabled=False, updated_at=2.5))
        s.add(
            CheckRecord(
                run_id="r1", asset="a", name="c", passed=True, error="two\nlines ünïcode",
                created_at=3.0,
            )
        )  # fmt: skip
    path = tmp_path / "export.jsonl"
    counts = transfer.export(src, path)
    assert counts["run"] == 1 and counts["toggle"] == 1 and counts["checkrecord"] == 1
    dst = open_db(urls[target])
    assert transfer.import_(dst, path) == counts
    for table in SQLModel.metadata.sorted_tables:
        if table.name in transfer.SKIPPED:
            continue
        with read_scope(src) as a, read_scope(dst) as b:
            rows_a = a.connection().execute(select(table).order_by(*table.primary_key)).all()
            rows_b = b.connection().execute(select(table).order_by(*table.primary_key)).all()
        assert rows_a == rows_b, table.name
    with session_scope(dst) as s:  # ids go on after the imported ones
        record = CheckRecord(run_id="r1", asset="a", name="d", passed=False, created_at=4.0)
        s.add(record)
        s.flush()
        assert record.id == 2


def test_migrate_upgrades_a_database_from_before_migrations(project: Path) -> None:
    home = project / "home"
    home.mkdir()
    with sqlite3.connect(home / "dagtop.db") as conn:
        conn.executescript((LEGACY / "8da044e.sql").read_text())
    done = dagtop(project, "db", "migrate")
    assert done.returncode == 0, done.stderr
    assert f"0001 (before migrations) → {HEAD}" in done.stdout
    done = dagtop(project, "db", "migrate")
    assert f"already at schema revision {HEAD}" in done.stdout
    assert [r["id"] for r in _runs(project)] == ["f3e55a4aae36", "5e3bc84e9860"]


def test_migrate_brings_postgresql_up_to_date(project: Path, pg_url: str) -> None:
    done = dagtop(project, "db", "migrate", url=pg_url)
    assert done.returncode == 0, done.stderr
    assert f"created at schema revision {HEAD}" in done.stdout
    assert _runs(project, pg_url) == []


def test_db_errors_are_one_line(project: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert_one_line_error(dagtop(project, "db", "import", str(junk)), "not JSON")
    assert_one_line_error(dagtop(project, "db", "import", str(tmp_path / "missing")), "missing")
    refused = dagtop(
        project, "db", "migrate", "--url", "postgresql+psycopg://me:hunter2@127.0.0.1:1/none"
    )
    assert_one_line_error(refused, "cannot open database")
    assert "hunter2" not in refused.stderr
