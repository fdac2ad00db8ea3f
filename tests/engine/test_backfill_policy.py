"""Backfill policies: an asset that does a range better at once is backfilled in one run (or in
runs of n partitions), called with `context.partition_keys`, and still recorded per key.

The end-to-end tests run the real engine (real worker processes, SQLite) through the Client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine import BackfillPolicy, DailyPartitions, StaticPartitions, StepContext, asset
from engine.authoring.backfill_policy import chunks, covers, keys_of, range_text
from engine.client import Client
from engine.errors import DefinitionError, PartitionError
from engine.status import BackfillStatus, PartitionStatus, RunStatus
from engine.storage import repo
from engine.testing import materialize

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = """
    from pathlib import Path

    from engine import BackfillPolicy, DailyPartitions, asset

    days = DailyPartitions(start="2025-01-01", end="2025-03-01")


    @asset(partitions=days, backfill_policy=BackfillPolicy.single_run())
    def orders(context):
        # How many times the function ran, and with which keys: one call for a whole range.
        with open(Path(context.home) / "calls.txt", "a") as fh:
            fh.write(",".join(context.partition_keys) + "\\n")
        return {day: int(day[-2:]) for day in context.partition_keys}


    @asset(partitions=days, backfill_policy=BackfillPolicy.multi_run(3))
    def revenue(context, orders):
        assert list(orders) == context.partition_keys  # its inputs, over exactly its range
        return {day: orders[day] * 10 for day in context.partition_keys}


    @asset(partitions=days)
    def per_day(context):
        return context.partition


    @asset
    def total(revenue):
        return sum(revenue.values())


    @asset(partitions=days, backfill_policy=BackfillPolicy.single_run())
    def wrong_shape(context):
        return [1, 2, 3]


    @asset(partitions=days, backfill_policy=BackfillPolicy.single_run())
    def one_short(context):
        return {day: 1 for day in context.partition_keys[1:]}


    @asset(partitions=days, backfill_policy=BackfillPolicy.single_run())
    def third_unstorable(context):
        # The first two keys store fine; the third cannot be pickled.
        return {day: (lambda: 1) if i == 2 else i for i, day in enumerate(context.partition_keys)}
"""


@pytest.fixture
def client(tmp_path: Path) -> Client:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "sales.py").write_text(textwrap.dedent(PIPELINE))
    return Client(tmp_path / "home", tmp_path / "pipelines")


def days(first: int, last: int) -> list[str]:
    return [f"2025-01-{d:02d}" for d in range(first, last + 1)]


def backfill(client: Client, selection: list[str], keys: list[str]) -> dict[str, object]:
    return client.follow_backfill(client.backfill(selection, keys=keys, max_parallel=2))


def runs_of(client: Client, backfill_id: str) -> list[str | None]:
    with client._read() as s:
        return [r.partition for r in repo.runs_of_backfill(s, backfill_id)]


# --- ranges and chunks ------------------------------------------------------------------------


def test_chunks_cut_consecutive_keys_at_gaps_and_at_the_limit() -> None:
    order = [f"k{i}" for i in range(10)]
    keys = ["k7", "k0", "k1", "k2", "k3", "k5", "k6", "k1"]  # unordered, a duplicate, gaps
    assert chunks(keys, order, None) == [["k0", "k1", "k2", "k3"], ["k5", "k6", "k7"]]
    assert chunks(keys, order, 2) == [["k0", "k1"], ["k2", "k3"], ["k5", "k6"], ["k7"]]
    assert chunks(keys, order, 1) == [[k] for k in ["k0", "k1", "k2", "k3", "k5", "k6", "k7"]]
    assert chunks([], order, None) == []


def test_a_range_is_named_first_dots_last_and_read_back() -> None:
    pdef = DailyPartitions(start="2025-01-01", end="2025-02-01")
    assert range_text("2025-01-03", "2025-01-03") == "2025-01-03"
    assert keys_of(pdef, range_text("2025-01-03", "2025-01-05")) == days(3, 5)
    assert keys_of(pdef, "2025-01-09") == ["2025-01-09"]
    with pytest.raises(ValueError, match="after last key"):
        keys_of(pdef, "2025-01-05...2025-01-03")
    with pytest.raises(ValueError):
        keys_of(pdef, "2025-01-05...2025-02-30")
    # A static key that itself contains the separator stays one key.
    static = StaticPartitions(["a", "b...c", "d"])
    assert keys_of(static, "b...c") == ["b...c"]
    assert keys_of(static, "a...d") == ["a", "b...c", "d"]


def test_a_run_covers_its_key_or_every_key_of_its_range() -> None:
    position = {k: i for i, k in enumerate(days(1, 9))}
    assert covers("2025-01-04", "2025-01-04", position)
    assert not covers("2025-01-04", "2025-01-05", position)
    assert covers("2025-01-03...2025-01-05", "2025-01-05", position)
    assert not covers("2025-01-03...2025-01-05", "2025-01-06", position)
    assert not covers("2025-01-03...2025-01-05", "2025-01-02", position)
    assert not covers(None, "2025-01-02", position)
    assert not covers("2024-12-01...2025-01-05", "2025-01-02", position)  # an unknown end


def test_policies_are_checked_where_they_are_declared() -> None:
    # Wrong values and types, as an untyped pipeline file may pass them.
    wrong: tuple[Any, ...] = (0, -3, 2.5, True)
    for bad in wrong:
        with pytest.raises(ValueError, match="whole number >= 1"):
            BackfillPolicy.multi_run(bad)
    with pytest.raises(ValueError, match="whole number >= 1"):
        BackfillPolicy(max_partitions_per_run=0)
    with pytest.raises(DefinitionError, match="needs partitions="):
        asset(name="x", backfill_policy=BackfillPolicy.single_run())(lambda: 1)
    with pytest.raises(DefinitionError, match="must be BackfillPolicy"):
        policy: Any = "single"
        asset(name="x", partitions=DailyPartitions(start="2025-01-01"), backfill_policy=policy)(
            lambda: 1
        )
    assert not BackfillPolicy.multi_run(1).ranged and BackfillPolicy.single_run().ranged


# --- end to end through the engine ------------------------------------------------------------


def test_a_single_run_backfill_is_one_run_with_a_materialization_per_key(
    client: Client, tmp_path: Path
) -> None:
    info = backfill(client, ["orders"], days(1, 10))
    assert info["status"] == BackfillStatus.SUCCESS and info["counts"] == {RunStatus.SUCCESS: 10}
    assert runs_of(client, str(info["id"])) == ["2025-01-01...2025-01-10"]
    calls = (tmp_path / "home" / "calls.txt").read_text().splitlines()
    assert calls == [",".join(days(1, 10))]  # called once, with the whole range
    states = {p.key: p.status for p in client.partitions("orders")}
    assert all(states[d] == PartitionStatus.MATERIALIZED for d in days(1, 10))
    assert states["2025-01-11"] == PartitionStatus.MISSING
    # Each key has its own value, which a one-partition asset downstream would read.
    with client._read() as s:
        mats = repo.latest_per_partition(s, "orders")
    assert sorted(k for k in mats if k) == days(1, 10)
    assert len({m.value_path for m in mats.values()}) == 10
    # In the partition matrix, Enter on any key of the range opens that one run.
    from tui.screens.partitions import latest_run_of

    run_id = client.runs()[0].id
    order = days(1, 31)
    assert latest_run_of(client, "orders", "2025-01-07", None, order) == run_id
    assert latest_run_of(client, "orders", "2025-01-11", None, order) is None


def test_multi_run_cuts_the_range_and_a_range_reads_its_upstream_over_the_range(
    client: Client,
) -> None:
    keys = [*days(1, 7), *days(10, 11)]  # a gap: 8 and 9 are not asked for
    info = backfill(client, ["orders", "revenue"], keys)
    assert info["status"] == BackfillStatus.SUCCESS, info
    # The smallest limit of the assets selected (revenue's 3) cuts the runs, never across the gap.
    assert runs_of(client, str(info["id"])) == [
        "2025-01-01...2025-01-03", "2025-01-04...2025-01-06", "2025-01-07",
        "2025-01-10...2025-01-11",
    ]  # fmt: skip
    assert info["total"] == 9 and info["counts"] == {RunStatus.SUCCESS: 9}
    view = client.materialize(["total"])
    assert view.status == RunStatus.SUCCESS
    with client._read() as s:
        mat = repo.latest_materialization(s, "total", None)
    assert mat is not None and mat.value_path is not None
    import pickle

    total = pickle.loads(Path(mat.value_path).read_bytes())
    assert total == sum(int(d[-2:]) * 10 for d in keys)


def test_materialize_takes_a_range_for_a_ranged_asset_only(client: Client) -> None:
    view = client.materialize(["orders"], partition="2025-02-01...2025-02-03")
    assert view.status == RunStatus.SUCCESS and view.partition == "2025-02-01...2025-02-03"
    states = {p.key: p.status for p in client.partitions("orders")}
    assert [states[f"2025-02-0{d}"] for d in (1, 2, 3, 4)] == [PartitionStatus.MATERIALIZED] * 3 + [
        PartitionStatus.MISSING
    ]
    # One key is a range of one: the function still gets a list and returns a mapping.
    assert client.materialize(["orders"], partition="2025-02-09").status == RunStatus.SUCCESS
    with pytest.raises(PartitionError, match="one partition per run"):
        client.materialize(["per_day"], partition="2025-02-01...2025-02-03")
    with pytest.raises(PartitionError, match="after last key"):
        client.materialize(["orders"], partition="2025-02-03...2025-02-01")


def test_mixing_policies_in_one_backfill_is_refused_and_records_nothing(client: Client) -> None:
    with pytest.raises(PartitionError, match="backfill them separately"):
        client.backfill(["orders", "per_day"], keys=days(1, 3))
    with pytest.raises(PartitionError, match="2025-13-01"):
        client.backfill(["orders"], keys=["2025-01-01", "2025-13-01"])
    assert client.backfills() == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("wrong_shape", "must return {key: value} for each key, got list"),
        ("one_short", "returned no value for 2025-01-01"),
    ],
)
def test_a_ranged_asset_returning_the_wrong_shape_fails_and_stores_nothing(
    client: Client, name: str, message: str
) -> None:
    info = backfill(client, [name], days(1, 4))
    assert info["status"] == BackfillStatus.FAILED and info["counts"] == {RunStatus.FAILED: 4}
    view = client.run(client.runs()[0].id)
    assert view.status == RunStatus.FAILED and message in (view.steps[0].error or "")
    states = {p.key: p.status for p in client.partitions(name)}
    assert [states[d] for d in days(1, 4)] == [
        PartitionStatus.FAILED
    ] * 4  # the range's failure, per key
    with client._read() as s:
        assert repo.latest_per_partition(s, name) == {}


def test_a_key_that_cannot_be_stored_fails_the_range_and_leaves_no_value_behind(
    client: Client, tmp_path: Path
) -> None:
    info = backfill(client, ["third_unstorable"], days(1, 4))
    assert info["status"] == BackfillStatus.FAILED
    error = client.run(client.runs()[0].id).steps[0].error or ""
    assert "could not be stored" in error
    # All keys or none: the two values stored before the failure were removed with it.
    values = tmp_path / "home" / "values" / "third_unstorable"
    assert [p for p in values.rglob("*") if p.is_file()] == []
    with client._read() as s:
        assert repo.latest_per_partition(s, "third_unstorable") == {}


def test_the_cli_runs_a_single_run_backfill_and_says_so_in_one_line_when_mixed(
    client: Client, tmp_path: Path
) -> None:
    base = [DAGTOP, "--home", str(tmp_path / "home"), "--pipelines", str(tmp_path / "pipelines")]
    done = subprocess.run(
        [*base, "backfill", "orders", "--from", "2025-01-01", "--to", "2025-01-30", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (
        info["status"] == BackfillStatus.SUCCESS and info["total"] == 30 and len(client.runs()) == 1
    )
    mixed = subprocess.run(
        [*base, "backfill", "orders", "per_day", "--from", "2025-01-01", "--to", "2025-01-03"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr
    assert mixed.stderr.strip().splitlines() == [
        "dagtop: error: asset 'orders' backfills ranges (its BackfillPolicy) and 'per_day' one "
        "partition per run: backfill them separately"
    ]


# --- the in-process test API ------------------------------------------------------------------


def test_engine_testing_calls_a_ranged_asset_once_with_its_keys(tmp_path: Path) -> None:
    pdef = DailyPartitions(start="2025-01-01", end="2025-02-01")
    seen: list[list[str]] = []

    @asset(partitions=pdef, backfill_policy=BackfillPolicy.single_run())
    def loads(context: StepContext) -> dict[str, str]:
        seen.append(list(context.partition_keys))
        return {d: d[-2:] for d in context.partition_keys}

    @asset
    def joined(loads: dict[str, str]) -> str:
        return "".join(loads[k] for k in sorted(loads))

    result = materialize([loads, joined], partition=days(1, 3), home=tmp_path)
    assert seen == [days(1, 3)]
    assert result.values == {
        "loads": {"2025-01-01": "01", "2025-01-02": "02", "2025-01-03": "03"},
        "joined": "010203",
    }
    assert materialize([loads], partition="2025-01-05", home=tmp_path).values == {"loads": "05"}
