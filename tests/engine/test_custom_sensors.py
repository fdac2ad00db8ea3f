"""Custom sensors (`@sensor`): evaluated in real child processes, their ticks recorded in real
SQLite with their runs, run keys and cursor in one transaction; a real daemon killed with
SIGKILL between two waves of requests starts each requested run exactly once."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.automation.custom_sensors import CustomSensorRunner
from engine.automation.sensor_registry import _BUILTIN, BuiltinSensor, register_builtin
from engine.client import Client, RunView
from engine.errors import EngineError
from engine.history.plan import record
from engine.loading.loader import load
from engine.loading.manifest import Manifest
from engine.status import TickStatus
from engine.storage import repo
from engine.storage.db import open_db, read_scope
from engine.storage.models import Run, SensorRunKey, SensorTick
from tests.daemons import stop_all
from tests.waiting import wait_for

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = textwrap.dedent(
    """
    import json
    import os
    import time
    from pathlib import Path

    from engine import DynamicPartitions, RunRequest, SkipReason, asset, sensor

    QUEUE = Path(__file__).parent / "queue"
    EVERY = float(os.environ.get("SENSOR_INTERVAL", "0.2"))
    customers = DynamicPartitions("customers")


    def queued():
        return sorted(p.stem for p in QUEUE.glob("*.json"))


    @asset
    def job(context):
        return context.params["job"]


    @asset(partitions=customers)
    def customer_model(context):
        return context.partition


    @sensor(target="job", interval=EVERY, timeout=10)
    def by_cursor(context):
        '''Every queued job after the cursor, once.'''
        new = [n for n in queued() if context.cursor is None or n > context.cursor]
        if not new:
            return SkipReason("no new jobs")
        time.sleep(float(os.environ.get("SENSOR_PAUSE", "0")))
        context.update_cursor(new[-1])
        print("found", len(new))
        return [RunRequest(params={"job": n}) for n in new]


    @sensor(target="job", interval=EVERY, timeout=10)
    def by_key(context):
        time.sleep(float(os.environ.get("SENSOR_PAUSE", "0")))
        for n in queued():
            yield RunRequest(run_key=n, params={"job": n})


    @sensor(target="customer_model", interval=EVERY)
    def signups(context):
        names = sorted(p.stem for p in (QUEUE.parent / "signups").glob("*"))
        context.add_partitions(customers, names)
        return [RunRequest(run_key=n, partition=n) for n in names]


    """
)

# Sensors that fail, each in its own way; a file of their own, loaded where a test wants them.
FAULTY = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    from engine import RunRequest, sensor

    HERE = Path(__file__).parent


    @sensor(target="job", interval=1, timeout=1)
    def hangs(context):
        (HERE / "hang.pid").write_text(str(os.getpid()))
        time.sleep(60)


    @sensor(target="job", interval=1)
    def raises(context):
        raise ValueError("boom")


    @sensor(target="job", interval=1)
    def malformed(context):
        return 42


    @sensor(target="customer_model", interval=1)
    def unknown_key(context):
        context.update_cursor("moved")
        return RunRequest(run_key="k1", partition="nobody")
    """
)


@dataclass
class Project:
    root: Path
    manifest: Manifest
    db: SAEngine
    runners: list[CustomSensorRunner] = field(default_factory=list)

    def runner(self) -> CustomSensorRunner:
        def record_run(session: Any, request: Any) -> str:
            return record(session, self.manifest, request)

        runner = CustomSensorRunner(self.db, self.root, record_run, lambda _run_id: None)
        runner.sync(self.manifest)
        self.runners.append(runner)
        return runner

    def queue(self, *names: str) -> None:
        for name in names:
            (self.root / "queue" / f"{name}.json").write_text("{}")

    def runs(self, sensor: str) -> list[Run]:
        with read_scope(self.db) as s:
            rows = s.exec(select(Run).order_by(col(Run.created_at))).all()
        return [r for r in rows if r.trigger_ref == sensor]

    def ticks(self, sensor: str) -> list[SensorTick]:
        with read_scope(self.db) as s:
            return list(reversed(repo.sensor_ticks(s, sensor)))


def write_project(root: Path, faulty: bool = True) -> None:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "flow.py").write_text(PIPELINE)
    if faulty:
        (root / "pipelines" / "faulty.py").write_text(FAULTY)
    (root / "pipelines" / "queue").mkdir()
    (root / "pipelines" / "signups").mkdir()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    write_project(tmp_path)
    manifest = load(tmp_path / "pipelines")
    assert manifest.ok, manifest.errors
    db = open_db(f"sqlite:///{tmp_path / 'dagtop.db'}")
    proj = Project(root=tmp_path / "pipelines", manifest=manifest, db=db)
    yield proj
    for runner in proj.runners:
        runner.stop()
    db.dispose()


# --- one tick ---------------------------------------------------------------------------------


def test_a_cursor_sensor_requests_each_job_once_and_skips_with_its_reason(
    project: Project,
) -> None:
    runner = project.runner()
    assert runner.tick("by_cursor").reason == "no new jobs"
    project.queue("a", "b")
    first = runner.tick("by_cursor")
    assert first.status == TickStatus.STARTED and len(first.run_ids) == 2
    assert runner.tick("by_cursor").status == "skipped"
    project.queue("c")
    assert len(runner.tick("by_cursor").run_ids) == 1
    assert [json.loads(r.params)["job"] for r in project.runs("by_cursor")] == ["a", "b", "c"]
    assert {r.trigger for r in project.runs("by_cursor")} == {"sensor"}
    ticks = project.ticks("by_cursor")
    assert [t.status for t in ticks] == ["skipped", "started", "skipped", "started"]
    assert ticks[-1].cursor == "c"
    assert "found 2" in (ticks[1].log_tail or "")  # what the sensor printed, kept with the tick


def test_a_run_key_starts_one_run_ever(project: Project) -> None:
    runner = project.runner()
    project.queue("a", "b")
    assert len(runner.tick("by_key").run_ids) == 2
    again = runner.tick("by_key")
    assert again.status == "skipped" and again.run_keys_skipped == 2
    assert again.reason == "2 run key(s) already requested"
    project.queue("c")
    third = runner.tick("by_key")
    assert len(third.run_ids) == 1 and third.run_keys_skipped == 2
    # A new runner (a restarted engine) reads the keys from storage.
    assert project.runner().tick("by_key").run_ids == ()
    with read_scope(project.db) as s:
        keys = s.exec(select(SensorRunKey.run_key)).all()
    assert sorted(keys) == ["a", "b", "c"]
    assert len(project.runs("by_key")) == 3


def test_a_raising_sensor_is_recorded_with_its_error_and_evaluated_again(
    project: Project,
) -> None:
    runner = project.runner()
    outcome = runner.tick("raises")
    assert outcome.status == "failed" and outcome.error == "ValueError: boom"
    (tick,) = project.ticks("raises")
    assert tick.error == "ValueError: boom" and "Traceback" in (tick.log_tail or "")
    assert runner.tick("raises").status == "failed"
    assert len(project.ticks("raises")) == 2


def test_a_hanging_sensor_times_out_and_its_process_is_ended(project: Project) -> None:
    runner = project.runner()
    started = time.monotonic()
    outcome = runner.tick("hangs")
    assert time.monotonic() - started < 5
    assert outcome.error == "timed out after 1 s"
    pid = int((project.root / "hang.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_malformed_answer_is_one_line_saying_what_a_sensor_returns(project: Project) -> None:
    outcome = project.runner().tick("malformed")
    assert outcome.error == (
        "a sensor returns a RunRequest, a list of them, a SkipReason or None, not int"
    )


def test_a_request_that_cannot_be_planned_records_nothing_but_the_error(
    project: Project,
) -> None:
    outcome = project.runner().tick("unknown_key")
    assert outcome.status == "failed"
    assert outcome.error is not None and "'nobody' is not a key of 'customers'" in outcome.error
    assert project.runs("unknown_key") == []
    with read_scope(project.db) as s:
        assert repo.requested_run_keys(s, "unknown_key", ["k1"]) == set()
        assert repo.sensor_cursor(s, "unknown_key") is None  # the cursor did not move


def test_keys_added_by_a_tick_are_usable_by_its_own_requests(project: Project) -> None:
    (project.root / "signups" / "acme").touch()
    (project.root / "signups" / "globex").touch()
    outcome = project.runner().tick("signups")
    assert outcome.status == TickStatus.STARTED and outcome.keys_added == 2
    assert sorted(r.partition or "" for r in project.runs("signups")) == ["acme", "globex"]
    with read_scope(project.db) as s:
        assert repo.dynamic_keys(s, ["customers"]) == {"customers": ["acme", "globex"]}


def test_the_loop_evaluates_others_while_one_hangs_and_one_raises(project: Project) -> None:
    wanted = ("by_cursor", "hangs", "raises")
    project.manifest = dataclasses.replace(
        project.manifest,
        custom_sensors={n: project.manifest.custom_sensors[n] for n in wanted},
    )
    runner = project.runner()
    project.queue("a")
    runner.start()
    wait_for(lambda: len(project.ticks("by_cursor")) >= 5, timeout=20, what="five ticks")
    # by_cursor ticked five times (each 0.2 s apart) while `hangs` sat in its one-second limit.
    assert len(project.runs("by_cursor")) == 1
    wait_for(lambda: project.ticks("hangs"), timeout=10, what="the hanging sensor's tick")
    assert project.ticks("hangs")[0].error == "timed out after 1 s"
    # Evaluated again at its next interval (1 s), however often it failed before.
    wait_for(lambda: len(project.ticks("raises")) >= 2, timeout=10, what="a second tick")
    assert all(t.error == "ValueError: boom" for t in project.ticks("raises"))


# --- through a real daemon --------------------------------------------------------------------


def dagtop(root: Path, *args: str) -> list[str]:
    return [DAGTOP, "--home", str(root / "home"), "--pipelines", str(root / "pipelines"), *args]


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    (tmp_path / "dagtop.toml").write_text("max_workers = 4\n")
    write_project(tmp_path, faulty=False)
    # Each evaluation pauses between reading the queue and answering: a kill lands mid-tick.
    env = {**os.environ, "SENSOR_PAUSE": "0.15", "SENSOR_INTERVAL": "0.5"}

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            dagtop(tmp_path, "daemon"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
        procs.append(proc)
        client = Client(tmp_path / "home", tmp_path / "pipelines")
        wait_for(lambda: proc.poll() is not None or client.daemon() is not None)
        return proc

    yield start
    stop_all(procs)


def _sensor_runs(db: SAEngine) -> dict[str, list[str]]:
    with read_scope(db) as s:
        rows = s.exec(select(Run.trigger_ref, Run.params).where(Run.trigger == "sensor")).all()
    out: dict[str, list[str]] = {}
    for ref, params in rows:
        out.setdefault(ref or "", []).append(json.loads(params)["job"])
    return out


@pytest.mark.serial
def test_two_waves_of_thirty_jobs_across_a_kill_9_start_exactly_thirty_runs_each(
    tmp_path: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    queue = tmp_path / "pipelines" / "queue"
    for i in range(15):
        (queue / f"job{i:02}.json").write_text("{}")
    daemon = start_daemon()
    db = open_db(f"sqlite:///{tmp_path / 'home' / 'dagtop.db'}")
    try:

        def first_wave_in() -> bool:
            runs = _sensor_runs(db)
            return all(len(runs.get(s, [])) >= 15 for s in ("by_cursor", "by_key"))

        wait_for(first_wave_in, timeout=60, what="the first wave's runs")
        for i in range(15, 30):
            (queue / f"job{i:02}.json").write_text("{}")
        time.sleep(0.3)  # both sensors are reading the second wave, or recording it
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        start_daemon()

        def all_in() -> bool:
            runs = _sensor_runs(db)
            return all(len(runs.get(s, [])) >= 30 for s in ("by_cursor", "by_key"))

        wait_for(all_in, timeout=60, what="both waves' runs")
        time.sleep(1.5)  # several more ticks of each: a duplicate would be here by now
        runs = _sensor_runs(db)
        expected = [f"job{i:02}" for i in range(30)]
        assert sorted(runs["by_cursor"]) == expected
        assert sorted(runs["by_key"]) == expected
        client = Client(tmp_path / "home", tmp_path / "pipelines")

        def finished() -> list[RunView] | None:
            views = client.runs(100)
            return views if all(v.finished for v in views) else None

        done = wait_for(finished, timeout=60, what="every run to finish")
        assert len(done) == 60
        assert {v.status for v in done} == {"success"}
    finally:
        db.dispose()


@pytest.mark.serial
def test_sensors_lists_every_kind_and_sensor_off_stops_a_custom_one(
    tmp_path: Path, start_daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    (tmp_path / "pipelines" / "inbox").mkdir()
    (tmp_path / "pipelines" / "faulty.py").write_text(FAULTY)
    with (tmp_path / "pipelines" / "flow.py").open("a") as fh:
        fh.write('\nfrom engine import file_sensor\nfile_sensor("drops", "inbox", target="job")\n')
    start_daemon()
    off = subprocess.run(dagtop(tmp_path, "sensor", "off", "by_cursor"), capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() == "sensor by_cursor is off"
    (tmp_path / "pipelines" / "queue" / "x.json").write_text("{}")
    db = open_db(f"sqlite:///{tmp_path / 'home' / 'dagtop.db'}")
    wait_for(lambda: _sensor_runs(db).get("by_key"), timeout=20, what="by_key's run of x")
    wait_for(lambda: _sensor_runs(db).get("raises") is None and _ticks_of(db, "raises"),
             timeout=20, what="a tick of raises")  # fmt: skip
    listed = {s["name"]: s for s in json.loads(_sensors_json(tmp_path))}
    assert listed["drops"]["kind"] == "file" and listed["drops"]["enabled"] is True
    assert listed["by_cursor"]["enabled"] is False
    assert listed["by_cursor"]["next_tick_at"] is None
    raises = listed["raises"]
    assert raises["kind"] == "custom" and raises["interval"] == 1.0
    assert raises["last_tick"]["status"] == "failed"
    assert raises["last_tick"]["error"] == "ValueError: boom"
    assert listed["hangs"]["last_tick"] is None or listed["hangs"]["last_tick"]["error"] == (
        "timed out after 1 s"
    )
    try:
        assert "by_cursor" not in _sensor_runs(db)  # off: x.json started nothing through it
    finally:
        db.dispose()
    unknown = subprocess.run(dagtop(tmp_path, "sensor", "off", "by_kye"), capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert unknown.returncode == 2
    assert "unknown sensor 'by_kye'" in unknown.stderr and "by_key" in unknown.stderr
    text = subprocess.run(dagtop(tmp_path, "sensors"), capture_output=True, text=True,
                          timeout=30).stdout  # fmt: skip
    assert "raises" in text and "failed: ValueError: boom" in text
    history = subprocess.run(dagtop(tmp_path, "sensors", "raises"), capture_output=True,
                             text=True, timeout=30).stdout  # fmt: skip
    assert "failed: ValueError: boom" in history.splitlines()[0]


def _sensors_json(root: Path) -> str:
    done = subprocess.run(dagtop(root, "sensors", "--json"), capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ticks_of(db: SAEngine, sensor: str) -> list[SensorTick]:
    with read_scope(db) as s:
        return list(repo.sensor_ticks(s, sensor))


# --- built-in sensors -------------------------------------------------------------------------


def test_a_built_in_sensor_is_listed_and_toggled_like_the_others(tmp_path: Path) -> None:
    write_project(tmp_path)
    register_builtin(BuiltinSensor("tidy", "the engine's own", interval=30.0, target="*"))
    try:
        client = Client(tmp_path / "home", tmp_path / "pipelines")
        listed = {s.name: s for s in client.sensors()}
        tidy = listed["tidy"]
        assert tidy.kind == "builtin" and tidy.enabled and tidy.interval == 30.0
        assert listed["auto"].kind == "builtin"  # asset automation's sensor, registered itself
        client.set_enabled("sensor", "tidy", False)
        assert not {s.name: s for s in client.sensors()}["tidy"].enabled
        from engine.automation.sensor_registry import enabled

        with client._read() as s:
            assert enabled(s, "tidy") is False
    finally:
        _BUILTIN.pop("tidy", None)


def test_a_sensor_turned_off_while_evaluated_records_nothing(project: Project) -> None:
    from engine.storage.db import session_scope

    project.queue("a")
    runner = project.runner()
    with session_scope(project.db) as s:  # as another process's `dagtop sensor off` writes it
        repo.set_toggle(s, "sensor", "by_cursor", False, time.time())
    outcome = runner.tick("by_cursor")
    assert outcome.run_ids == () and outcome.reason == "turned off"
    assert project.runs("by_cursor") == [] and project.ticks("by_cursor") == []
    with read_scope(project.db) as s:
        assert repo.sensor_cursor(s, "by_cursor") is None


def test_turning_a_custom_sensor_off_with_no_engine_up_is_kept_for_the_next(
    tmp_path: Path,
) -> None:
    write_project(tmp_path, faulty=False)
    client = Client(tmp_path / "home", tmp_path / "pipelines")
    client.set_enabled("sensor", "by_key", False)
    listed = {s.name: s for s in client.sensors()}
    assert listed["by_key"].enabled is False and listed["by_key"].next_tick_at is None
    assert listed["by_cursor"].enabled is True and listed["by_cursor"].kind == "custom"
    with pytest.raises(EngineError, match="no sensor named 'by_kye'"):
        client.set_enabled("sensor", "by_kye", True)


@pytest.mark.parametrize(
    ("source", "kind", "message"),
    [
        (
            'from engine import sensor\n@sensor(target="nothing")\ndef s(context):\n    pass\n',
            "unknown-target",
            "sensor 's': unknown asset 'nothing'",
        ),
        (
            'from engine import file_sensor, sensor\nfile_sensor("s", ".", target="job")\n'
            '@sensor(target="job")\ndef s(context):\n    pass\n',
            "duplicate",
            "sensor 's' is defined twice",
        ),
        (
            'from engine import sensor\n@sensor(target="job", interval=0)\ndef s(context):\n'
            "    pass\n",
            "definition",
            "interval must be a number of seconds > 0",
        ),
    ],
)
def test_a_bad_sensor_is_a_load_error_of_its_file(
    tmp_path: Path, source: str, kind: str, message: str
) -> None:
    write_project(tmp_path, faulty=False)
    (tmp_path / "pipelines" / "bad.py").write_text(source)
    manifest = load(tmp_path / "pipelines")
    error = manifest.errors["bad.py"]
    assert error.kind == kind and message in error.message, error
    assert "by_key" in manifest.custom_sensors  # the other file still loads


def test_old_ticks_are_pruned_and_the_run_keys_stay(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.automation import sensor_registry

    monkeypatch.setattr(sensor_registry, "PRUNE_EVERY", 3)
    runner = project.runner()
    runner.keep_ticks = 2
    project.queue("a")
    for _ in range(3):
        runner.tick("by_key")
    ticks = project.ticks("by_key")
    assert [t.status for t in ticks] == [TickStatus.SKIPPED, TickStatus.SKIPPED]
    with read_scope(project.db) as s:
        assert repo.requested_run_keys(s, "by_key", ["a"]) == {"a"}
    assert runner.tick("by_key").run_ids == ()
