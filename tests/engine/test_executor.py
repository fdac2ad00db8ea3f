"""The executor end to end: real step processes, real SQLite, pipeline files from fixtures.

Every test copies the pipeline modules it needs from tests/fixtures/pipelines into its own
project folder under tmp_path (`dagtop.toml` next to the pipelines folder sets max_workers and
pools) and drives the engine through `engine.client.Client`, in this process.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlmodel import col, select

from engine.client import Client, RunView, StepView
from engine.status import RunStatus, StepStatus
from engine.storage.db import read_scope
from engine.storage.models import Materialization, StepAttempt
from tests.postgres import BACKENDS, database_for
from tests.waiting import wait_for

pytestmark = pytest.mark.serial

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"
MiB = 1024**2

# --- helpers ----------------------------------------------------------------------------------


def make_project(root: Path, *fixtures: str, config: str = "max_workers = 4\n") -> Client:
    """A project folder with copies of the given fixture modules; a Client on it."""
    pipelines = root / "project" / "pipelines"
    pipelines.mkdir(parents=True)
    for name in fixtures:
        shutil.copy(FIXTURES / f"{name}.py", pipelines / f"{name}.py")
    (root / "project" / "dagtop.toml").write_text(config)
    return Client(home=root / "home", pipelines=pipelines)


@pytest.fixture
def db_setting(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A dagtop.toml line naming this test's database (SQLite unless parametrized)."""
    return f"database_url = {database_for(request, tmp_path)!r}\n"


def step(view: RunView, key: str) -> StepView:
    return next(s for s in view.steps if s.key == key)


def materializations(client: Client, asset: str) -> list[Materialization]:
    with read_scope(client.db) as s:
        query = select(Materialization).where(Materialization.asset == asset)
        return list(s.exec(query.order_by(col(Materialization.id))).all())


def attempts_of(client: Client, key: str) -> list[StepAttempt]:
    with read_scope(client.db) as s:
        query = select(StepAttempt).where(StepAttempt.key == key)
        return list(s.exec(query.order_by(col(StepAttempt.id))).all())


def value_path(client: Client, asset: str, partition: str | None = None) -> Path:
    stored = [m for m in materializations(client, asset) if m.partition == partition]
    assert stored and stored[-1].value_path, f"{asset} [{partition}] has no stored value"
    return Path(stored[-1].value_path)


def stored_value(client: Client, asset: str, partition: str | None = None) -> Any:
    path = value_path(client, asset, partition)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open("rb") as fh:
        return pickle.load(fh)


def log_text(view: RunView, key: str) -> str:
    path = step(view, key).log_path
    assert path is not None
    return Path(path).read_text(errors="replace")


def intervals(client: Client, assets: list[str]) -> list[tuple[float, float]]:
    return [(v["start"], v["end"]) for v in (stored_value(client, a) for a in assets)]


def attempt_starts(client: Client, run_id: str, key: str) -> list[float]:
    """The start times a step printed, one per attempt, each from that attempt's own log."""
    starts = []
    for ref in client.logs(run_id, key):
        text = ref.path.read_text()
        found = re.findall(r"attempt (\d+) started at ([\d.]+)", text)
        assert [int(n) for n, _ in found] == [ref.attempt], text  # one attempt per file
        starts.append(float(found[0][1]))
    return starts


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (our init may never reap orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fan_out_branches_run_at_the_same_time(tmp_path: Path) -> None:
    client = make_project(tmp_path, "parallel")

    view = client.materialize(["source", "left", "right"])

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    (l_start, l_end), (r_start, r_end) = intervals(client, ["left", "right"])
    assert max(l_start, r_start) < min(l_end, r_end), "the two branches never ran together"


@pytest.mark.timeout(60)
def test_without_pidfd_exits_are_polled_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel has no pidfd (macOS, Linux before 5.3) the coordinator polls its
    directly spawned steps; the same run must come out the same."""
    import engine.executor.coordinator as coordinator

    monkeypatch.setattr(coordinator, "HAS_PIDFD", False)
    monkeypatch.setenv("DAGTOP_FORKSERVER", "0")  # steps are the coordinator's own children
    client = make_project(tmp_path, "parallel")

    view = client.materialize(["source", "left", "right"])

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    assert all(a.exit_code == 0 and a.cpu_seconds for a in attempts_of(client, "left"))


@pytest.mark.timeout(60)
def test_a_pool_of_one_runs_its_steps_one_at_a_time(tmp_path: Path) -> None:
    client = make_project(tmp_path, "parallel", config="max_workers = 4\n[pools]\ngpu = 1\n")

    view = client.materialize(["gpu_a", "gpu_b", "gpu_c"])

    assert view.status == RunStatus.SUCCESS
    spans = sorted(intervals(client, ["gpu_a", "gpu_b", "gpu_c"]))
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert end <= next_start, f"two gpu steps overlapped: {spans}"


@pytest.mark.timeout(60)
def test_steps_outside_a_pool_overlap(tmp_path: Path) -> None:
    client = make_project(tmp_path, "parallel", config="max_workers = 4\n[pools]\ngpu = 1\n")

    view = client.materialize(["free_a", "free_b", "free_c"])

    assert view.status == RunStatus.SUCCESS
    spans = intervals(client, ["free_a", "free_b", "free_c"])
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"not all overlapped: {spans}"


# --- how a step dies --------------------------------------------------------------------------

DEATH_ASSETS = [
    "raises",
    "exits",
    "sigkilled",
    "segfaults",
    "aborts",
    "hungry",
    "sleepy",
    "returns_lambda",
    "returns_generator",
]


@pytest.fixture(scope="module")
def deaths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Client, RunView, float]:
    """One run in which every asset of deaths.py dies its own way (all in parallel)."""
    client = make_project(tmp_path_factory.mktemp("deaths"), "deaths")
    started = time.monotonic()
    view = client.materialize(DEATH_ASSETS)
    return client, view, time.monotonic() - started


def test_every_death_fails_its_step_and_the_run(deaths: tuple[Client, RunView, float]) -> None:
    _client, view, took = deaths
    assert view.status == RunStatus.FAILED
    assert {s.key: s.status for s in view.steps} == dict.fromkeys(DEATH_ASSETS, StepStatus.FAILED)
    assert all(s.error for s in view.steps)
    # The slowest deaths are the 1 s timeout and the memory limit: nothing waits 30 s.
    assert took < 10, f"the run took {took:.1f} s"


def test_exception_traceback_with_user_file_and_line_is_in_the_log(
    deaths: tuple[Client, RunView, float],
) -> None:
    _client, view, _ = deaths
    source = (FIXTURES / "deaths.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "# RAISE_LINE" in text)

    log = log_text(view, "raises")

    assert re.search(rf'File ".*deaths\.py", line {line}, in raises', log), log
    assert "KeyError: 'missing'" in log


def test_exception_error_names_its_type_and_message(deaths: tuple[Client, RunView, float]) -> None:
    _client, view, _ = deaths
    error = step(view, "raises").error or ""
    assert "KeyError" in error and "missing" in error, error


def test_sys_exit_keeps_its_code(deaths: tuple[Client, RunView, float]) -> None:
    _client, view, _ = deaths
    exits = step(view, "exits")
    assert "sys.exit(3)" in (exits.error or ""), exits.error
    assert exits.exit_code == 3


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("sigkilled", "killed by SIGKILL"),
        ("segfaults", "SIGSEGV"),
        ("aborts", "SIGABRT"),
    ],
)
def test_death_by_signal_names_the_signal(
    deaths: tuple[Client, RunView, float], key: str, words: str
) -> None:
    _client, view, _ = deaths
    st = step(view, key)
    assert st.status == StepStatus.FAILED
    assert words in (st.error or ""), st.error


def test_memory_limit_kills_the_step(deaths: tuple[Client, RunView, float]) -> None:
    _client, view, _ = deaths
    hungry = step(view, "hungry")
    assert (hungry.error or "").startswith("memory limit exceeded: peak"), hungry.error
    assert hungry.peak_rss_bytes and hungry.peak_rss_bytes > 150 * MiB
    assert hungry.peak_rss_bytes < 600 * MiB, "the limit should stop it well before 1.2 GB"


def test_timeout_stops_the_step(deaths: tuple[Client, RunView, float]) -> None:
    client, view, _ = deaths
    sleepy = step(view, "sleepy")
    assert "timed out after 1 s" in (sleepy.error or ""), sleepy.error
    assert sleepy.started_at and sleepy.ended_at
    assert sleepy.ended_at - sleepy.started_at < 5
    [attempt] = attempts_of(client, "sleepy")
    assert attempt.pid and not alive(attempt.pid)


def test_each_log_ends_with_dagtops_line_saying_why(
    deaths: tuple[Client, RunView, float],
) -> None:
    _client, view, _ = deaths
    for st in view.steps:
        assert log_text(view, st.key).splitlines()[-1] == f"dagtop: step failed: {st.error}"
    last = {st.key: log_text(view, st.key).splitlines()[-1] for st in view.steps}
    assert re.fullmatch(
        r"dagtop: step failed: memory limit exceeded: peak [\d.]+ MiB of limit 150\.0 MiB",
        last["hungry"],
    ), last["hungry"]
    assert last["sleepy"] == "dagtop: step failed: timed out after 1 s"
    assert last["sigkilled"] == "dagtop: step failed: killed by SIGKILL"


@pytest.mark.parametrize("key", ["returns_lambda", "returns_generator"])
def test_output_that_cannot_be_stored(deaths: tuple[Client, RunView, float], key: str) -> None:
    _client, view, _ = deaths
    error = step(view, key).error or ""
    assert re.search(rf"output of asset '{key}' could not be stored", error), error


def test_unstorable_output_leaves_no_materialization(
    deaths: tuple[Client, RunView, float],
) -> None:
    client, view, _ = deaths
    for key in ("returns_lambda", "returns_generator"):
        assert step(view, key).status == StepStatus.FAILED
        assert materializations(client, key) == []
        assert "could not be stored" in log_text(view, key)
        leftovers = [p for p in (client.paths.values / key).rglob("*") if p.is_file()]
        assert leftovers == [], "a failed store must not leave a partial value file"


@pytest.mark.timeout(60)
def test_worker_that_cannot_import_the_module(tmp_path: Path) -> None:
    client = make_project(tmp_path)
    module = client.paths.pipelines / "fragile.py"
    module.write_text("from engine import asset\n\n\n@asset\ndef fragile():\n    return 1\n")
    assert "fragile" in client.load().assets
    module.write_text("raise RuntimeError('broken after loading')\n")

    view = client.materialize(["fragile"])

    fragile = step(view, "fragile")
    assert fragile.status == StepStatus.FAILED
    assert "could not import" in (fragile.error or ""), fragile.error


@pytest.mark.timeout(60)
def test_shell_task_exit_code(tmp_path: Path) -> None:
    client = make_project(tmp_path, "deaths")

    view = client.run_pipeline("shell_fails")

    assert view.status == RunStatus.FAILED
    boom = step(view, "boom")
    assert boom.status == StepStatus.FAILED
    assert "command exited with code 7" in (boom.error or ""), boom.error
    assert boom.exit_code == 7
    assert "about to fail" in log_text(view, "boom")


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_setting", BACKENDS, indirect=True)
def test_retries_with_growing_backoff(tmp_path: Path, db_setting: str) -> None:
    client = make_project(tmp_path, "retries", config="max_workers = 4\n" + db_setting)

    view = client.materialize(["flaky"])

    flaky = step(view, "flaky")
    assert (view.status, flaky.status) == (RunStatus.SUCCESS, StepStatus.SUCCESS)
    assert (flaky.attempts, flaky.max_attempts) == (3, 3)
    assert stored_value(client, "flaky") == "succeeded on attempt 3"
    refs = client.logs(view.id, "flaky")
    assert [(r.attempt, r.status) for r in refs] == [
        (1, StepStatus.FAILED),
        (2, StepStatus.FAILED),
        (3, StepStatus.SUCCESS),
    ]
    assert len({r.path for r in refs}) == 3
    for ref in refs[:2]:
        assert f"flaky failure on attempt {ref.attempt}" in ref.path.read_text()
        last = ref.path.read_text().splitlines()[-1]
        assert (
            last.startswith("dagtop: step failed: ")
            and f"; attempt {ref.attempt + 1} of 3 in" in last
        )
    assert refs[2].path.read_text().endswith("\ndagtop: step succeeded on attempt 3 of 3\n")
    # The backoff each failed attempt announced doubles, and each retry waited at least that
    # long (start to start also holds the attempt's own run, which load can stretch).
    delays = [
        float(re.findall(r"of 3 in ([\d.]+) s", ref.path.read_text())[-1]) for ref in refs[:2]
    ]
    assert delays == [0.2, 0.4]
    starts = attempt_starts(client, view.id, "flaky")
    gaps = [starts[1] - starts[0], starts[2] - starts[1]]
    assert gaps[0] >= delays[0] and gaps[1] >= delays[1], gaps
    assert not (tmp_path / "home" / "dagtop.db").exists()  # the configured database was used


@pytest.mark.timeout(60)
def test_retry_delay_zero_retries_at_once(tmp_path: Path) -> None:
    client = make_project(tmp_path, "retries")

    view = client.materialize(["flaky_now"])

    assert (view.status, step(view, "flaky_now").attempts) == (RunStatus.SUCCESS, 2)
    first, second = attempt_starts(client, view.id, "flaky_now")
    # The bug this guards against waited a whole second; anything well below is "at once".
    assert second - first < 0.9, f"the retry waited {second - first:.2f} s"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_setting", BACKENDS, indirect=True)
def test_an_error_no_database_can_store_as_is_is_recorded_escaped(
    tmp_path: Path, db_setting: str
) -> None:
    client = make_project(tmp_path, config=db_setting)
    (client.paths.pipelines / "odd.py").write_text(
        "from engine import asset\n\n\n@asset\ndef odd(context):\n"
        "    context.log.warning('warn\\x00ing \\ud800')\n"
        "    raise ValueError('bad\\x00byte \\ud800')\n"
    )
    view = client.materialize(["odd"])
    assert (view.status, step(view, "odd").status) == (RunStatus.FAILED, StepStatus.FAILED)
    error = step(view, "odd").error or ""
    assert "ValueError: bad" in error and "byte \\ud800" in error
    assert "\x00" not in error or "sqlite" in db_setting  # PostgreSQL refuses NUL in text


# --- failure propagation and checks -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_failed_upstream_skips_only_its_downstream(tmp_path: Path) -> None:
    client = make_project(tmp_path, "skips")

    view = client.materialize(["a", "b", "c"])

    assert view.status == RunStatus.FAILED
    assert step(view, "a").status == StepStatus.FAILED
    assert step(view, "b").status == StepStatus.SKIPPED
    assert "upstream a failed" in (step(view, "b").error or "")
    assert step(view, "c").status == StepStatus.SUCCESS
    assert materializations(client, "b") == []


@pytest.mark.timeout(60)
def test_failing_blocking_check_skips_downstream(tmp_path: Path) -> None:
    client = make_project(tmp_path, "skips")

    view = client.materialize(["guarded", "after_guarded"])

    assert view.status == RunStatus.FAILED
    after = step(view, "after_guarded")
    assert after.status == StepStatus.SKIPPED
    assert "must_be_positive" in (after.error or ""), after.error
    [chk] = view.checks
    assert (chk.asset, chk.name, chk.passed, chk.blocking) == (
        "guarded",
        "must_be_positive",
        False,
        True,
    )


@pytest.mark.timeout(60)
def test_failing_non_blocking_check_is_recorded_and_downstream_runs(tmp_path: Path) -> None:
    client = make_project(tmp_path, "skips")

    view = client.materialize(["watched", "after_watched"])

    assert step(view, "after_watched").status == StepStatus.SUCCESS
    assert stored_value(client, "after_watched") == 10
    [chk] = view.checks
    assert (chk.asset, chk.name, chk.passed, chk.blocking) == ("watched", "is_small", False, False)
    assert view.status == RunStatus.SUCCESS


# --- cancel -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cancel_stops_the_running_step_and_its_children(tmp_path: Path) -> None:
    client = make_project(tmp_path, "sleeps")
    client.load()
    child_pid_file = client.paths.project / "slow_child.pid"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["view"] = client.materialize(["slow", "after_slow"])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    watcher = Client(home=client.paths.home, pipelines=client.paths.pipelines)

    def running_attempt() -> StepAttempt | None:
        if not child_pid_file.exists():
            return None
        found = attempts_of(watcher, "slow")
        return (
            found[0] if found and found[0].pid and found[0].status == StepStatus.RUNNING else None
        )

    attempt = wait_for(running_attempt, 20, "the slow step to run")
    wait_for(lambda: child_pid_file.read_text().strip(), 5, "the child pid")
    child_pid = int(child_pid_file.read_text())
    pid = attempt.pid
    assert pid is not None and alive(pid) and alive(child_pid)

    started = time.monotonic()
    view = watcher.cancel(attempt.run_id)
    took = time.monotonic() - started
    thread.join(timeout=15)

    assert not thread.is_alive() and "error" not in outcome, outcome
    assert view.status == RunStatus.CANCELED and took < 6, (view.status, took)
    assert step(view, "slow").status == StepStatus.CANCELED
    assert step(view, "after_slow").status == StepStatus.CANCELED
    assert outcome["view"].status == RunStatus.CANCELED
    wait_for(lambda: not alive(pid) and not alive(child_pid), 5, "the tree to die")
    assert [a.status for a in attempts_of(watcher, "slow")] == [StepStatus.CANCELED]
    assert attempts_of(watcher, "after_slow") == []
    assert log_text(view, "slow").splitlines()[-1] == "dagtop: step canceled by user"


# --- output volume ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_100_mb_of_output_goes_to_the_log_not_into_the_engine(tmp_path: Path) -> None:
    client = make_project(tmp_path, "chatty")
    assert client.materialize(["quiet"]).status == RunStatus.SUCCESS  # warm up imports and caches
    gc.collect()
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        view = client.materialize(["chatty"])
    finally:
        done.set()
        sampler.join()

    assert view.status == RunStatus.SUCCESS
    assert peak - baseline < 30 * MiB, f"engine RSS grew by {(peak - baseline) / MiB:.1f} MiB"
    log = Path(step(view, "chatty").log_path or "")
    assert 100_000 * 1000 <= log.stat().st_size < 100_000 * 1000 + 64 * 1024
    with log.open("rb") as fh:
        fh.seek(-4096, os.SEEK_END)
        tail = fh.read()
    assert tail.endswith(b"x" * 999 + b"\nLAST LINE OF CHATTY\ndagtop: step succeeded\n")


# --- IO managers ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_json_io_stores_a_json_file(tmp_path: Path) -> None:
    client = make_project(tmp_path, "io_formats")

    view = client.materialize(["as_json", "reads_json"])

    assert view.status == RunStatus.SUCCESS
    path = value_path(client, "as_json")
    assert path.suffix == ".json"
    with path.open() as fh:
        assert json.load(fh) == {"name": "json", "numbers": [1, 2, 3]}
    assert stored_value(client, "reads_json") == 6


@pytest.mark.timeout(60)
def test_custom_io_manager_stores_the_value(tmp_path: Path) -> None:
    client = make_project(tmp_path, "io_formats")

    view = client.materialize(["as_text"])

    assert view.status == RunStatus.SUCCESS
    path = value_path(client, "as_text")
    assert path.suffix == ".txt"
    assert path.read_text() == "TEXT:hello"


@pytest.mark.timeout(60)
def test_custom_io_manager_loads_the_value_downstream(tmp_path: Path) -> None:
    client = make_project(tmp_path, "io_formats")

    view = client.materialize(["as_text", "reads_text"])

    assert step(view, "reads_text").status == StepStatus.SUCCESS, step(view, "reads_text").error
    assert stored_value(client, "reads_text") == "HELLO"


# --- partitions -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_setting", BACKENDS, indirect=True)
def test_partitioned_inputs(tmp_path: Path, db_setting: str) -> None:
    client = make_project(tmp_path, "partitioned", config="max_workers = 4\n" + db_setting)

    assert client.materialize(["sales"], partition="north").status == RunStatus.SUCCESS
    view = client.materialize(["sales", "doubled"], partition="south")
    assert view.status == RunStatus.SUCCESS
    assert client.materialize(["total"]).status == RunStatus.SUCCESS

    assert stored_value(client, "doubled", "south") == {"partition": "south", "value": 40}
    assert stored_value(client, "total") == {"north": 10, "south": 20}
    assert not (tmp_path / "home" / "dagtop.db").exists()  # the configured database was used


# --- logs -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_context_log_and_print_land_in_the_step_log(tmp_path: Path) -> None:
    client = make_project(tmp_path, "logging_demo")

    view = client.materialize(["talkative"])

    assert view.status == RunStatus.SUCCESS
    log = log_text(view, "talkative")
    stamp = r"^\d\d:\d\d:\d\d\.\d{3} "
    assert re.search(stamp + r"INFO +hello from context\.log$", log, re.M), log
    assert re.search(stamp + r"WARNING +careful from context\.log$", log, re.M), log
    assert re.search(r"^hello from print$", log, re.M), log


@pytest.mark.timeout(60)
def test_shell_task_and_its_children_write_to_its_log(tmp_path: Path) -> None:
    client = make_project(tmp_path, "logging_demo")

    view = client.run_pipeline("shell_logs")

    assert view.status == RunStatus.SUCCESS
    log = log_text(view, "talk")
    for line in (
        "from-shell-stdout",
        "from-shell-stderr",
        "from-child-process",
        "from-background-child",
    ):
        assert re.search(rf"^{line}$", log, re.M), log
