"""The example pipelines unit-tested with `engine.testing`, as users test theirs: in process,
no engine, no database. (`test_examples.py` runs the same files end to end through the engine.)
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from engine.testing import ConfigParamError, build_context, load_module, materialize

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.fixture(scope="module")
def ml() -> ModuleType:
    return load_module(EXAMPLES / "ml_training.py")


@pytest.fixture(scope="module")
def sales() -> ModuleType:
    return load_module(EXAMPLES / "daily_sales.py")


def tiny_digits(n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 17, size=(n, 64)).astype(float), "labels": np.arange(n) % 10}


def test_the_training_pipeline_trains_evaluates_and_deploys_once(
    ml: ModuleType, tmp_path: Path
) -> None:
    result = materialize(ml, home=tmp_path)
    assert result.success
    assert {c.name: c.passed for c in result.checks} == {
        "no_nulls": True,
        "accuracy_above_90pct": True,
    }
    assert result.values["evaluation"]["accuracy"] > 0.9
    assert result.values["deployed"]["deployed"] is True
    model_file = tmp_path / "models" / "digits.pkl"
    with model_file.open("rb") as fh:
        assert pickle.load(fh).predict(result.values["features"]["x_test"][:1]).shape == (1,)

    # The same model is not better than the deployed one: deploying again changes nothing.
    upstream = {k: result.values[k] for k in ("features", "trained_model")}
    again = materialize([ml.evaluation, ml.deployed], inputs=upstream, home=tmp_path)
    assert again.values["deployed"]["deployed"] is False
    assert again.values["deployed"]["reason"].startswith("kept the deployed model")


def test_training_takes_its_config_from_params_and_deploys_to_the_store_given(
    ml: ModuleType, tmp_path: Path
) -> None:
    store = ml.ModelStore(tmp_path / "elsewhere")
    result = materialize(ml, params={"C": "0.5", "max_iter": "300", "tags": '["nightly"]'},
                         resources={"model_store": store}, home=tmp_path)  # fmt: skip
    assert result.success
    model = result.values["trained_model"]
    assert (model.C, model.max_iter) == (0.5, 300)
    assert store.path("digits").is_file()
    assert not (tmp_path / "models").exists()
    with pytest.raises(ConfigParamError, match="field 'C'"):
        materialize(ml, params={"C": "fast"}, home=tmp_path)


def test_the_first_deployment_says_it_deployed(ml: ModuleType, tmp_path: Path) -> None:
    evaluation = {"model": "a model", "accuracy": 0.91, "deployed_accuracy": None, "test_rows": 9}
    context = build_context(home=tmp_path)
    result = ml.deployed(context, evaluation, ml.ModelStore(tmp_path / "models"))
    assert result["deployed"] is True
    assert result["reason"] == "the first model (none was deployed before)"


def test_features_scale_and_split_a_small_fixture(ml: ModuleType) -> None:
    result = materialize([ml.features], inputs={"raw_digits": tiny_digits(40)})
    features = result.values["features"]
    assert features["x_train"].shape == (30, 64) and features["x_test"].shape == (10, 64)
    assert features["x_train"].min() >= 0.0 and features["x_train"].max() <= 1.0
    assert result.metadata["features"] == {"train_rows": 30, "test_rows": 10}


def test_the_blocking_check_catches_missing_pixels(ml: ModuleType) -> None:
    digits = tiny_digits(20)
    digits["images"][3, 5] = np.nan
    outcome = ml.no_nulls(digits)
    assert outcome.passed is False and outcome.description == "1 NaN pixels"
    assert ml.no_nulls(tiny_digits(20)).passed is True


def test_deployed_keeps_a_better_model(ml: ModuleType, tmp_path: Path) -> None:
    evaluation = {"model": "a model", "accuracy": 0.91, "deployed_accuracy": 0.95, "test_rows": 9}
    context = build_context(home=tmp_path)
    store = ml.ModelStore(tmp_path / "models")
    assert ml.deployed(context, evaluation, store)["deployed"] is False
    assert not (tmp_path / "models" / "digits.pkl").exists()
    assert context.metadata["deployed"] is False


def test_daily_sales_over_two_days(sales: ModuleType) -> None:
    days = ["2025-01-04", "2025-01-05"]
    result = materialize(sales, partition=days)
    assert result.success
    revenue = result.values["revenue"]
    assert set(revenue) == set(days) and all(v > 0 for v in revenue.values())
    report = result.values["revenue_report"]
    assert (report["days"], report["missing_days"]) == (2, 29)
    assert report["total"] == round(sum(revenue.values()), 2)
    assert [c.partition for c in result.checks] == days  # revenue_is_positive, once per day
    # Orders are synthetic but stable: the same day gives the same orders in every run.
    assert (
        materialize([sales.orders], partition="2025-01-04").values["orders"]
        == (result.values["orders"]["2025-01-04"])
    )


def test_a_report_with_no_days_says_to_backfill(sales: ModuleType) -> None:
    with pytest.raises(ValueError, match="backfill some days first"):
        materialize([sales.revenue_report], inputs={"revenue": {}})


def test_regional_sales_by_day_and_region(tmp_path: Path) -> None:
    regional = load_module(EXAMPLES / "regional_sales.py")
    keys = ["2025-01-05|us", "2025-01-05|eu", "2025-01-05|apac"]
    result = materialize([regional.regional_orders, regional.regional_revenue], keys, home=tmp_path)
    revenue = result.values["regional_revenue"]
    assert list(revenue) == keys
    assert result.values["regional_orders"]["2025-01-05|eu"][0]["order_id"].startswith("eu-")

    # A downstream by day is given the day's keys, as the engine would give them.
    day = materialize([regional.daily_revenue], "2025-01-05", inputs={"regional_revenue": revenue})
    assert day.values["daily_revenue"]["by_region"] == {
        "us": revenue["2025-01-05|us"],
        "eu": revenue["2025-01-05|eu"],
        "apac": revenue["2025-01-05|apac"],
    }
