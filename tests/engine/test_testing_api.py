"""`engine.testing`: pipelines unit-tested in process, with no engine, database or subprocess."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from engine import build_context
from engine.authoring import definitions
from engine.errors import PartitionError
from engine.testing import OutputTypeError, load_module, materialize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"

SHOP = textwrap.dedent(
    """
    from __future__ import annotations

    from engine import CheckResult, asset, check


    @asset
    def prices(context) -> dict[str, float]:
        context.add_metadata({"items": 2})
        return context.params.get("prices", {"pen": 1.5, "mug": 8.0})


    @asset
    def basket(context, prices) -> float:
        client = context.resources.get("tax")
        rate = client.rate() if client else 0.0
        return round(sum(prices.values()) * (1 + rate), 2)


    @asset
    def receipt(basket) -> str:
        return f"total {basket}"


    @asset(io="json")
    def as_json(context):
        return context.params.get("json_value", {"ok": True})


    @check(asset="prices", blocking=True)
    def no_free_items(prices):
        return CheckResult(passed=all(v > 0 for v in prices.values()), metadata={"n": len(prices)})


    @check(asset="basket")
    def not_too_big(basket):
        return basket < 100


    @check(asset="receipt")
    def broken(receipt):
        raise RuntimeError("this check has a bug")
    """
)


@pytest.fixture
def shop(tmp_path: Path) -> ModuleType:
    path = tmp_path / "pipelines" / "shop.py"
    path.parent.mkdir()
    path.write_text(SHOP)
    return load_module(path)


def test_a_selection_runs_in_order_with_its_checks(shop: ModuleType, tmp_path: Path) -> None:
    result = materialize([shop.receipt, shop.prices, shop.basket], home=tmp_path / "home")
    assert result.values == {"prices": {"pen": 1.5, "mug": 8.0}, "basket": 9.5,
                             "receipt": "total 9.5"}  # fmt: skip
    assert result.metadata["prices"] == {"items": 2}
    assert [(c.name, c.passed) for c in result.checks] == [
        ("no_free_items", True),
        ("not_too_big", True),
        ("broken", False),
    ]
    assert result.check("broken").error == "RuntimeError: this check has a bug"
    assert result.check("no_free_items").metadata == {"n": 2}
    assert result.success  # a failing non-blocking check is a warning, as in a run
    assert result.home == tmp_path / "home"
    assert (tmp_path / "home" / "values" / "basket").is_dir()  # stored, as the engine does


def test_params_resources_and_inputs_reach_the_functions(shop: ModuleType) -> None:
    class Tax:
        def rate(self) -> float:
            return 0.5

    result = materialize(shop, params={"prices": {"lamp": 20.0}}, resources={"tax": Tax()})
    assert result.values["basket"] == 30.0
    # An upstream that is not run can be given as a value.
    result = materialize([shop.basket, shop.receipt], inputs={"prices": {"a": 1.0}})
    assert result.values == {"basket": 1.0, "receipt": "total 1.0"}
    with pytest.raises(ValueError, match="reads 'prices', which is neither run nor given"):
        materialize([shop.basket])


def test_a_failing_blocking_check_skips_what_is_downstream(shop: ModuleType) -> None:
    result = materialize(shop, params={"prices": {"pen": 0.0}})
    assert not result.success
    assert result.check("no_free_items").passed is False
    assert result.skipped == {
        "basket": "blocking check no_free_items on prices failed",
        "receipt": "upstream basket skipped",
    }


def test_failures_raise_or_are_recorded(shop: ModuleType) -> None:
    with pytest.raises(OutputTypeError, match="output of asset 'prices' does not match its type: "
                       "expected dict\\[str, float\\], got list"):  # fmt: skip
        materialize(shop, params={"prices": [1.0]})
    result = materialize(shop, params={"prices": [1.0]}, raise_on_error=False)
    assert isinstance(result.failures["prices"], OutputTypeError)
    assert result.skipped["basket"] == "upstream prices failed" and not result.success
    # The value goes through its IO manager, so what the engine could not store fails here.
    with pytest.raises(TypeError, match="not JSON serializable"):
        materialize([shop.as_json], params={"json_value": {1, 2}})


def test_partitions_one_key_or_several(tmp_path: Path) -> None:
    module = load_module(FIXTURES / "partitioned.py")
    one = materialize(module, partition="south")
    assert one.values == {"sales": 20, "doubled": {"partition": "south", "value": 40},
                          "total": {"south": 20}}  # fmt: skip
    several = materialize([module.sales, module.total], partition=["north", "west"])
    assert several.values == {"sales": {"north": 10, "west": 30},
                              "total": {"north": 10, "west": 30}}  # fmt: skip
    with pytest.raises(PartitionError, match="pass partition=KEY"):
        materialize(module)
    with pytest.raises(PartitionError, match="east"):
        materialize(module, partition="east")


def test_build_context_calls_one_asset_directly(shop: ModuleType) -> None:
    context = build_context(params={"prices": {"pen": 2.0}}, partition=None)
    assert shop.prices(context) == {"pen": 2.0}
    assert context.metadata == {"items": 2}
    assert shop.basket(build_context(), prices={"a": 1.0, "b": 2.0}) == 3.0


def test_load_module_leaves_no_definitions_registered(tmp_path: Path) -> None:
    before = list(definitions._registry.items)
    module = load_module(FIXTURES / "partitioned.py")
    assert module.__name__ == "dagtop_pipelines.partitioned"
    assert definitions._registry.items == before
