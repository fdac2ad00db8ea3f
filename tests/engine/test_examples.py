"""The example pipelines users copy from (`pipelines/`), run end to end on a temp home.

Each test copies `pipelines/` into `tmp_path` first, so nothing is ever written into the repo
(the ingest inbox, the deployed model and the history all land under `tmp_path`).
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.client import Client, RunView
from engine.status import RunStatus, StepStatus

pytestmark = pytest.mark.serial

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines"
DAGTOP = Path(sys.executable).with_name("dagtop")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example pipelines in a fresh project folder."""
    shutil.copytree(EXAMPLES, tmp_path / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.fixture
def client(project: Path) -> Client:
    return Client(home=project / "home", pipelines=project / "pipelines")


def _statuses(view: RunView) -> dict[str, str]:
    return {st.key: st.status for st in view.steps}


def _step(view: RunView, key: str) -> Any:
    return next(st for st in view.steps if st.key == key)


def _latest(client: Client, asset: str, partition: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The stored value and metadata of an asset's newest materialization."""
    from engine.storage import repo
    from engine.storage.db import read_scope

    with read_scope(client.db) as s:
        mat = repo.latest_materialization(s, asset, partition)
        assert mat is not None and mat.value_path, f"{asset} has no stored value"
        path, metadata = Path(mat.value_path), json.loads(mat.metadata_json or "{}")
    with path.open("rb") as fh:
        value = json.load(fh) if path.suffix == ".json" else pickle.load(fh)
    return value, metadata


def test_check_is_clean(project: Path) -> None:
    proc = subprocess.run(
        [str(DAGTOP), "--home", "home", "--pipelines", "pipelines", "check", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["errors"] == []
    assert set(report["files"]) == {
        "daily_sales.py",
        "ingest.py",
        "ml_training.py",
        "ml_training_tasks.py",
        "regional_sales.py",
    }


def test_examples_do_not_import_heavy_libraries_at_top_level(project: Path) -> None:
    # The rule the examples teach: loading a pipeline file must not pay for sklearn or numpy.
    code = (
        "import sys; from engine.loading.modules import import_pipeline_module as imp; "
        "from pathlib import Path; root = Path(sys.argv[1]); "
        "[imp(root, f) for f in sys.argv[2:]]; "
        "print(sorted(m for m in ('sklearn', 'numpy') if m in sys.modules))"
    )
    files = sorted(p.name for p in (project / "pipelines").glob("*.py"))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(project / "pipelines"), *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_new_digits_retrain_evaluate_and_deploy_on_their_own_with_an_engine_up(
    client: Client,
) -> None:
    from engine.service.daemon import Engine
    from tests.waiting import wait_for

    engine = Engine(client.paths, client.config, kind="tui", db=client.db, schedules=False,
                    sensors=False, watch=False)  # fmt: skip
    engine.start()
    client.attach(engine)
    try:
        assert client.materialize(["raw_digits"]).status == RunStatus.SUCCESS  # new data
        auto = wait_for(
            lambda: next((r for r in client.runs(10) if r.trigger == "auto" and r.finished), None),
            timeout=180,
            what="the retraining run",
        )
        assert auto.status == RunStatus.SUCCESS, auto.to_json()
        assert [st.key for st in auto.steps] == ["features", "trained_model", "evaluation",
                                                 "deployed"]  # fmt: skip
        assert auto.reason == "features: missing; then trained_model, evaluation, deployed"
        assert (client.paths.values / "@shared" / "models" / "digits.pkl").is_file()
    finally:
        engine.stop()


def test_training_group_deploys_once(client: Client) -> None:
    model = client.paths.values / "@shared" / "models" / "digits.pkl"  # context.shared_dir

    first = client.materialize(["group:training"])
    assert first.status == RunStatus.SUCCESS, first.to_json()
    assert _statuses(first) == dict.fromkeys(
        ["raw_digits", "features", "trained_model", "evaluation", "deployed"], StepStatus.SUCCESS
    )
    assert {(c.name, c.passed) for c in first.checks} == {
        ("no_nulls", True),
        ("accuracy_above_90pct", True),
    }
    assert model.is_file()
    deployed, metadata = _latest(client, "deployed")
    assert deployed["deployed"] is True
    assert deployed["previous_accuracy"] is None
    assert deployed["accuracy"] > 0.9
    assert metadata["deployed"] is True
    _, trained_meta = _latest(client, "trained_model")
    assert trained_meta["train_accuracy"] > 0.9
    before = (model.read_bytes(), model.stat().st_mtime_ns)

    # The same code on the same data makes an equal model: it must not replace the deployed one.
    second = client.materialize(["group:training"])
    assert second.status == RunStatus.SUCCESS, second.to_json()
    deployed, metadata = _latest(client, "deployed")
    assert deployed["deployed"] is False
    assert deployed["previous_accuracy"] == deployed["accuracy"]
    assert metadata["deployed"] is False
    assert "kept the deployed model" in metadata["reason"]
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before


def test_task_pipeline_succeeds(client: Client) -> None:
    view = client.run_pipeline("training_tasks")
    assert view.status == RunStatus.SUCCESS, view.to_json()
    ran = ["extract", "validate", "train", "baseline", "evaluate", "good_enough", "publish"]
    assert _statuses(view) == {
        **dict.fromkeys(ran, StepStatus.SUCCESS),
        "quarantine": StepStatus.SKIPPED,
        "tidy": StepStatus.SUCCESS,
    }
    assert _step(view, "quarantine").error == "not chosen by validate"
    assert set(_step(view, "train").upstream) == {"extract", "validate"}
    assert set(_step(view, "evaluate").upstream) == {"extract", "train", "baseline"}
    marker = client.paths.home / "published" / "training_tasks.done"
    assert marker.read_text().strip() == view.id


def test_task_pipeline_quarantines_data_that_fails_validation(client: Client) -> None:
    view = client.run_pipeline("training_tasks", params={"min_images": 5000})
    assert view.status == RunStatus.SUCCESS, view.to_json()  # a branch's skips are no failure
    assert _statuses(view)["quarantine"] == StepStatus.SUCCESS
    assert {s.key: s.error for s in view.steps if s.status == StepStatus.SKIPPED} == {
        "train": "not chosen by validate",
        "baseline": "not chosen by validate",
        "evaluate": "upstream train skipped",
        "good_enough": "upstream evaluate skipped",
        "publish": "upstream good_enough skipped",
    }
    assert _statuses(view)["tidy"] == StepStatus.SUCCESS  # all_done: it ran
    assert not (client.paths.home / "published" / "training_tasks.done").exists()


def test_daily_partition_then_report(client: Client) -> None:
    for day in ("2025-01-05", "2025-01-20"):
        view = client.materialize(["orders", "revenue"], partition=day)
        assert view.status == RunStatus.SUCCESS, view.to_json()
        assert [(c.name, c.partition, c.passed) for c in view.checks] == [
            ("revenue_is_positive", day, True)
        ]
    revenue, _ = _latest(client, "revenue", "2025-01-05")

    view = client.materialize(["revenue_report"])
    assert view.status == RunStatus.SUCCESS, view.to_json()
    report, metadata = _latest(client, "revenue_report")
    assert sorted(report["daily"]) == ["2025-01-05", "2025-01-20"]
    assert report["daily"]["2025-01-05"] == revenue
    assert report["days"] == metadata["days"] == 2
    assert report["missing_days"] == 29

    # Re-materializing a day gives the same synthetic orders.
    again = client.materialize(["orders", "revenue"], partition="2025-01-05")
    assert again.status == RunStatus.SUCCESS
    assert _latest(client, "revenue", "2025-01-05")[0] == revenue


def test_ingest_with_a_path(client: Client, project: Path) -> None:
    sample = project / "pipelines" / "samples" / "orders-sample.csv"
    view = client.materialize(["parsed_orders"], params={"path": str(sample)})
    assert view.status == RunStatus.SUCCESS, view.to_json()
    rows, metadata = _latest(client, "parsed_orders")
    assert len(rows) == metadata["rows"] == 6
    assert rows[0] == {
        "order_id": "A-0001",
        "day": "2025-01-06",
        "customer": "c001",
        "product": "notebook",
        "quantity": 2,
        "unit_price": 4.5,
    }


MISSING_PATH = "needs the CSV to read in the `path` run parameter"


def test_ingest_without_a_path_explains_why(client: Client) -> None:
    view = client.materialize(["parsed_orders"])
    assert view.status == RunStatus.FAILED
    step = _step(view, "parsed_orders")
    assert step.status == StepStatus.FAILED
    assert step.log_path is not None
    log = Path(step.log_path).read_text()
    assert f"dagtop: step failed: ValueError: parsed_orders {MISSING_PATH}" in log


def test_ingest_without_a_path_error_reaches_the_step(client: Client) -> None:
    view = client.materialize(["parsed_orders"])
    step = _step(view, "parsed_orders")
    assert step.status == StepStatus.FAILED
    assert step.error is not None
    assert "ValueError" in step.error
    assert MISSING_PATH in step.error


def test_regional_sales_over_two_dimensions(client: Client) -> None:
    for key in ("2025-01-05|us", "2025-01-05|eu", "2025-01-06|eu"):
        view = client.materialize(["regional_orders", "regional_revenue"], partition=key)
        assert view.status == RunStatus.SUCCESS, view.to_json()
    orders, _ = _latest(client, "regional_orders", "2025-01-05|eu")
    assert orders[0]["order_id"].startswith("eu-2025-01-05-")  # from context.dimensions
    eu, _ = _latest(client, "regional_revenue", "2025-01-05|eu")
    us, _ = _latest(client, "regional_revenue", "2025-01-05|us")

    view = client.materialize(["daily_revenue"], partition="2025-01-05")
    assert view.status == RunStatus.SUCCESS, view.to_json()
    day, metadata = _latest(client, "daily_revenue", "2025-01-05")
    assert day["by_region"] == {"us": us, "eu": eu} and metadata["regions"] == 2

    view = client.materialize(["region_trend"], partition="eu")
    assert view.status == RunStatus.SUCCESS, view.to_json()
    trend, _ = _latest(client, "region_trend", "eu")
    assert trend["days"] == 2
