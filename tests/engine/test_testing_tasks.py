"""`engine.testing.run_pipeline`: task pipelines in the test's process, with the engine's rules."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from engine.status import StepStatus
from engine.testing import load_module, run_pipeline

FLOW = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "task_flow.py"


@pytest.fixture(scope="module")
def flow() -> ModuleType:
    return load_module(FLOW)


def test_mapping_gives_each_element_its_call_and_the_downstream_the_list(flow: ModuleType) -> None:
    result = run_pipeline(flow, "per_file", params={"files": ["a.csv", "b.csv"]})

    assert result.success
    assert result.values["process[1]"] == "B.CSV"
    assert result.values["summarize"] == {"seen": ["A.CSV", "B.CSV"]}
    empty = run_pipeline(flow, "per_file", params={"files": []})
    assert empty.success and empty.values["summarize"] == {"seen": []}
    assert "process" not in empty.statuses


def test_branches_short_circuits_and_trigger_rules_as_in_a_real_run(flow: ModuleType) -> None:
    bad = run_pipeline(flow.choose, params={"score": 0.1})  # any task of the pipeline
    assert bad.success
    assert bad.skipped == {"train": "not chosen by choose", "deploy": "upstream train skipped"}

    closed = run_pipeline(flow, "gated")
    assert closed.success
    assert closed.skipped["cleanup_after"] == "short-circuited by gate"

    rules = run_pipeline(flow, "rules")
    assert not rules.success
    assert str(rules.failures["broken"]) == "broken on purpose"
    assert rules.statuses["cleanup"] == StepStatus.SUCCESS  # all_done after a failure
    assert rules.skipped["needs_all"] == "upstream broken failed"
    with pytest.raises(RuntimeError, match="broken on purpose"):
        run_pipeline(flow, "rules", raise_on_error=True)


def test_a_module_with_several_pipelines_needs_a_name(flow: ModuleType) -> None:
    with pytest.raises(ValueError, match="name one of the pipelines"):
        run_pipeline(flow)


def test_the_readme_example_quarantines_bad_data() -> None:
    flow = load_module(Path(__file__).resolve().parents[2] / "pipelines" / "ml_training_tasks.py")
    result = run_pipeline(flow, "training_tasks", params={"min_images": 5000})
    assert result.success
    assert result.skipped["train"] == "not chosen by validate"
    assert result.values["quarantine"] == 1797
