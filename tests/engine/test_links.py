"""Every command reaches an engine the same way over every link: an engine embedded in the
process, the socket of one on this machine, the database's command table, and no engine at
all (the command does its own work). Real engines, real subprocesses, real SQLite."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.client import Client, RunRequest, RunView
from engine.errors import EngineError, NoEngine
from engine.loading.config import load_config, resolve_paths
from engine.protocol import commands as protocol
from engine.service import ipc
from engine.service.daemon import Engine
from engine.status import RunStatus
from engine.storage import repo

pytestmark = pytest.mark.serial

PIPELINE = textwrap.dedent(
    """
    from pathlib import Path

    from engine import DailyPartitions, asset, schedule

    days = DailyPartitions(start="2025-01-01", end="2025-02-01")


    @asset(partitions=days)
    def orders(context):
        return len(context.partition)


    @asset(partitions=days)
    def revenue(orders):
        return orders * 2


    @asset
    def flaky(context):
        if Path(context.params["flag"]).exists():
            raise RuntimeError("the flag is up")
        return 1


    schedule("0 3 * * *", "orders", name="nightly")
    """
)

LINKS = ["embedded", "socket", "database", "in-process"]


def wait_for(what: Callable[[], object], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_project(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "shop.py").write_text(PIPELINE)
    (root / "dagtop.toml").write_text("max_workers = 4\n")
    return root


def start_engine(project: Path) -> Engine:
    paths = resolve_paths(project / "home", project / "pipelines")
    engine = Engine(paths, load_config(paths.project), sensors=False, watch=False)
    engine.start()
    return engine


@pytest.fixture(params=LINKS)
def linked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Client, str]]:
    """A client of a project whose engine it reaches over the link named by the parameter."""
    where = str(request.param)
    project = make_project(tmp_path)
    engine = None
    if where == "database":
        # No socket can be made where it belongs (a folder is in the way): the engine takes
        # commands only from the database, and the client finds the socket refuses.
        (project / "home").mkdir()
        ipc.socket_path(project / "home").mkdir()
    if where != "in-process":
        engine = start_engine(project)
    client = Client(project / "home", project / "pipelines")
    if engine is not None and where == "embedded":
        client.attach(engine)
    try:
        yield client, where
    finally:
        if engine is not None:
            engine.stop()


def test_every_command_over_every_link(linked: tuple[Client, str], tmp_path: Path) -> None:
    client, where = linked
    seen: list[RunView] = []

    view = client.materialize(["orders", "revenue"], "2025-01-05", on_change=seen.append)

    assert client._link is not None and client._link.where == where
    assert view.status == "success" and [s.status for s in view.steps] == ["success"] * 2
    assert view.partition == "2025-01-05"
    assert seen and seen[-1].id == view.id and seen[-1].finished

    with pytest.raises(EngineError, match="unknown asset 'nope'"):
        client.materialize(["nope"])

    client.set_enabled("schedule", "nightly", False)
    assert [s.enabled for s in Client(client.paths.home, client.paths.pipelines).schedules()] == [
        False
    ]
    with pytest.raises(EngineError, match="nope"):
        client.set_enabled("schedule", "nope", True)

    backfill_id = client.backfill(["orders"], first="2025-01-01", last="2025-01-03")
    progress: list[dict[str, Any]] = []
    info = client.follow_backfill(backfill_id, progress.append)
    assert info["status"] == "success" and info["total"] == 3
    assert info["partitions"] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert progress and progress[-1] == info

    flag = tmp_path / "flag"
    flag.touch()
    failed = client.materialize(["flaky"], params={"flag": str(flag)})
    assert failed.status == "failed"
    flag.unlink()
    again = client.rerun_from_failure(failed.id[:8])
    assert (again.id, again.status) == (failed.id, "success")
    assert client.cancel(again.id[:8]).status == "success"  # nothing left to cancel

    if where == "in-process":
        with pytest.raises(NoEngine):
            client.submit(_request("orders", "2025-01-06"))
    else:
        run_id = client.submit(_request("orders", "2025-01-06"))
        assert wait_for(lambda: client.run(run_id).finished and client.run(run_id)).status == (
            "success"
        )


def _request(asset: str, partition: str) -> Any:
    from engine.client import RunRequest

    return RunRequest(selection=(asset,), partition=partition)


def test_a_request_is_planned_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.history import plan

    planned: list[plan.RunRequest] = []
    real = plan.plan

    def counting(manifest: Any, request: plan.RunRequest, now: float | None = None) -> Any:
        planned.append(request)
        return real(manifest, request, now)

    monkeypatch.setattr(plan, "plan", counting)
    project = make_project(tmp_path)
    client = Client(project / "home", project / "pipelines")

    assert client.materialize(["orders"], "2025-01-05").status == "success"

    assert len(planned) == 1


def test_a_malformed_command_is_refused_in_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    engine = start_engine(project)
    try:
        home = project / "home"
        asked = {"op": "command", "kind": "run", "payload": {"partition": None}}
        [answer] = list(ipc.request(home, asked))
        assert answer == {"error": "a run request needs params, pipeline, selection, trigger",
                          "refused": True}  # fmt: skip
        [answer] = list(ipc.request(home, {**asked, "kind": "launch"}))
        assert answer["error"] == "unknown command 'launch'"
        [answer] = list(ipc.request(home, {**asked, "op": "stream", "kind": "follow_run"}))
        assert answer["error"] == "a follow_run request needs run_id"

        with engine_session(engine) as s:
            command_id = repo.add_command(s, "backfill", {"selection": ["orders"]}, time.time()).id
        row = wait_for(lambda: (c := _command(engine, command_id)) and c.done_at and c)
        assert (row.status, row.error) == ("failed", "a backfill request needs keys, max_parallel")
    finally:
        engine.stop()


def test_a_command_for_another_database_is_never_answered_by_this_homes_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DAGTOP_DATABASE_URL set for one command (a copy of the history, say) while the home's
    # engine runs on its own database: the engine refuses, and a read goes to the named one.
    project = make_project(tmp_path)
    engine = start_engine(project)
    try:
        client = Client(project / "home", project / "pipelines")
        client.reads_over_socket = True
        assert client.materialize(["orders"], "2025-01-05").status == RunStatus.SUCCESS
        assert len(client.runs(10)) == 1
        other = tmp_path / "other.db"
        monkeypatch.setenv("DAGTOP_DATABASE_URL", f"sqlite:///{other}")
        elsewhere = Client(project / "home", project / "pipelines")
        elsewhere.reads_over_socket = True
        assert elsewhere.runs(10) == []  # the named database's history, not the engine's
        query: protocol.RunsQuery = {"limit": 10, "offset": 0}
        asked = protocol.socket_request(protocol.READ_RUNS, query, database=f"sqlite:///{other}")
        [answer] = list(ipc.request(project / "home", asked))
        assert answer["refused"] and "another database" in answer["error"]
    finally:
        engine.stop()


def engine_session(engine: Engine) -> Any:
    from engine.storage.db import session_scope

    return session_scope(engine.db)


def _command(engine: Engine, command_id: int | None) -> Any:
    from engine.storage.db import read_scope

    with read_scope(engine.db) as s:
        return repo.get_command(s, command_id or 0)


def test_the_wire_form_of_a_command_and_of_its_answer() -> None:
    request = protocol.socket_request(
        protocol.RUN,
        protocol.RunCommand(selection=["orders"], pipeline=None, partition="2025-01-05",
                            params={}, trigger="manual"),
        follow=protocol.FOLLOW_RUN,
    )  # fmt: skip
    line = json.loads(json.dumps(request))
    assert protocol.read_socket_request(line) == request
    assert line == {
        "op": "command",
        "kind": "run",
        "payload": {"selection": ["orders"], "pipeline": None, "partition": "2025-01-05",
                    "params": {}, "trigger": "manual"},
        "follow": "follow_run",
        "database": None,  # the caller's setting: the home's SQLite file
    }  # fmt: skip
    assert protocol.RUN.payload(line["payload"]) == line["payload"]
    with pytest.raises(ValueError, match="needs selection"):
        protocol.RUN.payload({"pipeline": None, "partition": None, "params": {}, "trigger": ""})
    bad: list[object] = [
        {"op": "launch", "kind": "run", "payload": {}},
        {"op": "command", "kind": "run"},
        ["run"],
        {"op": "stream", "kind": "follow_run", "payload": {}, "follow": 1},
    ]
    for message in bad:
        with pytest.raises(ValueError):
            protocol.read_socket_request(message)


def test_a_promised_engine_starts_at_the_first_command_which_waits_for_it(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    client = Client(project / "home", project / "pipelines")
    starting = client.start_engine_soon(kind="tui")
    assert client.start_engine_soon() is starting  # one promise
    try:
        time.sleep(0.3)
        assert not starting.running() and not starting.done()  # nothing starts by itself
        assert client.daemon() is None
        # The command begins the start and waits for it.
        run_id = client.submit(RunRequest(selection=("orders",), partition="2025-01-03"))
        engine = starting.result(timeout=0)
        assert engine is not None and client.engine is engine
        assert wait_for(lambda: client.run(run_id).finished)
        assert client.run(run_id).status == RunStatus.SUCCESS
        client.begin_engine()  # begun already: nothing more starts
        assert client.engine is engine
    finally:
        if client.engine is not None:
            client.engine.stop()


def test_a_promised_engine_defers_to_a_daemon_that_took_the_home_meanwhile(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    client = Client(project / "home", project / "pipelines")
    starting = client.start_engine_soon(kind="tui")
    daemon = start_engine(project)  # another engine holds the home before this one begins
    try:
        run_id = client.submit(RunRequest(selection=("orders",), partition="2025-01-04"))
        assert starting.result(timeout=0) is None and client.engine is None
        assert wait_for(lambda: client.run(run_id).finished)  # the daemon ran it
    finally:
        daemon.stop()


def test_a_promise_called_off_leaves_commands_to_the_usual_links(tmp_path: Path) -> None:
    """The UI closed before its engine began: `run_app` calls the start off, and a command
    after that neither waits for it nor starts it."""
    project = make_project(tmp_path)
    client = Client(project / "home", project / "pipelines")
    starting = client.start_engine_soon(kind="tui")
    assert starting.cancel()
    with pytest.raises(NoEngine):
        client.submit(RunRequest(selection=("orders",), partition="2025-01-05"))
    assert client.engine is None and starting.cancelled()
    view = client.materialize(["orders"], partition="2025-01-05")  # runs in this process
    assert view.status == RunStatus.SUCCESS and client.engine is None
