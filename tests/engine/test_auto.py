"""Asset automation (`@asset(auto=...)`) on a real engine: real SQLite, real runs in real
processes, the `auto` sensor's own thread, or its passes driven with a fake clock."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.automation.auto import Automation
from engine.client import Client
from engine.errors import DefinitionError
from engine.history.views import RunView
from engine.service.daemon import Engine
from engine.status import RunStatus, TickStatus
from tests.waiting import wait_for

PIPELINE = textwrap.dedent(
    """
    import os
    import time

    from engine import Auto, DailyPartitions, StaticPartitions, asset

    regions = StaticPartitions(["eu", "us"])
    days = DailyPartitions(start="2025-01-01", end="2025-01-10")


    @asset
    def raw(context):
        time.sleep(float(context.params.get("sleep", 0)))
        return [1, 2, 3]


    @asset
    def prices():
        return 2


    @asset(auto=Auto.eager())
    def cleaned(raw):
        return [x * 2 for x in raw]


    @asset(auto=Auto.eager())
    def report(cleaned, prices):
        return sum(cleaned) * prices


    @asset(auto=Auto.on_missing())
    def bootstrap():
        if os.environ.get("BOOTSTRAP_FAILS"):
            raise RuntimeError("no seed yet")
        return "seeded"


    @asset(partitions=regions)
    def sales(context):
        return context.partition


    @asset(partitions=regions, auto=Auto.eager())
    def sales_summary(sales):
        return sales.upper()


    @asset(partitions=days)
    def events(context):
        return context.partition


    @asset(partitions=days, auto=Auto.eager())
    def daily_counts(events):
        return len(events)
    """
)

# Kept out of PIPELINE: it follows the wall clock's minutes, and the tests that count runs on
# a live engine must not depend on when a minute turns.
DIGEST = textwrap.dedent(
    """

    @asset(auto=Auto.on_cron("* * * * *"))
    def digest(raw):
        return len(raw)
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "auto_pipe.py").write_text(PIPELINE)
    (tmp_path / "dagtop.toml").write_text("max_workers = 2\n")
    return tmp_path


def _engine(project: Path, automation: bool = True) -> tuple[Client, Engine]:
    client = Client(project / "home", project / "pipelines")
    engine = Engine(client.paths, client.config, kind="tui", db=client.db, schedules=False,
                    sensors=False, watch=False, automation=automation)  # fmt: skip
    engine.start()
    client.attach(engine)
    return client, engine


@pytest.fixture
def engine(project: Path) -> Iterator[tuple[Client, Engine]]:
    client, engine = _engine(project)
    yield client, engine
    engine.stop()


def auto_runs(client: Client) -> list[RunView]:
    return [r for r in reversed(client.runs(200)) if r.trigger == "auto"]


def settled(client: Client, count: int) -> list[RunView] | None:
    """The auto runs, once there are `count` of them and all have ended."""
    runs = auto_runs(client)
    return runs if len(runs) == count and all(r.finished for r in runs) else None


def test_an_eager_chain_runs_once_per_upstream_update_in_one_run_in_order(
    engine: tuple[Client, Engine],
) -> None:
    client, eng = engine
    first = wait_for(lambda: settled(client, 1), what="bootstrap's run")
    assert [s.key for s in first[0].steps] == ["bootstrap"]
    client.materialize(["prices"])
    assert client.materialize(["raw"]).status == RunStatus.SUCCESS
    runs = wait_for(lambda: settled(client, 2), what="the chain's run")
    chain = runs[1]
    assert chain.status == RunStatus.SUCCESS
    assert [s.key for s in chain.steps] == ["cleaned", "report"]  # one run, dependency order
    assert chain.reason == "cleaned: missing; then report"
    assert eng.automation.run_pass() == []  # nothing left to ask for

    client.materialize(["raw"])
    runs = wait_for(lambda: settled(client, 3), what="the chain's second run")
    assert [s.key for s in runs[2].steps] == ["cleaned", "report"]
    assert runs[2].reason is not None and runs[2].reason.startswith(
        "cleaned: upstream raw updated at "
    )
    # An upstream of report alone: report, once.
    client.materialize(["prices"])
    runs = wait_for(lambda: settled(client, 4), what="report's run")
    assert [s.key for s in runs[3].steps] == ["report"]
    assert runs[3].reason is not None and "upstream prices updated" in runs[3].reason
    time.sleep(0.5)
    assert eng.automation.run_pass() == []
    assert len(auto_runs(client)) == 4


def test_each_pass_of_automation_is_a_tick_of_the_auto_sensor(
    engine: tuple[Client, Engine],
) -> None:
    client, eng = engine
    [bootstrap] = wait_for(lambda: settled(client, 1))
    ticks = wait_for(lambda: client.sensor_ticks("auto") or None)
    requested = [t for t in ticks if t.status == TickStatus.STARTED]
    assert [t.run_ids for t in requested] == [(bootstrap.id,)]
    assert eng.automation.run_pass() == []  # nothing new: a skipped tick, saying why
    newest = client.sensor_ticks("auto")[0]
    assert newest.status == TickStatus.SKIPPED
    assert newest.reason == "no condition asks for a run" and newest.run_ids == ()
    [auto] = [s for s in client.sensors() if s.name == "auto"]
    assert auto.last_tick is not None and auto.last_tick.started_at == newest.started_at


def test_eager_waits_for_a_missing_or_running_upstream(engine: tuple[Client, Engine]) -> None:
    client, eng = engine
    wait_for(lambda: settled(client, 1))  # bootstrap
    client.materialize(["raw"])
    runs = wait_for(lambda: settled(client, 2))
    assert [s.key for s in runs[1].steps] == ["cleaned"]  # report waits: prices is missing
    # raw updated while a newer raw is being materialized: cleaned waits for it, then runs once.
    slow = client.submit(_request(["raw"], {"sleep": 5}))  # long enough on a loaded machine
    client.materialize(["raw"])
    assert not client.run(slow).finished
    time.sleep(0.3)
    assert len(auto_runs(client)) == 2
    wait_for(lambda: client.run(slow).finished, timeout=30)
    runs = wait_for(lambda: settled(client, 3))
    assert [s.key for s in runs[2].steps] == ["cleaned"]
    time.sleep(0.5)
    assert eng.automation.run_pass() == []
    assert len(auto_runs(client)) == 3


def _request(selection: list[str], params: dict[str, object]):  # type: ignore[no-untyped-def]
    from engine.history.plan import RunRequest

    return RunRequest(selection=tuple(selection), params=dict(params))


def test_eager_on_static_partitions_runs_each_key_whose_upstream_updated(
    engine: tuple[Client, Engine],
) -> None:
    client, _ = engine
    wait_for(lambda: settled(client, 1))
    client.materialize(["sales"], partition="us")
    runs = wait_for(lambda: settled(client, 2))
    assert runs[1].partition == "us" and [s.key for s in runs[1].steps] == ["sales_summary"]
    client.materialize(["sales"], partition="eu")
    client.materialize(["sales"], partition="us")
    runs = wait_for(lambda: settled(client, 4))
    assert sorted(r.partition or "" for r in runs[2:]) == ["eu", "us"]


def test_eager_on_time_partitions_looks_at_the_latest_partition_only(
    engine: tuple[Client, Engine],
) -> None:
    client, eng = engine
    wait_for(lambda: settled(client, 1))
    client.materialize(["events"], partition="2025-01-03")  # an old day: not eager's concern
    time.sleep(0.5)
    assert eng.automation.run_pass() == []
    client.materialize(["events"], partition="2025-01-09")  # the latest day
    runs = wait_for(lambda: settled(client, 2))
    assert runs[1].partition == "2025-01-09" and [s.key for s in runs[1].steps] == ["daily_counts"]
    assert runs[1].to_json()["reason"] == "missing"  # what `runs --json` prints
    assert runs[1].to_json()["trigger"] == "auto"


def test_on_missing_runs_once_even_when_it_fails(project: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BOOTSTRAP_FAILS", "1")
    client, eng = _engine(project)
    try:
        runs = wait_for(lambda: settled(client, 1))
        assert runs[0].status == RunStatus.FAILED and runs[0].reason == "missing"
        eng.automation.poke(full=True)
        time.sleep(0.5)
        assert eng.automation.run_pass() == []
        assert len(auto_runs(client)) == 1
    finally:
        eng.stop()
    # A restart does not ask again either: the cause is consumed in storage.
    client, eng = _engine(project)
    try:
        time.sleep(0.5)
        assert eng.automation.run_pass() == []
        assert len(auto_runs(client)) == 1
    finally:
        eng.stop()


def test_turning_the_auto_sensor_off_stops_all_automation(engine: tuple[Client, Engine]) -> None:
    client, eng = engine
    wait_for(lambda: settled(client, 1))
    client.set_enabled("sensor", "auto", False)
    client.materialize(["raw"])
    client.materialize(["sales"], partition="eu")
    time.sleep(0.5)
    assert eng.automation.run_pass() == []
    assert len(auto_runs(client)) == 1
    client.set_enabled("sensor", "auto", True)  # what happened while off is asked for now
    runs = wait_for(lambda: settled(client, 3))
    assert {tuple(s.key for s in r.steps) for r in runs[1:]} == {("cleaned",), ("sales_summary",)}


def test_the_toggle_is_kept_in_storage_without_an_engine(project: Path) -> None:
    client = Client(project / "home", project / "pipelines")
    client.set_enabled("sensor", "auto", False)
    client, eng = _engine(project)
    try:
        time.sleep(0.5)
        assert eng.automation.run_pass() == []
        assert auto_runs(client) == []  # not even bootstrap
    finally:
        eng.stop()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_on_cron_runs_once_per_tick_after_its_upstreams_updated_since(project: Path) -> None:
    with (project / "pipelines" / "auto_pipe.py").open("a") as pipeline:
        pipeline.write(DIGEST)
    client, eng = _engine(project, automation=False)
    try:
        clock = Clock(time.time() - 3600)
        auto = Automation(eng.db, eng.manifest, eng._record_run, eng._start_run, clock=clock,
                          timezone="UTC")  # fmt: skip
        auto.run_pass()  # first seen an hour ago: bootstrap is missing
        wait_for(lambda: settled(client, 1))
        mat_at = client.materialize(["raw"]).ended_at
        assert mat_at is not None
        minute = mat_at - mat_at % 60
        clock.now = minute + 65  # the tick at minute + 60 came after raw's value: nothing
        assert [r for r in auto.run_pass() if "digest" in client.run(r).target] == []
        clock.now = minute - 55  # the tick at minute - 60: raw updated since, digest runs
        ids = auto.run_pass()
        digest = [client.run(r) for r in ids if client.run(r).target == "digest"]
        assert len(digest) == 1
        assert digest[0].reason is not None and digest[0].reason.startswith("cron tick ")
        wait_for(lambda: client.run(digest[0].id).finished)
        assert not [r for r in auto.run_pass() if client.run(r).target == "digest"]  # once
    finally:
        eng.stop()


def test_auto_refuses_what_is_not_a_condition() -> None:
    from engine import Auto, asset

    with pytest.raises(DefinitionError, match="auto must be"):
        asset(name="a", auto="eager")(lambda: 1)  # type: ignore[call-overload]
    with pytest.raises(DefinitionError, match="cron string"):
        Auto.on_cron("")


def test_a_bad_cron_is_a_load_error(tmp_path: Path) -> None:
    from engine.loading.loader import load

    (tmp_path / "bad.py").write_text(
        "from engine import Auto, asset\n\n@asset(auto=Auto.on_cron('61 * * * *'))\n"
        "def a():\n    return 1\n"
    )
    manifest = load(tmp_path, cache_dir=tmp_path / "cache")
    assert "bad.py" in manifest.errors and "on_cron" in manifest.errors["bad.py"].message


MIXED = textwrap.dedent(
    """
    from engine import Auto, DailyPartitions, asset

    days = DailyPartitions(start="2025-01-01", end="2025-01-05")


    @asset
    def base(context):
        if context.params.get("fail"):
            raise RuntimeError("asked to fail")
        return 1


    @asset(auto=Auto.eager())
    def lookup(base):
        return base + 1


    @asset(partitions=days, auto=Auto.eager())
    def per_day(context, lookup):
        return f"{context.partition}: {lookup}"
    """
)


def test_an_eager_asset_partitioned_otherwise_waits_for_its_upstreams_run(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "mixed.py").write_text(MIXED)
    client, eng = _engine(tmp_path)
    try:
        client.materialize(["base"])
        # lookup is requested first (unpartitioned); per_day, in a run of its own partition,
        # must wait for lookup's value rather than run beside it and miss it.
        runs = wait_for(lambda: settled(client, 2), what="lookup's run, then per_day's")
        assert [[s.key for s in r.steps] for r in runs] == [["lookup"], ["per_day"]]
        assert all(r.status == RunStatus.SUCCESS for r in runs)
        assert runs[1].partition == "2025-01-04"
    finally:
        eng.stop()


def test_a_missing_eager_asset_whose_run_failed_is_asked_again_when_an_upstream_updates(
    tmp_path: Path,
) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "mixed.py").write_text(
        MIXED.replace("return base + 1", "return 1 / (base - 1)")
    )
    client, eng = _engine(tmp_path)
    try:
        client.materialize(["base"])
        runs = wait_for(lambda: settled(client, 1))
        assert runs[0].status == RunStatus.FAILED  # lookup divides by zero: still missing
        time.sleep(0.5)
        assert eng.automation.run_pass() == []  # once per cause
        client.materialize(["base"])  # a new upstream value: lookup is asked for again
        runs = wait_for(lambda: settled(client, 2))
        assert [s.key for s in runs[1].steps] == ["lookup"]
    finally:
        eng.stop()
