"""MultiPartitions: keys, order and errors exactly as Dagster's MultiPartitionsDefinition has them,
and the links between a MultiPartitions asset and one partitioned by one of its dimensions."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

import engine
from engine.authoring.context import build_context
from engine.authoring.multi_partitions import MultiPartitions, dimensions_of, link
from engine.authoring.partitions import (
    DailyPartitions,
    HourlyPartitions,
    InvalidPartitionKey,
    PartitionsDefinition,
    StaticPartitions,
)

NOW = datetime(2025, 1, 4, 12, tzinfo=UTC)  # 2025-01-01 .. 2025-01-03 have ended


def grid() -> MultiPartitions:
    return MultiPartitions(
        {"region": StaticPartitions(["us", "eu"]), "date": DailyPartitions(start="2025-01-01")}
    )


def test_exported_from_engine() -> None:
    assert engine.MultiPartitions is MultiPartitions


def test_keys_are_the_product_in_the_order_of_the_sorted_dimension_names() -> None:
    # The dimension names sorted ("date" < "region"), whatever order the dict gives them in;
    # each key those dimensions' keys joined with "|"; the first dimension varies slowest;
    # a static dimension keeps its own order. These strings are what Dagster's
    # MultiPartitionsDefinition returns for the same definition.
    assert grid().keys(NOW) == [
        "2025-01-01|us",
        "2025-01-01|eu",
        "2025-01-02|us",
        "2025-01-02|eu",
        "2025-01-03|us",
        "2025-01-03|eu",
    ]
    assert grid().names == ["date", "region"]


def test_a_dimension_sorting_first_puts_its_key_first() -> None:
    # "color" < "date": the static key comes first and varies slowest.
    pdef = MultiPartitions(
        {"date": DailyPartitions(start="2025-01-01"), "color": StaticPartitions(["red", "blue"])}
    )
    assert pdef.keys(NOW) == [
        "red|2025-01-01",
        "red|2025-01-02",
        "red|2025-01-03",
        "blue|2025-01-01",
        "blue|2025-01-02",
        "blue|2025-01-03",
    ]
    assert pdef.split("blue|2025-01-02") == {"color": "blue", "date": "2025-01-02"}


def test_names_sort_as_strings_not_by_case_or_length() -> None:
    pdef = MultiPartitions({"b": StaticPartitions(["1", "2"]), "B": StaticPartitions(["x"])})
    assert pdef.names == ["B", "b"]  # code point order, as Python's (and Dagster's) sorted()
    assert pdef.keys() == ["x|1", "x|2"]


def test_two_static_dimensions() -> None:
    pdef = MultiPartitions(
        {"size": StaticPartitions(["s", "m"]), "model": StaticPartitions(["a", "b", "c"])}
    )
    assert pdef.keys() == ["a|s", "a|m", "b|s", "b|m", "c|s", "c|m"]
    assert pdef.time_dimension is None
    assert pdef.last_complete_key(NOW) is None


def test_hourly_dimension() -> None:
    pdef = MultiPartitions(
        {"hour": HourlyPartitions(start="2025-01-01-00:00"), "site": StaticPartitions(["a"])}
    )
    assert pdef.keys(datetime(2025, 1, 1, 2, 30, tzinfo=UTC)) == [
        "2025-01-01-00:00|a",
        "2025-01-01-01:00|a",
    ]


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        ({"date": DailyPartitions(start="2025-01-01")}, "exactly two dimensions, got 1"),
        (
            {
                "a": StaticPartitions(["x"]),
                "b": StaticPartitions(["y"]),
                "c": StaticPartitions(["z"]),
            },
            "exactly two dimensions, got 3",
        ),
        (
            {"d": DailyPartitions(start="2025-01-01"), "h": HourlyPartitions(start="2025-01-01")},
            "at most one time-based dimension, got d and h",
        ),
        (
            {"date": DailyPartitions(start="2025-01-01"), "r": StaticPartitions(["a|b"])},
            "dimension 'r' has key 'a|b'",
        ),
        (
            {"date": DailyPartitions(start="2025-01-01"), "r": StaticPartitions(["a,b"])},
            "cannot contain",
        ),
        ({"date": DailyPartitions(start="2025-01-01"), "r": ["us"]}, "must be DailyPartitions"),
        ({"date": DailyPartitions(start="2025-01-01"), "": StaticPartitions(["a"])}, "names"),
    ],
)
def test_definitions_dagster_refuses_are_refused(dimensions: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        MultiPartitions(dimensions)


def test_nested_multi_is_refused() -> None:
    with pytest.raises(ValueError, match="must be DailyPartitions"):
        MultiPartitions({"a": grid(), "b": StaticPartitions(["x"])})


def test_spec_round_trip_and_equality() -> None:
    pdef = grid()
    spec = pdef.to_spec()
    assert spec["kind"] == "multi"
    assert list(spec["dimensions"]) == ["date", "region"]
    again = PartitionsDefinition.from_spec(spec)
    assert again == pdef
    assert again.keys(NOW) == pdef.keys(NOW)
    assert pickle.loads(pickle.dumps(pdef)) == pdef
    assert pdef != MultiPartitions(
        {"region": StaticPartitions(["eu", "us"]), "date": DailyPartitions(start="2025-01-01")}
    )
    with pytest.raises(ValueError, match="kind and dimensions"):
        PartitionsDefinition.from_spec({"kind": "multi", "dimensions": {}, "extra": 1})


def test_describe() -> None:
    assert grid().describe() == (
        "MultiPartitions (date: DailyPartitions from 2025-01-01 (UTC) × "
        "region: StaticPartitions: us, eu)"
    )


def test_validate_key() -> None:
    pdef = grid()
    pdef.validate_key("2025-01-02|eu", NOW)
    with pytest.raises(InvalidPartitionKey, match=r"region: 'US' is not .*did you mean 'us'"):
        pdef.validate_key("2025-01-02|US", NOW)
    with pytest.raises(InvalidPartitionKey, match=r"region: 'uk' .*expected one of us, eu"):
        pdef.validate_key("2025-01-02|uk", NOW)
    with pytest.raises(InvalidPartitionKey, match="date: '2025-01-09' has not ended"):
        pdef.validate_key("2025-01-09|us", NOW)
    with pytest.raises(InvalidPartitionKey, match=r"did you mean '2025-01-02\|us'"):
        pdef.validate_key("us|2025-01-02", NOW)
    with pytest.raises(InvalidPartitionKey, match=r"names only the date.*DATE\|REGION") as info:
        pdef.validate_key("2025-01-02", NOW)
    assert "backfill --from 2025-01-02 --to 2025-01-02 covers every region" in str(info.value)
    with pytest.raises(InvalidPartitionKey, match=r"not a key of DATE\|REGION, e.g. '"):
        pdef.validate_key("a|b|c", NOW)
    with pytest.raises(InvalidPartitionKey, match="control character"):
        pdef.validate_key("2025-01-02|u\ns", NOW)
    for message in _messages(pdef, ["2025-01-02|uk", "us|2025-01-02", "2025-01-02", "x"]):
        assert "\n" not in message


def _messages(pdef: MultiPartitions, keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        with pytest.raises(InvalidPartitionKey) as info:
            pdef.validate_key(key, NOW)
        out.append(str(info.value))
    return out


def test_keys_between_time_keys_covers_every_key_of_the_other_dimension() -> None:
    assert grid().keys_between("2025-01-02", "2025-01-03", NOW) == [
        "2025-01-02|us",
        "2025-01-02|eu",
        "2025-01-03|us",
        "2025-01-03|eu",
    ]
    with pytest.raises(InvalidPartitionKey, match="date: first key"):
        grid().keys_between("2025-01-03", "2025-01-02", NOW)


def test_keys_between_full_keys_is_the_product_of_each_dimensions_range() -> None:
    # As Dagster's get_partition_keys_in_range: each dimension's range, then their product.
    assert grid().keys_between("2025-01-01|eu", "2025-01-02|eu", NOW) == [
        "2025-01-01|eu",
        "2025-01-02|eu",
    ]
    assert grid().keys_between("2025-01-01|us", "2025-01-02|eu", NOW) == [
        "2025-01-01|us",
        "2025-01-01|eu",
        "2025-01-02|us",
        "2025-01-02|eu",
    ]


def test_last_complete_key_and_period() -> None:
    assert grid().last_complete_key(NOW) == "2025-01-03|eu"
    start, end = grid().period("2025-01-02|us")
    assert (start, end) == (datetime(2025, 1, 2, tzinfo=UTC), datetime(2025, 1, 3, tzinfo=UTC))


def test_dimensions_in_the_context() -> None:
    assert dimensions_of(grid(), "2025-01-02|eu") == {"date": "2025-01-02", "region": "eu"}
    assert dimensions_of(DailyPartitions(start="2025-01-01"), "2025-01-02") == {}
    assert dimensions_of(None, None) == {}
    ctx = build_context(partition="2025-01-02|eu", dimensions={"date": "2025-01-02"})
    assert ctx.dimensions == {"date": "2025-01-02"}
    assert build_context().dimensions == {}


def test_links_to_one_dimension() -> None:
    multi = grid().to_spec()
    daily = DailyPartitions(start="2025-01-01").to_spec()
    region = StaticPartitions(["us", "eu"]).to_spec()
    fan_in = link(multi, daily)
    assert fan_in is not None and fan_in.fan_in
    assert fan_in.reads("2025-01-02|us", "2025-01-02")
    assert not fan_in.reads("2025-01-03|us", "2025-01-02")
    assert fan_in.downstream_key("2025-01-02|us") == "2025-01-02"
    by_region = link(multi, region)
    assert by_region is not None and by_region.reads("2025-01-02|eu", "eu")
    pick = link(daily, multi)
    assert pick is not None and not pick.fan_in
    assert pick.upstream_key("2025-01-02|eu") == "2025-01-02"
    assert link(region, multi) is not None
    assert link(region, multi).upstream_key("2025-01-02|eu") == "eu"  # type: ignore[union-attr]
    # Partitioned otherwise (another start, another key list): no link.
    assert link(multi, DailyPartitions(start="2024-01-01").to_spec()) is None
    assert link(multi, StaticPartitions(["us"]).to_spec()) is None
    assert link(multi, multi) is None
    assert link(daily, daily) is None
    assert link(None, multi) is None


def test_a_year_of_days_by_24_regions_lists_fast_enough_to_be_linear() -> None:
    # 8,760 keys: listing them is a product of two short lists, not a search.
    regions = [f"r{i:02d}" for i in range(24)]
    pdef = MultiPartitions(
        {
            "date": DailyPartitions(start="2024-01-01", end="2024-12-31"),
            "region": StaticPartitions(regions),
        }
    )
    keys = pdef.keys(NOW)
    assert len(keys) == 365 * 24
    assert keys[0] == "2024-01-01|r00" and keys[-1] == "2024-12-30|r23"
    assert len(set(keys)) == len(keys)


def test_a_bound_of_a_range_is_a_key_or_a_key_of_the_time_dimension() -> None:
    pdef = grid()
    pdef.validate_bound("2025-01-02", NOW)
    pdef.validate_bound("2025-01-02|us", NOW)
    with pytest.raises(InvalidPartitionKey, match="date: '2025-01-09' has not ended"):
        pdef.validate_bound("2025-01-09", NOW)
    with pytest.raises(InvalidPartitionKey, match="names only the region"):
        pdef.validate_bound("us", NOW)
