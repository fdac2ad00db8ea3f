"""The Dask executor end to end: a real LocalCluster (two worker processes) plus one worker with
a `gpu` resource, real step subprocesses on the workers, real SQLite here.

One cluster serves the whole module (starting one costs seconds). Each test makes its own
project under tmp_path whose `dagtop.toml` points at the cluster, and drives the engine through
`engine.client.Client` in this process. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

distributed = pytest.importorskip("distributed")

from sqlmodel import select  # noqa: E402

from engine.client import Client, RunView  # noqa: E402
from engine.status import RunStatus, StepStatus  # noqa: E402
from engine.storage.db import read_scope  # noqa: E402
from engine.storage.models import Event  # noqa: E402
from tests.engine.test_executor import alive, attempts_of, step  # noqa: E402
from tests.engine.test_exits import forked_child_is_gone, last_lines, marked  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

pytestmark = [pytest.mark.serial, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "pipelines"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Any]]:
    """(scheduler address, a Dask client). Three workers: two plain, one offering gpu=1; each
    has a nanny that restarts it when a test kills it."""
    with distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        address = local.scheduler_address
        gpu = subprocess.Popen(
            [Path(sys.executable).with_name("dask"), "worker", address, "--nthreads", "1",
             "--resources", "gpu=1", "--host", "127.0.0.1", "--no-dashboard",
             # its HTTP server (metrics) listens even without a dashboard: keep it on loopback
             "--dashboard-address", "127.0.0.1:0",
             "--name", "gpu-worker"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            with distributed.Client(address, set_as_default=False) as client:
                client.wait_for_workers(3, timeout=60)
                yield address, client
        finally:
            gpu.terminate()
            gpu.wait(timeout=10)


def make_project(root: Path, address: str, *fixtures: str, extra: str = "") -> Client:
    pipelines = root / "project" / "pipelines"
    pipelines.mkdir(parents=True)
    for name in fixtures:
        shutil.copy(FIXTURES / f"{name}.py", pipelines / f"{name}.py")
    (root / "project" / "dagtop.toml").write_text(
        f'max_workers = 4\nexecutor = "dask"\ndask_scheduler = "{address}"\n{extra}'
    )
    return Client(home=root / "home", pipelines=pipelines)


def in_background(
    client: Client, fn: Any, *args: Any, **kwargs: Any
) -> tuple[threading.Thread, list[Any]]:
    """Run `fn` in a thread; the list receives its result (or exception)."""
    client.db  # noqa: B018 - open storage here first: two threads must not both create it
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def materialize_in_background(
    client: Client, keys: list[str], root: Path
) -> tuple[Path, threading.Thread, list[Any]]:
    """Materialize `keys` in a thread, their steps handed a new folder of flags under `root`
    (the files the steps wait for and leave behind); the folder, the thread and its result."""
    flags = root / "flags"
    flags.mkdir()
    thread, out = in_background(client, client.materialize, keys, params={"flags": str(flags)})
    return flags, thread, out


def finished(thread: threading.Thread, out: list[Any]) -> RunView:
    thread.join(timeout=90)
    assert not thread.is_alive(), "the run never ended"
    view = out[0]
    assert not isinstance(view, BaseException), view
    assert isinstance(view, RunView)
    return view


def placed(client: Client, key: str, out: list[Any], attempt: int = 1) -> Any:
    """The attempt once a Dask worker started it (its worker and pid are recorded)."""

    def look() -> Any:
        if out:
            raise AssertionError(f"the run ended before {key} started: {out[0]!r}")
        rows = [a for a in attempts_of(client, key) if a.attempt == attempt]
        return rows[0] if rows and rows[0].worker and rows[0].pid else None

    return wait_for(look, 60, f"{key} attempt {attempt} to start on a worker")


# --- the examples -------------------------------------------------------------------------------


def test_example_pipelines_run_on_the_cluster(cluster: tuple[str, Any], tmp_path: Path) -> None:
    address, _ = cluster
    project = tmp_path / "project"
    shutil.copytree(ROOT / "pipelines", project / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (project / "dagtop.toml").write_text(
        f'max_workers = 4\nexecutor = "dask"\ndask_scheduler = "{address}"\n'
    )
    client = Client(home=tmp_path / "home", pipelines=project / "pipelines")

    training = client.materialize(["group:training"])
    sales = client.materialize(["orders", "revenue"], partition="2025-01-05")
    tasks = client.run_pipeline("training_tasks")

    shells = {"publish"}  # `shell(...)` tasks: /bin/sh itself, with no Python worker in it
    for view in (training, sales, tasks):
        assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
        for attempt in client.attempts(view.id):
            assert attempt.worker is not None and attempt.worker.startswith("tcp://127.0.0.1:")
            assert attempt.host == socket.gethostname()
            # A Python step's own worker reports its peak (VmHWM) beside the samples; a shell
            # command that is over within the moment before the first sample has none to give.
            if attempt.key not in shells:
                assert attempt.peak_rss_bytes, f"{attempt.key}: nothing measured its memory"
    evaluation = Path(step(training, "evaluation").log_path or "").read_text()
    assert evaluation.strip(), "the step's output never reached its log file here"


def test_mapping_branches_and_trigger_rules_on_the_cluster(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    client = make_project(tmp_path, cluster[0], "task_flow")

    mapped = client.run_pipeline("per_file", params={"files": ["a.csv", "flaky.csv"]})
    branch = client.run_pipeline("branching", params={"score": 0.1})
    rules = client.run_pipeline("rules")

    assert mapped.status == RunStatus.SUCCESS
    assert [s.key for s in mapped.steps][1:3] == ["process[0]", "process[1]"]
    assert step(mapped, "process[1]").attempts == 2  # its own retry, on a worker
    assert branch.status == RunStatus.SUCCESS
    assert step(branch, "train").error == "not chosen by choose"
    assert rules.status == RunStatus.FAILED
    assert step(rules, "cleanup").status == StepStatus.SUCCESS  # all_done after the failure
    for attempt in client.attempts(mapped.id):
        assert attempt.worker is not None and attempt.worker.startswith("tcp://127.0.0.1:")


# --- streaming, limits, cancel ------------------------------------------------------------------


def test_logs_events_and_samples_arrive_while_the_step_runs(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    client = make_project(tmp_path, cluster[0], "remote")
    flags, thread, out = materialize_in_background(client, ["talker", "listener"], tmp_path)

    attempt = placed(client, "talker", out)
    log_path = Path(attempt.log_path)
    wait_for(lambda: log_path.exists() and "line 2" in log_path.read_text(), 30, "live log")
    wait_for(lambda: client.samples(attempt.id or 0), 30, "a live resource sample")
    running = [a for a in attempts_of(client, "talker") if a.attempt == 1][0]
    assert running.status == RunStatus.RUNNING and running.ended_at is None
    (flags / "go").touch()
    view = finished(thread, out)

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    text = log_path.read_text()
    assert text.index("line 0") < text.index("line 1") < text.index("line 2")
    assert "halfway there" in text
    with read_scope(client.db) as s:
        events = s.exec(select(Event).where(Event.run_id == view.id)).all()
        assert any(e.kind == "log" and e.message == "halfway there" for e in events)


def test_limits_hold_on_the_worker(cluster: tuple[str, Any], tmp_path: Path) -> None:
    client = make_project(tmp_path, cluster[0], "remote")

    view = client.materialize(["too_slow"])

    assert step(view, "too_slow").error == "timed out after 1 s"


def test_cancel_stops_the_remote_step_and_its_children(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    client = make_project(tmp_path, cluster[0], "remote")
    flags, thread, out = materialize_in_background(client, ["stubborn"], tmp_path)
    attempt = placed(client, "stubborn", out)
    pid_file = flags / "child.pid"
    child = int(
        wait_for(lambda: pid_file.exists() and pid_file.read_text() or None, 30, "the child")
    )

    client.request_cancel(attempt.run_id)
    view = finished(thread, out)

    assert view.status == RunStatus.CANCELED
    assert step(view, "stubborn").status == StepStatus.CANCELED
    assert not alive(attempt.pid) and not alive(child)


def test_nothing_a_remote_step_started_outlives_it(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    client = make_project(tmp_path, cluster[0], "leftovers")
    marker = f"dagtop-test-leftover-{uuid.uuid4().hex}"
    try:
        helpers = client.materialize(["leaves_helpers"], params={"marker": marker})
        assert marked(marker) == []
        stubborn = client.materialize(["stubborn"], params={"marker": marker})
        assert marked(marker) == []
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            if marker in (proc.info["cmdline"] or []):
                proc.kill()

    assert helpers.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in helpers.steps]
    ended, last = last_lines(helpers, "leaves_helpers")
    assert ended.startswith("dagtop: ended 3 leftover processes: "), ended
    assert last == "dagtop: step succeeded"
    ended, last = last_lines(stubborn, "stubborn")
    assert ended.startswith("dagtop: ended 2 leftover processes: "), ended
    assert last == "dagtop: step failed: timed out after 1 s"


def test_a_remote_step_ends_though_a_forked_copy_holds_its_pipes(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    """The end is sent when the step's process exits, not when its events pipe is closed by
    every process that holds it; then the copy is ended."""
    client = make_project(tmp_path, cluster[0], "leftovers")
    forked_child_is_gone(client, tmp_path / "child.pid", "unused")


# --- losing a worker ----------------------------------------------------------------------------


def test_a_killed_worker_fails_the_attempt_its_processes_die_and_the_retry_runs_elsewhere(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    _, dask = cluster
    client = make_project(tmp_path, cluster[0], "remote")
    flags, thread, out = materialize_in_background(client, ["victim"], tmp_path)
    first = placed(client, "victim", out)
    starts = flags / "starts.txt"
    wait_for(lambda: starts.exists() and starts.read_text().startswith("1 "), 30, "attempt 1")
    child_pid = flags / "child.pid"
    child = int(
        wait_for(lambda: child_pid.exists() and child_pid.read_text() or None, 30, "the child")
    )
    assert alive(child)
    worker_pids = dask.run(os.getpid)

    os.kill(worker_pids[first.worker], signal.SIGKILL)
    view = finished(thread, out)

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    one, two = attempts_of(client, "victim")
    assert one.status == StepStatus.FAILED
    assert one.error == f"dask worker {first.worker} lost"
    assert two.status == StepStatus.SUCCESS and two.worker not in (None, first.worker)
    # `runs --json` shows where each attempt ran and why the first one ended.
    places = step(view, "victim").to_json()["placements"]
    assert [(p["attempt"], p["worker"], p["error"]) for p in places] == [
        (1, first.worker, f"dask worker {first.worker} lost"),
        (2, two.worker, None),
    ]
    assert all(p["host"] for p in places)
    # Dask reran the lost task elsewhere, but the step itself ran once per attempt.
    lines = starts.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"]
    last = Path(one.log_path).read_text().splitlines()[-1]
    assert last == f"dagtop: step failed: dask worker {first.worker} lost; attempt 2 of 2 in 0 s"
    wait_for(lambda: not alive(first.pid), 10, "the lost worker's step to die with it")
    wait_for(lambda: not alive(child), 10, "the step's own child to die with it")
    dask.wait_for_workers(3, timeout=60)  # its nanny restarts it for the tests that follow


# --- placement ----------------------------------------------------------------------------------


def test_a_pooled_step_runs_on_the_worker_with_that_resource(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    client = make_project(tmp_path, cluster[0], "remote", extra="[pools]\ngpu = 1\n")

    view = client.materialize(["on_gpu"])

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    workers = cluster[1].scheduler_info()["workers"]
    gpu = [a for a, w in workers.items() if w.get("resources", {}).get("gpu")]
    assert [a.worker for a in client.attempts(view.id)] == gpu


def test_a_dask_worker_runs_steps_without_importing_storage(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    # The gpu worker is a `dask worker` process of its own: what it imported, it imported
    # for the steps it ran.
    client = make_project(tmp_path, cluster[0], "remote", extra="[pools]\ngpu = 1\n")
    assert client.materialize(["on_gpu"]).status == "success"
    workers = cluster[1].scheduler_info()["workers"]
    gpu = [a for a, w in workers.items() if w.get("resources", {}).get("gpu")]

    def modules() -> list[str]:
        return sorted(sys.modules)

    loaded = set(cluster[1].run(modules, workers=gpu)[gpu[0]])

    assert {"engine.executor.dask_task", "engine.executor.spawn"} <= loaded
    assert not {"sqlmodel", "sqlalchemy", "pydantic"} & {m.split(".")[0] for m in loaded}
    assert not {m for m in loaded if m.startswith(("engine.storage", "engine.executor.launch"))}


def test_unset_limits_default_to_what_the_cluster_offers(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    from engine.executor.coordinator import Coordinator

    client = make_project(tmp_path, cluster[0], "remote")
    assert client.config.max_workers == 4  # read now: the file changes next
    # Neither max_workers nor [pools] given: the cluster's three threads, its one gpu.
    (tmp_path / "project" / "dagtop.toml").write_text(
        f'executor = "dask"\ndask_scheduler = "{cluster[0]}"\n'
    )
    unset = Client(tmp_path / "home", tmp_path / "project" / "pipelines")
    coordinator = Coordinator(unset.db, unset.paths, unset.config, unset.load)
    try:
        workers, pool_size = coordinator._limits()
        assert (workers, pool_size("gpu"), pool_size("tpu")) == (3, 1, 1)
    finally:
        coordinator.close()
    # Given, they are what the config says, whatever the cluster offers.
    given = Coordinator(client.db, client.paths, client.config, client.load)
    try:
        assert given._limits()[0] == 4
    finally:
        given.close()


def test_a_pool_no_worker_offers_fails_at_once(cluster: tuple[str, Any], tmp_path: Path) -> None:
    client = make_project(tmp_path, cluster[0], "remote")

    view = client.materialize(["on_tpu"])

    assert view.status == RunStatus.FAILED, [(s.key, s.status, s.error) for s in view.steps]
    assert "no dask worker offers the resource 'tpu'" in (step(view, "on_tpu").error or "")


# --- values -------------------------------------------------------------------------------------


def test_values_through_an_fsspec_url(cluster: tuple[str, Any], tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    client = make_project(tmp_path, cluster[0], "remote", extra=f'values_dir = "file://{shared}"\n')
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "go").touch()

    view = client.materialize(["talker", "listener"], params={"flags": str(flags)})

    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    stored = sorted(p.relative_to(shared).parts[0] for p in shared.rglob("*.pkl"))
    assert stored == ["listener", "talker"]
    assert not (tmp_path / "home" / "values").exists()


# --- the cluster itself, and user errors --------------------------------------------------------


def test_nothing_listens_beyond_loopback(cluster: tuple[str, Any]) -> None:
    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ours
    ]
    assert listening, "found no listening sockets: the check would prove nothing"
    assert {c.laddr.ip for c in listening if c.laddr} <= {"127.0.0.1"}, listening


@pytest.mark.parametrize(
    ("executor", "says"),
    [
        ("dask://127.0.0.1:1", "cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
        ("dask://nowhere", "is not a scheduler address like tcp://HOST:PORT"),
    ],
)
def test_a_bad_scheduler_is_one_line_and_an_exit_code(
    tmp_path: Path, executor: str, says: str
) -> None:
    (tmp_path / "pipelines").mkdir()
    shutil.copy(FIXTURES / "parallel.py", tmp_path / "pipelines" / "parallel.py")
    env = {**os.environ, "DAGTOP_EXECUTOR": executor}
    done = subprocess.run(
        [Path(sys.executable).with_name("dagtop"), "materialize", "source"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode != 0
    assert says in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_local_executor_never_imports_distributed() -> None:
    code = (
        "import sys, engine.client, engine.executor.coordinator, engine.service.daemon\n"
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_resources_and_typed_config_on_the_cluster(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    address, _ = cluster
    folder = tmp_path / "journal"
    folder.mkdir()
    client = make_project(tmp_path, address, "resourced",
                          extra=f'[resources.journal]\nfolder = "{folder}"\n')  # fmt: skip
    journal = folder / "journal.jsonl"

    def entries() -> list[dict[str, Any]]:
        lines = journal.read_text().splitlines()
        journal.unlink()
        return [json.loads(line) for line in lines]

    view = client.materialize(["configured"], params={"C": "0.5"})
    assert view.status == RunStatus.SUCCESS, [(s.key, s.error) for s in view.steps]
    (attempt,) = client.attempts(view.id)
    assert attempt.worker is not None and attempt.worker.startswith("tcp://127.0.0.1:")
    built, called, torn = entries()
    assert (built["event"], called, torn["event"]) == (
        "built", {"event": "called", "C": 0.5, "pid": attempt.pid}, "torn down",
    )  # fmt: skip
    assert built["pid"] == torn["pid"] == attempt.pid != os.getpid()

    failed = client.materialize(["configured"], params={"fail": "true"})
    assert failed.status == RunStatus.FAILED
    assert step(failed, "configured").error == "RuntimeError: failed on purpose"
    assert [e["event"] for e in entries()] == ["built", "called", "torn down"]
