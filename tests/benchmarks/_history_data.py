"""A long run history, made fast and honestly: for the scale benchmark and the tests that check
that reads do not grow with the history.

The project is real pipeline files (an hourly two-asset chain over a year with a blocking
check, an unpartitioned report that reads every hour, a layered group of feature assets, a
task pipeline), loaded by dagtop's own loader. The history goes into a real database built by
dagtop's own schema (`open_db`), inserted in bulk through SQLAlchemy Core (the fastest honest
way: the same tables, constraints and indexes the engine writes, about 100k rows a second),
with what the engine leaves behind for each run: steps, attempts (a retry now and then),
materializations (only the newest of each asset partition keeps its value, and that value is
a real file), check results, events and a few resource samples.

The history is laid out so that its size is all that changes between sizes: first the year of
hourly keys is backfilled (one run per key, both assets), then the rest of the runs are what a
project does afterwards: the chain re-materialized at random hours (sometimes only `raw`), the
task pipeline every few minutes, feature assets by hand and by schedule. A history of 10,000
runs and one of 100,000 therefore show the same partitions; the larger one has ten times the
rows behind them.

No Textual here: tests under tests/engine import it.
"""

from __future__ import annotations

import json
import random
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.status import RunStatus, StepStatus
from tests.benchmarks._ui_data import layered_dag

EVENTS = textwrap.dedent(
    """
    from engine import CheckResult, HourlyPartitions, asset, check

    hours = HourlyPartitions(start="2025-01-01-00:00", end="{end}")


    @asset(group="events", partitions=hours)
    def raw(context):
        return {{"hour": context.partition}}


    @asset(group="events", partitions=hours)
    def clean(raw):
        return raw


    @check(asset="clean", blocking=True)
    def clean_has_rows(clean):
        return CheckResult(passed=bool(clean))


    @asset(group="events")
    def hourly_report(clean):
        return len(clean)


    @asset(group="events", partitions=hours)
    def never(raw):
        return raw
    """
)
TASKS = textwrap.dedent(
    """
    from engine import Pipeline, task

    with Pipeline("ingest", description="Pull, load and announce new files"):

        @task
        def extract():
            return 1

        @task
        def load(extract):
            return extract

        @task
        def notify(load):
            return None
    """
)
YEAR_END = "2026-01-01-00:00"
FEATURES = 30


@dataclass(frozen=True)
class History:
    """What was made, for the reads to ask about."""

    runs: int
    steps: int
    attempts: int
    materializations: int
    keys: int  # hourly keys of the chain
    a_key: str  # a key of the chain with a current value
    a_run: str  # a finished run of the chain, with its log files
    seconds: float  # how long building it took


def write_project(root: Path, end: str = YEAR_END) -> Any:
    """The pipeline files under `root/pipelines` and a Client on `root/home` (manifest loaded).

    `end` shortens the year for small histories (tests)."""
    from engine.client import Client

    pipelines = root / "pipelines"
    pipelines.mkdir(parents=True, exist_ok=True)
    (pipelines / "events.py").write_text(EVENTS.format(end=end))
    (pipelines / "tasks.py").write_text(TASKS)
    (pipelines / "features.py").write_text(layered_dag("feat", FEATURES, "features", seed=3))
    client = Client(home=root / "home", pipelines=pipelines)
    client.load()
    return client


class _Rows:
    """Rows waiting for a bulk insert, table by table, with ids handed out here."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.next_id: dict[str, int] = {}

    def add(self, table: str, row: dict[str, Any]) -> Any:
        if "id" not in row:
            row["id"] = self.next_id.get(table, 1)
            self.next_id[table] = row["id"] + 1
        self.tables.setdefault(table, []).append(row)
        return row["id"]


def build_history(client: Any, runs: int, seed: int = 7) -> History:
    """Record `runs` finished runs in `client`'s (empty) database; see the module's docstring."""
    from sqlalchemy import insert, inspect

    from engine.authoring.partitions import safe_key
    from engine.history.plan import RunRequest, plan
    from engine.storage.models import (
        CheckRecord,
        Event,
        Materialization,
        ResourceSample,
        Run,
        Step,
        StepAttempt,
    )

    started = time.perf_counter()
    manifest = client.load()
    keys = manifest.assets["raw"].partitions_def.keys()
    features = sorted(n for n in manifest.assets if n.startswith("feat_"))
    rng = random.Random(seed)
    now = time.time()
    # One run every ~40 s of history, ending a minute ago.
    first = now - runs * 40.0 - 60
    requests: list[RunRequest] = []
    for i in range(runs):
        if i < len(keys):
            requests.append(RunRequest(("raw", "clean"), partition=keys[i], trigger="backfill"))
            continue
        draw = rng.random()
        if draw < 0.35:
            pick = ("raw",) if rng.random() < 0.15 else ("raw", "clean")
            requests.append(RunRequest(pick, partition=rng.choice(keys), trigger="manual"))
        elif draw < 0.75:
            requests.append(RunRequest((), pipeline="ingest", trigger="schedule"))
        elif draw < 0.97:
            name = rng.choice(features)
            pick = (f"*{name}",) if rng.random() < 0.1 else (name,)
            requests.append(RunRequest(pick, trigger=rng.choice(("manual", "schedule"))))
        else:
            requests.append(RunRequest(("hourly_report",), trigger="manual"))
    run_columns = [c.name for c in inspect(Run).columns]
    step_columns = {c.name for c in inspect(Step).columns}
    rows = _Rows()
    newest: dict[tuple[str, str | None], int] = {}  # (asset, partition) -> its current mat row
    values = client.paths.values
    logs = client.paths.logs
    a_run = ""
    clock = first
    for i, request in enumerate(requests):
        clock = first + i * 40.0 + rng.uniform(0, 5)
        run, steps = plan(manifest, request, now=clock)
        run_row = {c: getattr(run, c) for c in run_columns}
        t = clock + rng.uniform(0.05, 0.3)
        run_row.update(status=RunStatus.SUCCESS, started_at=t, error=None)
        failed_at = rng.randrange(len(steps)) if rng.random() < 0.04 else None
        for k, step in enumerate(steps):
            step_row = {c: getattr(step, c) for c in step_columns if c != "id"}
            if "partition" in step_columns:
                step_row["partition"] = run.partition
            if failed_at is not None and k > failed_at:
                step_row.update(
                    status=StepStatus.SKIPPED, error=f"upstream {steps[failed_at].key} failed"
                )
                rows.add("step", step_row)
                continue
            tries = 2 if rng.random() < 0.03 or k == failed_at else 1
            log_path = f"{logs}/{run.id}/{step.key}.{tries}.log"
            step_row.update(attempts=tries, started_at=t, log_path=log_path)
            step_id = rows.add("step", step_row)
            for attempt in range(1, tries + 1):
                took = rng.uniform(0.02, 3.0)
                ok = attempt == tries and k != failed_at
                attempt_id = rows.add(
                    "stepattempt",
                    {
                        "step_id": step_id, "run_id": run.id, "key": step.key,
                        "attempt": attempt,
                        "status": StepStatus.SUCCESS if ok else StepStatus.FAILED,
                        "pid": rng.randint(1000, 90000), "pid_create_time": t,
                        "host": "bench", "worker": "local",
                        "log_path": f"{logs}/{run.id}/{step.key}.{attempt}.log",
                        "started_at": t, "ended_at": t + took, "exit_code": 0 if ok else 1,
                        "error": None if ok else "ValueError: 3 rows with a null id",
                        "peak_rss_bytes": rng.randint(40, 900) << 20,
                        "peak_cpu_percent": rng.uniform(5, 100), "cpu_seconds": took * 0.9,
                        "read_bytes": 0, "write_bytes": 0, "peak_threads": 1,
                    },
                )  # fmt: skip
                for n in range(3):
                    rows.add(
                        "resourcesample",
                        {
                            "attempt_id": attempt_id, "t": t + n * took / 3,
                            "cpu_percent": 50.0, "cpu_seconds": n * took / 3,
                            "rss_bytes": 60 << 20, "read_bytes": 0, "write_bytes": 0,
                            "threads": 1, "children": 0,
                        },
                    )  # fmt: skip
                for kind in ("started", "success" if ok else "failed"):
                    rows.add(
                        "event",
                        {
                            "run_id": run.id, "step_key": step.key, "attempt": attempt,
                            "ts": t, "kind": kind, "message": None, "data": None,
                        },
                    )  # fmt: skip
                t += took
            step_row.update(
                status=StepStatus.SUCCESS if k != failed_at else StepStatus.FAILED,
                ended_at=t,
                exit_code=0 if k != failed_at else 1,
                error=None if k != failed_at else "ValueError: 3 rows with a null id",
                peak_rss_bytes=200 << 20,
                cpu_seconds=1.0,
            )
            if k == failed_at or step.kind != "asset":
                continue
            partition = run.partition if manifest.assets[step.key].partitions else None
            # What it consumed: the current value of each upstream it reads (lineage).
            inputs = [newest[(up, partition)] for up in manifest.assets[step.key].inputs
                      if (up, partition) in newest]  # fmt: skip
            mat_id = rows.add(
                "materialization",
                {
                    "asset": step.key, "partition": partition, "run_id": run.id,
                    "attempt_id": attempt_id, "created_at": t, "metadata_json": "{}",
                    "code_version": manifest.assets[step.key].code_version,
                    "inputs_json": json.dumps(inputs), "value_path": None, "value_size": 100,
                },
            )  # fmt: skip
            newest[(step.key, partition)] = mat_id
            if step.key == "clean":
                rows.add(
                    "checkrecord",
                    {
                        "run_id": run.id, "asset": "clean", "partition": partition,
                        "name": "clean_has_rows", "passed": rng.random() > 0.02,
                        "blocking": True, "description": None, "metadata_json": "{}",
                        "error": None, "created_at": t,
                    },
                )  # fmt: skip
        if failed_at is not None:
            run_row.update(status=RunStatus.FAILED, error=f"step {steps[failed_at].key} failed")
        elif run.partition and "clean" in {s.key for s in steps}:
            a_run = run.id
        run_row.update(ended_at=t, updated_at=t)
        rows.add("run", run_row)
    # The newest materialization of each asset partition keeps its value, as the engine
    # leaves it, and the value is a file where the engine would have written it.
    mats = {m["id"]: m for m in rows.tables.get("materialization", [])}
    for (asset, partition), mat_id in newest.items():
        mat = mats[mat_id]
        folder = values / asset / (safe_key(partition) if partition else "_")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{mat['run_id']}.1.pkl"
        path.write_bytes(b"\x80\x05K\x01.")
        mat["value_path"] = str(path)
    for att in rows.tables["stepattempt"]:
        if att["run_id"] == a_run:
            log = Path(att["log_path"])
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(f"{att['key']} line {n}\n" for n in range(200)))
    tables = {
        "run": Run, "step": Step, "stepattempt": StepAttempt, "materialization": Materialization,
        "checkrecord": CheckRecord, "event": Event, "resourcesample": ResourceSample,
    }  # fmt: skip
    with client.db.begin() as conn:
        for name, model in tables.items():
            batch = rows.tables.get(name, [])
            for lo in range(0, len(batch), 20_000):
                conn.execute(insert(model), batch[lo : lo + 20_000])
    counts = {name: len(rows.tables.get(name, [])) for name in tables}
    return History(
        runs=counts["run"],
        steps=counts["step"],
        attempts=counts["stepattempt"],
        materializations=counts["materialization"],
        keys=len(keys),
        a_key=next(k for k in keys if ("clean", k) in newest),
        a_run=a_run,
        seconds=time.perf_counter() - started,
    )


def history_summary(h: History) -> str:
    return (
        f"{h.runs:,} runs, {h.steps:,} steps, {h.attempts:,} attempts, "
        f"{h.materializations:,} materializations over {h.keys:,} hourly keys "
        f"(built in {h.seconds:.1f} s)"
    )


__all__ = ["History", "build_history", "history_summary", "write_project"]
