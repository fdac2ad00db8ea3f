"""File-drop sensors against real watchdog observers, real files and a real SQLite database."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.automation.sensors import SensorRunner, name_matches
from engine.errors import EngineError
from engine.history.plan import record
from engine.loading.loader import load
from engine.loading.manifest import Manifest
from engine.status import RunStatus
from engine.storage import repo
from engine.storage.db import open_db, read_scope, session_scope
from engine.storage.models import Run, SensorFile, Step, Toggle
from tests import waiting
from tests.postgres import BACKENDS, database_for

SETTLE = 0.2
QUIET = SETTLE * 3  # long enough for a settled candidate to be claimed if it were one

PIPELINE = f"""
from engine import DailyPartitions, Pipeline, asset, file_sensor, task


@asset
def ingest(context):
    return context.params["path"]


@asset(partitions=DailyPartitions(start="2024-01-01"))
def daily(context):
    return context.partition


with Pipeline("load_tasks") as load_tasks:

    @task
    def load(context):
        return context.params["path"]


file_sensor("inbox", path="inbox", target="ingest", pattern="*.csv", settle={SETTLE})
file_sensor("anything", path="anybox", target=ingest, settle={SETTLE})
file_sensor("deep", path="tree", target="ingest", pattern="*.csv", recursive=True, settle={SETTLE})
file_sensor("shallow", path="tree", target="ingest", pattern="*.csv", settle={SETTLE})
file_sensor("partitioned", path="badbox", target="daily", settle={SETTLE})
file_sensor("tasks", path="taskbox", target=load_tasks, settle={SETTLE})
"""


@dataclass
class Project:
    root: Path
    manifest: Manifest
    db: SAEngine
    started: list[str] = field(default_factory=list)
    runners: list[SensorRunner] = field(default_factory=list)

    def folder(self, name: str) -> Path:
        return self.root / name

    def runner(self, *, start: bool = True) -> SensorRunner:
        def record_run(session: Any, request: Any) -> str:
            return record(session, self.manifest, request)

        runner = SensorRunner(self.db, record_run, self.started.append)
        self.runners.append(runner)
        if start:
            runner.start()
        runner.sync(self.manifest)
        return runner

    def runs(self, sensor: str | None = None) -> list[Run]:
        with read_scope(self.db) as session:
            rows = session.exec(select(Run).order_by(col(Run.created_at))).all()
        return [r for r in rows if sensor is None or r.trigger_ref == sensor]

    def paths(self, sensor: str | None = None) -> list[str]:
        return [json.loads(r.params)["path"] for r in self.runs(sensor)]

    def cursor(self, sensor: str | None = None) -> list[SensorFile]:
        with read_scope(self.db) as session:
            rows = session.exec(select(SensorFile).order_by(col(SensorFile.id))).all()
        return [r for r in rows if sensor is None or r.sensor == sensor]


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    (tmp_path / "flow.py").write_text(PIPELINE)
    for name in ("inbox", "anybox", "tree", "badbox", "taskbox"):
        (tmp_path / name).mkdir()
    manifest = load(tmp_path)
    assert manifest.ok, manifest.errors
    db = open_db(database_for(request, tmp_path))
    proj = Project(root=tmp_path, manifest=manifest, db=db)
    yield proj
    for runner in proj.runners:
        runner.stop()
    db.dispose()


T = TypeVar("T")


def wait_for(cond: Callable[[], T | None], timeout: float = 5.0, what: str | None = None) -> T:
    """`tests.waiting.wait_for`, asking often: a sensor's poll runs at each ask."""
    return waiting.wait_for(cond, timeout, what, every=0.02)


# --- the basics -------------------------------------------------------------------------------


def test_a_dropped_file_starts_exactly_one_run(project: Project) -> None:
    runner = project.runner()
    inbox = project.folder("inbox")
    (inbox / "notes.txt").write_text("not a csv")
    (inbox / "sales.csv").write_text("a,b\n1,2\n")

    wait_for(lambda: project.started, what="a run")
    time.sleep(QUIET)
    assert len(project.started) == 1
    [run] = project.runs()
    assert run.id == project.started[0]
    assert run.trigger == "sensor" and run.trigger_ref == "inbox"
    assert run.kind == "assets" and json.loads(run.selection) == ["ingest"]
    assert json.loads(run.params) == {"path": str(inbox / "sales.csv")}

    [row] = project.cursor("inbox")
    st = (inbox / "sales.csv").stat()
    assert (row.size, row.mtime_ns, row.run_id) == (st.st_size, st.st_mtime_ns, run.id)

    status = {s.name: s for s in runner.status()}
    assert set(status) == set(project.manifest.sensors)
    inbox_status = status["inbox"]
    assert inbox_status.files_seen == 1 and inbox_status.enabled
    assert inbox_status.last_file == str(inbox / "sales.csv")
    assert inbox_status.last_run_id == run.id and inbox_status.last_seen_at is not None
    assert (inbox_status.pattern, inbox_status.target) == ("*.csv", "ingest")
    assert status["tasks"].target == "load_tasks" and status["tasks"].files_seen == 0

    began = time.monotonic()
    runner.stop()
    assert time.monotonic() - began < 1.5


def test_a_pipeline_target_gets_the_path_too(project: Project) -> None:
    project.runner()
    (project.folder("taskbox") / "job.json").write_text("{}")
    wait_for(lambda: project.started, what="a run")
    [run] = project.runs()
    assert (run.kind, run.target, run.trigger_ref) == ("pipeline", "load_tasks", "tasks")
    assert json.loads(run.params)["path"] == str(project.folder("taskbox") / "job.json")
    with read_scope(project.db) as session:
        steps = session.exec(select(Step).where(Step.run_id == run.id)).all()
    assert [s.key for s in steps] == ["load"]


def test_a_burst_of_a_thousand_files_starts_a_thousand_runs(project: Project) -> None:
    project.runner()
    inbox = project.folder("inbox")
    expected = {str(inbox / f"part-{i:04d}.csv") for i in range(1000)}
    for path in sorted(expected):
        Path(path).write_text(f"{path}\n")

    wait_for(lambda: len(project.started) >= 1000, timeout=20, what="1000 runs")
    time.sleep(QUIET)
    paths = project.paths()
    assert len(project.started) == 1000 == len(set(project.started))
    assert len(paths) == 1000 and set(paths) == expected
    assert len(project.cursor("inbox")) == 1000


def test_a_file_still_being_written_waits_until_it_stops_changing(project: Project) -> None:
    project.runner()
    path = project.folder("inbox") / "slow.csv"
    with path.open("w") as fh:
        for i in range(12):  # ~0.6 s of appends, each well inside the settle time
            fh.write(f"row {i}\n")
            fh.flush()
            time.sleep(0.05)
            assert not project.started, f"claimed after {i + 1} of 12 writes"

    wait_for(lambda: project.started, what="a run")
    time.sleep(QUIET)
    assert len(project.started) == 1
    [row] = project.cursor("inbox")
    assert row.size == path.stat().st_size == len("".join(f"row {i}\n" for i in range(12)))


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "data.csv", True),
        ("*", ".hidden.csv", False),
        ("*", "data.csv.part", False),
        ("*", "data.TMP", False),
        ("*", "video.mp4.crdownload", False),
        ("*", "~$report.xlsx", False),
        (".*", ".hidden.csv", True),
        ("*.tmp", "data.tmp", True),
        ("*.part", "data.part", True),
        ("*.csv", "data.json", False),
    ],
)
def test_temporary_names_match_only_when_asked_for(pattern: str, name: str, expected: bool) -> None:
    assert name_matches(pattern, name) is expected


def test_temporary_names_are_ignored_until_renamed(project: Project) -> None:
    project.runner()
    box = project.folder("anybox")
    for name in (".x.csv", "x.csv.part", "x.tmp", "y.crdownload", "~lock.docx"):
        (box / name).write_text("partial")
    (box / "a-folder").mkdir()
    outside = project.root / "outside.csv"
    outside.write_text("moved in")
    time.sleep(QUIET)
    assert not project.started

    (box / "x.csv.part").rename(box / "x.csv")
    (box / ".x.csv").rename(box / "z.csv")
    (box / "x.tmp").rename(box / "x.dat")
    outside.rename(box / "moved.csv")  # moved in from a folder nobody watches

    wait_for(lambda: len(project.started) >= 4, what="4 runs")
    time.sleep(QUIET)
    assert sorted(project.paths()) == sorted(
        str(box / n) for n in ("x.csv", "z.csv", "x.dat", "moved.csv")
    )


def test_odd_file_names_pass_through_intact(project: Project) -> None:
    project.runner()
    inbox = project.folder("inbox")
    names = ["with space.csv", "ünïcödé 数据.csv", "-leading dash.csv", "--flag.csv", "it's.csv"]
    for name in names:
        (inbox / name).write_text(name)
    wait_for(lambda: len(project.started) >= len(names), what="one run per file")
    assert sorted(project.paths()) == sorted(str(inbox / n) for n in names)


def test_a_file_whose_name_holds_a_control_character_is_skipped_with_one_log_line(
    project: Project, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Its path would be the run's `path` param, printed in lineage and logs: a newline there
    # could forge a line. Such a file starts nothing, is said once, and stops nothing else.
    caplog.set_level(logging.INFO, logger="engine.automation.sensors")
    monkeypatch.setattr(SensorRunner, "rescan_interval", SETTLE)  # rescans see them again
    project.runner()
    inbox = project.folder("inbox")
    bad = ["line\nbreak.csv", "forged\n✓ 1.csv", "esc\x1b[2J.csv", "tab\there.csv", "cr\r.csv"]
    for name in bad:
        (inbox / name).write_text("x")
    (inbox / "fine.csv").write_text("ok")
    wait_for(lambda: project.started, what="a run for the file with a plain name")
    time.sleep(SETTLE * 5)  # several rescans
    assert project.paths() == [str(inbox / "fine.csv")]
    assert [r.path for r in project.cursor()] == [str(inbox / "fine.csv")]
    said = [r.getMessage() for r in caplog.records if "control character" in r.getMessage()]
    assert len(said) == len(bad), said
    assert all("\n" not in m and "\r" not in m and "\x1b" not in m for m in said), said
    (inbox / "later.csv").write_text("the sensor still runs")
    wait_for(lambda: len(project.started) == 2, what="a run for a later file")


# --- versions and restarts --------------------------------------------------------------------


def test_new_content_is_a_new_run_and_an_unchanged_file_is_not(project: Project) -> None:
    runner = project.runner()
    path = project.folder("inbox") / "daily.csv"
    path.write_text("1\n")
    wait_for(lambda: len(project.started) == 1, what="the first run")

    path.write_text("1\n2\n")  # same path, new size and mtime: a new version
    wait_for(lambda: len(project.started) == 2, what="the second run")
    assert project.paths() == [str(path), str(path)]

    os.chmod(path, 0o600)  # an attribute event; size and mtime are unchanged
    time.sleep(QUIET)
    assert len(project.started) == 2

    runner.stop()  # a restart with nothing changed starts nothing
    restarted = project.runner()
    time.sleep(QUIET)
    assert restarted.poll() == []
    assert len(project.started) == 2 and len(project.cursor("inbox")) == 2


def test_files_dropped_while_stopped_run_once_after_a_restart(project: Project) -> None:
    inbox = project.folder("inbox")
    first = project.runner()
    (inbox / "a.csv").write_text("a")
    wait_for(lambda: len(project.started) == 1, what="a run")
    first.stop()

    (inbox / "b.csv").write_text("b")
    (inbox / "c.csv").write_text("c")
    time.sleep(QUIET)
    assert len(project.started) == 1

    second = project.runner()
    wait_for(lambda: len(project.started) == 3, what="runs for b and c")
    assert sorted(project.paths()) == [str(inbox / n) for n in ("a.csv", "b.csv", "c.csv")]
    second.stop()

    project.runner()
    time.sleep(QUIET)
    assert len(project.started) == 3 and len(project.runs()) == 3


@pytest.mark.parametrize("project", BACKENDS, indirect=True)
def test_poll_without_the_threads_and_a_version_claimed_elsewhere(
    project: Project, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.automation.sensors")
    inbox = project.folder("inbox")
    for name in ("dup.csv", "a.csv", "b.csv"):
        (inbox / name).write_text(name)
    st = (inbox / "dup.csv").stat()
    with session_scope(project.db) as session:  # as if another engine claimed it already
        session.add(
            SensorFile(
                sensor="inbox",
                path=str(inbox / "dup.csv"),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                seen_at=0.0,
            )
        )
    # Hide the cursor from the look-ups, as a race between two engines would: only the UNIQUE
    # constraint stands between us and a duplicate run, so the batch must fall back to one by one.
    monkeypatch.setattr(repo, "sensor_versions", lambda *a, **k: set())

    runner = project.runner(start=False)
    assert runner.poll() == []  # not settled yet
    claimed: list[str] = []

    def claimed_two() -> bool:
        claimed.extend(runner.poll())
        return len(claimed) >= 2

    wait_for(claimed_two, what="two claims")
    assert sorted(claimed) == sorted(project.started)
    assert sorted(project.paths()) == [str(inbox / "a.csv"), str(inbox / "b.csv")]
    assert len(project.cursor("inbox")) == 3
    assert any("claimed elsewhere" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("project", BACKENDS, indirect=True)
def test_two_runners_on_one_database_start_each_file_once(project: Project) -> None:
    project.runner()
    project.runner()
    inbox = project.folder("inbox")
    for i in range(100):
        (inbox / f"f{i}.csv").write_text(str(i))
    wait_for(lambda: len(project.started) >= 100, timeout=10, what="100 runs")
    time.sleep(QUIET)
    assert len(project.started) == 100 and len(set(project.paths())) == 100


def test_poll_with_nothing_pending_never_touches_the_database(project: Project) -> None:
    runner = project.runner(start=False)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(project.db, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert runner.poll() == []
        runner.start()
        time.sleep(SETTLE * 2)  # the settle thread polls several times
    finally:
        event.remove(project.db, "before_cursor_execute", count)
    assert statements == []


# --- recursion --------------------------------------------------------------------------------


# watchdog warns about its own race when it adds watches for a fast `mkdir -p`: not ours.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_a_recursive_sensor_sees_subfolders_and_a_flat_one_does_not(project: Project) -> None:
    project.runner()
    tree = project.folder("tree")
    (tree / "top.csv").write_text("top")
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "deep.csv").write_text("deep")
    (tree / "a" / "skip.txt").write_text("not a csv")
    (tree / ".staging").mkdir()
    (tree / ".staging" / "hidden.csv").write_text("still being assembled")
    staged = project.root / "staged"
    staged.mkdir()
    (staged / "moved.csv").write_text("moved")
    staged.rename(tree / "moved-in")  # a whole folder moved in

    wait_for(lambda: len(project.started) >= 4, what="4 runs")
    time.sleep(QUIET)
    assert sorted(project.paths("deep")) == sorted(
        str(tree / p) for p in ("top.csv", "a/b/deep.csv", "moved-in/moved.csv")
    )
    assert project.paths("shallow") == [str(tree / "top.csv")]


# --- on/off -----------------------------------------------------------------------------------


def test_off_and_on_persist_and_files_dropped_while_off_run_when_on(project: Project) -> None:
    inbox = project.folder("inbox")
    first = project.runner()
    first.set_enabled("inbox", False)
    with read_scope(project.db) as session:
        toggle = session.get(Toggle, ("sensor", "inbox"))
    assert toggle is not None and toggle.enabled is False and toggle.updated_at > 0
    (inbox / "a.csv").write_text("a")
    time.sleep(QUIET)
    assert not project.started
    first.stop()

    second = project.runner()  # the state survives a restart
    assert {s.name: s.enabled for s in second.status()}["inbox"] is False
    (inbox / "b.csv").write_text("b")
    (project.folder("anybox") / "other.txt").write_text("other sensors keep running")
    wait_for(lambda: project.started, what="the other sensor's run")
    time.sleep(QUIET)
    assert project.paths("inbox") == []

    second.set_enabled("inbox", True)
    wait_for(lambda: len(project.paths("inbox")) == 2, what="runs for a and b")
    assert sorted(project.paths("inbox")) == [str(inbox / "a.csv"), str(inbox / "b.csv")]
    with read_scope(project.db) as session:
        toggle = session.get(Toggle, ("sensor", "inbox"))
    assert toggle is not None and toggle.enabled is True

    with pytest.raises(EngineError, match="did you mean inbox"):
        second.set_enabled("inbx", False)


# --- failures ---------------------------------------------------------------------------------


def test_a_target_that_cannot_be_planned_is_recorded_and_not_retried(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.automation.sensors")
    runner = project.runner()
    bad = project.folder("badbox") / "day.csv"
    bad.write_text("x")
    rows = wait_for(lambda: project.cursor("partitioned"), what="the cursor row")
    assert [(r.path, r.run_id) for r in rows] == [(str(bad), None)]
    assert not project.started and project.runs() == []  # nothing half-added either
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("partitioned" in m and str(bad) in m for m in errors), errors

    (project.folder("inbox") / "fine.csv").write_text("ok")  # the runner is still alive
    wait_for(lambda: project.started, what="a run for another sensor")

    runner.stop()
    project.runner()
    time.sleep(QUIET)
    assert len(project.cursor("partitioned")) == 1 and len(project.started) == 1


def test_a_vanished_folder_is_survived_and_rewatched_when_back(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.automation.sensors")
    runner = project.runner()
    box = project.folder("anybox")
    shutil.rmtree(box)
    wait_for(lambda: any(r.levelno == logging.WARNING for r in caplog.records), what="a warning")
    runner.sync(project.manifest)  # a reload while the folder is gone
    (project.folder("inbox") / "still.csv").write_text("others keep running")
    wait_for(lambda: len(project.started) == 1, what="a run for another sensor")

    box.mkdir()
    (box / "back.txt").write_text("back")
    runner.sync(project.manifest)
    wait_for(lambda: project.paths("anything"), what="a run after the folder came back")
    assert project.paths("anything") == [str(box / "back.txt")]
    (box / "later.txt").write_text("watched again")
    wait_for(lambda: len(project.paths("anything")) == 2, what="a run from the new watch")


def test_sync_follows_the_manifest_when_sensors_change(project: Project) -> None:
    runner = project.runner()
    inbox = project.folder("inbox")
    (inbox / "old.json").write_text("{}")
    time.sleep(QUIET)
    assert not project.started  # *.csv only

    specs = dict(project.manifest.sensors)
    specs["inbox"] = dataclasses.replace(specs["inbox"], pattern="*.json")
    del specs["anything"]
    runner.sync(dataclasses.replace(project.manifest, sensors=specs))
    # A changed pattern rescans: the waiting .json file is new work for it.
    wait_for(lambda: project.paths("inbox") == [str(inbox / "old.json")], what="the rescan")
    (project.folder("anybox") / "gone.txt").write_text("no sensor watches this any more")
    time.sleep(QUIET)
    assert project.paths("anything") == []
    assert "anything" not in {s.name for s in runner.status()}
    with pytest.raises(EngineError):
        runner.set_enabled("anything", False)


# --- settle time ------------------------------------------------------------------------------

SLOW_COPY = """
from engine import asset, file_sensor


@asset
def landed(context):
    with open(context.params["path"]) as fh:
        text = fh.read()
    context.add_metadata({"text": text})
    return text


file_sensor("slow_copy", path="inbox", target="landed", settle=3)
"""


@pytest.mark.serial
def test_a_copy_that_pauses_past_the_default_settle_starts_one_run_on_the_whole_file(
    tmp_path: Path,
) -> None:
    from engine.client import Client
    from engine.loading.config import load_config, resolve_paths
    from engine.service.daemon import Engine

    (tmp_path / "pipelines" / "inbox").mkdir(parents=True)
    (tmp_path / "pipelines" / "copy.py").write_text(SLOW_COPY)
    paths = resolve_paths(tmp_path / "home", tmp_path / "pipelines")
    engine = Engine(paths, load_config(paths.project), schedules=False, watch=False)
    engine.start()
    try:
        client = Client(tmp_path / "home", tmp_path / "pipelines")
        client.attach(engine)
        assert engine.manifest().sensors["slow_copy"].settle == 3.0
        head, tail = "id,amount\n1,10\n", "2,20\n3,30\n"
        with (tmp_path / "pipelines" / "inbox" / "orders.csv").open("w") as fh:
            fh.write(head)
            fh.flush()
            time.sleep(1.5)  # longer than the default settle of 1 s, shorter than settle=3
            fh.write(tail)
        last_write = time.time()
        runs = wait_for(
            lambda: [r for r in client.runs(10) if r.finished], timeout=15, what="a finished run"
        )
        time.sleep(1.5)  # a second run, if the first half had started one, would be here by now
        runs = client.runs(10)
        assert len(runs) == 1, [(r.id, r.steps[0].metadata) for r in runs]
        (run,) = runs
        assert run.status == RunStatus.SUCCESS and run.steps[0].metadata == {"text": head + tail}
        # The sensor's own settle, not the default: no run before 3 s of quiet.
        assert run.created_at - last_write >= 3.0 - 0.1
    finally:
        engine.stop()


BAD_SETTLE = """from engine import asset, file_sensor


@asset
def landed():
    return 1


file_sensor("drops", path=".", target="landed", settle={settle})
"""


@pytest.mark.parametrize(
    "settle", ["0", "-1", "'3'", "float('nan')", "float('inf')", "True", "None", "[1]"]
)
def test_a_bad_settle_is_a_load_error_naming_the_file_and_line(tmp_path: Path, settle: str) -> None:
    (tmp_path / "drops.py").write_text(BAD_SETTLE.format(settle=settle))
    manifest = load(tmp_path)  # through the real loader child
    err = manifest.errors["drops.py"]
    assert err.line == 9, err
    assert "'drops'" in err.message and "settle" in err.message and "\n" not in err.message
    assert "drops" not in manifest.sensors


@pytest.mark.serial
def test_list_shows_each_sensors_settle_time(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "pipelines" / "inbox").mkdir(parents=True)
    (tmp_path / "pipelines" / "copy.py").write_text(
        SLOW_COPY.replace("settle=3", "settle=2.5")
        + 'file_sensor("quick", path="inbox", target="landed")\n'
    )
    (tmp_path / "pipelines" / "broken.py").write_text(BAD_SETTLE.format(settle="-1"))
    base = [str(Path(sys.executable).with_name("dagtop")), "--home", str(tmp_path / "home"),
            "--pipelines", str(tmp_path / "pipelines")]  # fmt: skip

    def dagtop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)

    data = json.loads(dagtop("list", "--json").stdout)
    assert {s["name"]: s["settle"] for s in data["sensors"]} == {"slow_copy": 2.5, "quick": 1.0}
    text = dagtop("list").stdout
    assert "settle 2.5 s" in text and "settle 1 s" in text
    check = dagtop("check")
    assert check.returncode == 1
    (line,) = [line for line in check.stdout.splitlines() if "broken.py" in line]
    assert line.startswith("✗ broken.py:9 ") and "settle must be" in line, line
