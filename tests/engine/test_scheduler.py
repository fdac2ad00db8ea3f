"""The cron scheduler on real SQLite and a real manifest, driven by a fake clock."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import select

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from engine.authoring.cron import parse_cron  # noqa: E402
from engine.automation.scheduler import Scheduler, _first_from  # noqa: E402
from engine.errors import EngineError, PartitionError  # noqa: E402
from engine.history import plan  # noqa: E402
from engine.loading.loader import load  # noqa: E402
from engine.loading.manifest import Manifest  # noqa: E402
from engine.storage import repo  # noqa: E402
from engine.storage.db import open_db, read_scope, session_scope  # noqa: E402
from engine.storage.models import Materialization, Run, ScheduleTick  # noqa: E402
from tests.postgres import BACKENDS, database_for  # noqa: E402

PIPELINE = """
from engine import DailyPartitions, Pipeline, asset, schedule, task


@asset
def report():
    return 1


@asset
def raw():
    return 2


@asset(partitions=DailyPartitions(start="2025-01-01"))
def daily_events(context):
    return context.partition


schedule("@daily", report, name="report_daily")
schedule("@daily", report, name="report_catchup", catchup=True)
schedule("0 * * * *", report, name="report_hourly", catchup=True)
schedule("@daily", daily_events, name="events_daily")
schedule("@daily", daily_events, name="events_backfill", catchup=True)
schedule("@daily", raw, name="raw_daily")

with Pipeline("nightly", schedule="0 3 * * *", start="2025-01-02", catchup=True):

    @task
    def extract():
        return 1


with Pipeline("since_january", schedule="@daily", start="2025-01-01"):

    @task
    def load():
        return 1
"""


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Env:
    db: SAEngine
    full: Manifest
    clock: FakeClock
    started: list[str] = field(default_factory=list)

    def scheduler(
        self, *names: str, manifest: Manifest | None = None, **options: Any
    ) -> tuple[Scheduler, Manifest]:
        """A Scheduler (as the Engine builds it) over the manifest restricted to `names`."""
        base = manifest or self.full
        m = replace(base, schedules={n: self.full.schedules[n] for n in names})

        def record_run(session: Any, request: plan.RunRequest) -> str:
            return plan.record(session, m, request, self.clock().timestamp())

        options.setdefault("timezone", "UTC")
        sched = Scheduler(self.db, record_run, self.started.append, clock=self.clock, **options)
        return sched, m

    def runs(self, schedule: str) -> list[Run]:
        with read_scope(self.db) as s:
            rows = s.exec(select(Run).where(Run.trigger_ref == schedule)).all()
        return sorted(rows, key=lambda r: json.loads(r.params)["scheduled_for"])

    def ticks(self, schedule: str) -> list[ScheduleTick]:
        with read_scope(self.db) as s:
            return list(reversed(repo.schedule_ticks(s, schedule, limit=10_000)))


def scheduled_for(runs: list[Run]) -> list[str]:
    return [json.loads(r.params)["scheduled_for"] for r in runs]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("pipelines")
    (root / "scheduled.py").write_text(PIPELINE)
    m = load(root)
    assert m.ok, m.errors
    return m


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path, manifest: Manifest) -> Iterator[Env]:
    db = open_db(database_for(request, tmp_path))
    yield Env(db=db, full=manifest, clock=FakeClock(utc(2025, 1, 5, 12)))
    db.dispose()


def test_a_cron_tick_creates_exactly_one_run(env: Env) -> None:
    sched, m = env.scheduler("report_daily")
    sched.sync(m)
    assert env.runs("report_daily") == []  # no start, no partitions: nothing in the past

    env.clock.now = utc(2025, 1, 6, 0, 0, 30)
    ids = sched.run_due("report_daily")
    assert len(ids) == 1
    assert sched.run_due("report_daily") == []
    (run,) = env.runs("report_daily")
    assert run.id == ids[0]
    assert env.started == ids
    assert (run.trigger, run.trigger_ref, run.kind) == ("schedule", "report_daily", "assets")
    assert json.loads(run.params) == {"scheduled_for": "2025-01-06T00:00:00+00:00"}
    (tick,) = env.ticks("report_daily")
    assert (tick.status, tick.run_id) == ("started", run.id)
    assert tick.tick_time == utc(2025, 1, 6).timestamp()


def test_catchup_runs_every_tick_missed_during_downtime_once(env: Env) -> None:
    name = "report_catchup"
    first, m = env.scheduler(name)
    first.sync(m)
    env.clock.now = utc(2025, 1, 6, 0, 0, 5)
    assert len(first.run_due(name)) == 1
    first.shutdown()

    env.clock.advance(days=5)  # down from Jan 6 to Jan 11
    second, m = env.scheduler(name)
    second.sync(m)
    runs = env.runs(name)
    assert scheduled_for(runs) == [f"2025-01-{d:02d}T00:00:00+00:00" for d in range(6, 12)]
    assert env.started == [r.id for r in runs]  # handed over in tick order

    third, m = env.scheduler(name)  # another restart: nothing is run twice
    third.sync(m)
    third.sync(m)
    assert third.run_due(name) == []
    assert len(env.runs(name)) == 6
    assert [t.status for t in env.ticks(name)] == ["started"] * 6


def test_without_catchup_only_the_latest_missed_tick_runs(env: Env) -> None:
    name = "report_daily"
    first, m = env.scheduler(name)
    first.sync(m)
    env.clock.now = utc(2025, 1, 6, 0, 0, 5)
    assert len(first.run_due(name)) == 1

    env.clock.advance(days=5, hours=3)
    second, m = env.scheduler(name)
    second.sync(m)
    assert scheduled_for(env.runs(name)) == [
        "2025-01-06T00:00:00+00:00",
        "2025-01-11T00:00:00+00:00",
    ]
    assert len(env.ticks(name)) == 2


def test_a_new_schedule_without_catchup_starts_with_its_next_tick(env: Env) -> None:
    # `start` is in the past, but without catchup a first start runs nothing unasked.
    name = "since_january"
    first, m = env.scheduler(name)
    first.sync(m)
    assert env.runs(name) == []
    first.shutdown()

    env.clock.advance(hours=1)  # restarted before the next tick: still nothing
    second, m = env.scheduler(name)
    second.sync(m)
    assert env.runs(name) == []
    second.shutdown()

    env.clock.now = utc(2025, 1, 8, 9)  # down across two ticks: the latest runs, once
    third, m = env.scheduler(name)
    third.sync(m)
    assert scheduled_for(env.runs(name)) == ["2025-01-08T00:00:00+00:00"]


def test_a_daily_partitioned_target_materializes_the_day_that_just_ended(env: Env) -> None:
    name = "events_daily"
    env.clock.now = utc(2025, 1, 4, 12)
    sched, m = env.scheduler(name)
    sched.sync(m)
    assert env.runs(name) == []
    env.clock.now = utc(2025, 1, 5)
    sched.run_due(name)
    (run,) = env.runs(name)
    assert run.partition == "2025-01-04"
    assert json.loads(run.selection) == ["daily_events"]


def test_partitioned_catchup_backfills_missing_partitions_from_the_start(env: Env) -> None:
    name = "events_backfill"
    with session_scope(env.db) as s:
        for key, path in (("2025-01-02", "/values/a"), ("2025-01-03", None)):
            s.add(
                Materialization(
                    asset="daily_events", partition=key, run_id="old", created_at=1.0,
                    value_path=path,
                )
            )  # fmt: skip
    env.clock.now = utc(2025, 1, 6, 5)
    sched, m = env.scheduler(name)
    sched.sync(m)

    assert [r.partition for r in env.runs(name)] == [
        "2025-01-01",
        "2025-01-03",  # its only materialization lost its value: not materialized
        "2025-01-04",
        "2025-01-05",
    ]
    ticks = env.ticks(name)
    assert [datetime.fromtimestamp(t.tick_time, UTC).day for t in ticks] == [2, 3, 4, 5, 6]
    assert [(t.status, t.reason) for t in ticks][1] == ("skipped", "already materialized")
    assert sched.run_due(name) == []


def test_a_pipeline_schedule_with_start_and_catchup_in_its_timezone(env: Env) -> None:
    name = "nightly"
    env.clock.now = utc(2025, 1, 4, 12)
    sched, m = env.scheduler(name, timezone="Europe/Berlin")
    sched.sync(m)
    runs = env.runs(name)
    # start 2025-01-02 is midnight in Berlin; the task pipeline runs at 03:00 Berlin time.
    assert scheduled_for(runs) == [
        "2025-01-02T03:00:00+01:00",
        "2025-01-03T03:00:00+01:00",
        "2025-01-04T03:00:00+01:00",
    ]
    assert {(r.kind, r.target, r.partition) for r in runs} == {("pipeline", "nightly", None)}
    (status,) = sched.status()
    assert status.next_tick == datetime.fromisoformat("2025-01-05T03:00:00+01:00")
    assert status.last_tick == datetime.fromisoformat("2025-01-04T03:00:00+01:00")
    assert (status.last_status, status.last_run_id) == ("started", runs[-1].id)


@pytest.mark.parametrize("step_minutes", [10, None], ids=["every-10-min", "one-catch-up"])
@pytest.mark.parametrize(
    ("begin", "hours", "local_hours"),
    [
        # Fall back: 01:00 happens twice (EDT, then EST); each real hour gets one tick.
        (utc(2024, 11, 3, 3, 30), 6, [0, 1, 1, 2, 3, 4]),
        # Spring forward: 02:00 does not exist.
        (utc(2024, 3, 10, 4, 30), 5, [0, 1, 3, 4, 5]),
    ],
)
def test_hourly_cron_across_dst_fires_once_per_real_hour(
    env: Env, begin: datetime, hours: int, local_hours: list[int], step_minutes: int | None
) -> None:
    name = "report_hourly"
    env.clock.now = begin
    sched, m = env.scheduler(name, timezone="America/New_York")
    sched.sync(m)
    if step_minutes is None:  # asleep the whole time, then one catch-up
        env.clock.advance(hours=hours)
        sched.run_due(name)
    else:
        for _ in range(hours * 60 // step_minutes):  # the job's firings
            env.clock.advance(minutes=step_minutes)
            sched.run_due(name)
    times = [datetime.fromtimestamp(t.tick_time, UTC) for t in env.ticks(name)]
    first = begin + timedelta(minutes=30)
    assert times == [first + timedelta(hours=i) for i in range(hours)]
    assert [datetime.fromisoformat(s).hour for s in scheduled_for(env.runs(name))] == local_hours


def test_first_fire_time_inside_a_repeated_hour() -> None:
    # CronTrigger alone answers 01:00 EST (06:00 UTC) here, before the asked-for instant.
    trigger = parse_cron("0 * * * *", "America/New_York")
    after = utc(2024, 11, 3, 6, 0, 0) + timedelta(microseconds=1)
    assert _first_from(trigger, after) == utc(2024, 11, 3, 7)
    assert _first_from(trigger, utc(2024, 11, 3, 6), inclusive=False) == utc(2024, 11, 3, 7)
    assert _first_from(trigger, utc(2024, 11, 3, 5, 30)) == utc(2024, 11, 3, 6)


def test_catchup_is_bounded_to_the_latest_ticks(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    name = "report_hourly"
    env.clock.now = utc(2025, 1, 5, 0, 30)
    sched, m = env.scheduler(name, max_catchup=5)
    sched.sync(m)
    env.clock.now = utc(2025, 1, 5, 1, 0, 10)
    assert len(sched.run_due(name)) == 1
    env.clock.now = utc(2025, 1, 6, 0, 30)  # ticks 02:00 .. 00:00 missed: 23
    with caplog.at_level(logging.WARNING, logger="engine.automation.scheduler"):
        assert len(sched.run_due(name)) == 5
    assert "18 older ticks dropped" in caplog.text
    assert [s[11:16] for s in scheduled_for(env.runs(name))] == [
        "01:00",
        "20:00",
        "21:00",
        "22:00",
        "23:00",
        "00:00",
    ]
    assert sched.run_due(name) == []


def test_turning_a_schedule_off_persists_and_skips_the_off_period(env: Env) -> None:
    name = "report_catchup"
    sched, m = env.scheduler(name)
    sched.sync(m)
    sched.set_enabled(name, False)
    assert sched._aps.get_job(name).next_run_time is None  # paused
    env.clock.now = utc(2025, 1, 8, 12)
    assert sched.run_due(name) == []

    restarted, m = env.scheduler(name)  # off survives a restart
    restarted.sync(m)
    (status,) = restarted.status()
    assert (status.enabled, status.next_tick) == (False, None)
    assert restarted._aps.get_job(name).next_run_time is None
    assert env.runs(name) == []

    restarted.set_enabled(name, True)  # on at Jan 8 12:00: Jan 6..8 are not caught up
    assert restarted.run_due(name) == []
    (status,) = restarted.status()
    assert (status.enabled, status.next_tick) == (True, utc(2025, 1, 9))
    env.clock.now = utc(2025, 1, 9, 0, 0, 1)
    assert len(restarted.run_due(name)) == 1
    assert scheduled_for(env.runs(name)) == ["2025-01-09T00:00:00+00:00"]
    assert len(env.ticks(name)) == 1

    with pytest.raises(EngineError, match="did you mean report_catchup"):
        restarted.set_enabled("report_catchp", False)


def test_sync_adds_replaces_and_removes_jobs(env: Env) -> None:
    sched, m = env.scheduler("report_daily", "report_catchup")
    sched.sync(m)
    assert {j.id for j in sched._aps.get_jobs()} == {"report_daily", "report_catchup"}
    job = sched._aps.get_job("report_daily")
    assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, None)

    changed = replace(m.schedules["report_daily"], cron="0 6 * * *")
    sched.sync(replace(m, schedules={"report_daily": changed}))
    assert [j.id for j in sched._aps.get_jobs()] == ["report_daily"]
    assert str(sched._aps.get_job("report_daily").trigger) == str(parse_cron("0 6 * * *", UTC))
    assert [s.name for s in sched.status()] == ["report_daily"]
    with pytest.raises(EngineError, match="unknown schedule"):
        sched.run_due("report_catchup")


def test_a_target_that_no_longer_plans_records_a_failed_tick(env: Env) -> None:
    name = "raw_daily"
    without_raw = replace(env.full, assets={k: v for k, v in env.full.assets.items() if k != "raw"})
    sched, m = env.scheduler(name, manifest=without_raw)
    sched.sync(m)
    env.clock.now = utc(2025, 1, 6, 0, 1)
    assert sched.run_due(name) == []
    env.clock.now = utc(2025, 1, 7, 0, 1)
    assert sched.run_due(name) == []
    ticks = env.ticks(name)
    assert [(t.status, t.run_id) for t in ticks] == [("failed", None)] * 2
    assert "unknown asset 'raw'" in (ticks[0].reason or "")
    (status,) = sched.status()
    assert status.last_status == "failed"
    assert env.runs(name) == []


def test_a_planning_error_rolls_back_the_run_and_records_a_failed_tick(env: Env) -> None:
    name = "report_daily"
    m = replace(env.full, schedules={name: env.full.schedules[name]})

    def record_then_fail(session: Any, request: plan.RunRequest) -> str:
        plan.record(session, m, request, env.clock().timestamp())  # adds rows, then fails
        raise PartitionError("no such partition")

    sched = Scheduler(env.db, record_then_fail, env.started.append, env.clock, "UTC")
    sched.sync(m)
    env.clock.now = utc(2025, 1, 6, 0, 5)
    assert sched.run_due(name) == []
    (tick,) = env.ticks(name)
    assert (tick.status, tick.reason, tick.run_id) == ("failed", "no such partition", None)
    with read_scope(env.db) as s:
        assert s.exec(select(Run)).all() == []
    assert env.started == []


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
def test_two_schedulers_on_one_database_take_each_tick_once(env: Env) -> None:
    name = "report_hourly"
    env.clock.now = utc(2025, 1, 5, 12, 30)
    a, m = env.scheduler(name)
    b, _ = env.scheduler(name)
    a.sync(m)
    b.sync(m)
    env.clock.advance(hours=6)
    barrier = threading.Barrier(2)

    def go(s: Scheduler) -> None:
        barrier.wait()
        s.run_due(name)

    threads = [threading.Thread(target=go, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(env.runs(name)) == 6
    assert sorted(env.started) == sorted(r.id for r in env.runs(name))


def test_the_background_scheduler_fires_the_job(env: Env) -> None:
    name = "report_daily"
    sched, m = env.scheduler(name)
    sched.sync(m)
    sched.start()
    try:
        env.clock.now = utc(2025, 1, 6, 0, 0, 2)
        sched._aps.modify_job(name, next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 10
        while not env.started and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sched.shutdown()
    (run,) = env.runs(name)
    assert env.started == [run.id]
    assert json.loads(run.params)["scheduled_for"] == "2025-01-06T00:00:00+00:00"
