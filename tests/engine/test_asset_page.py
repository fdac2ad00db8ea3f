"""An asset's page (`Client.asset`, `dagtop asset`): real runs, real storage, the real command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.client import Client
from engine.errors import EngineError, PartitionError, SelectionError
from engine.status import PartitionStatus

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
MODEL = textwrap.dedent(
    """
    import os

    from engine import CheckResult, StaticPartitions, asset, check

    @asset(group="ml", description="Rows to learn from.\\n\\nMore words.")
    def rows(context):
        return [1, 2, 3]


    @asset(group="ml")
    def model(context, rows):
        n = int(os.environ.get("TRAINING", "0"))
        context.add_metadata({"accuracy": 0.5 + n / 10, "rows": len(rows), "note": f"try {n}",
                              "converged": True})
        return n


    @check(asset="model", blocking=False, description="good enough")
    def accurate(model):
        return CheckResult(passed=model != 2, metadata={"seen": model})


    @asset(group="ml")
    def report(model):
        return model


    regions = StaticPartitions(["eu", "us", "asia"])


    @asset(group="sales", partitions=regions)
    def sales(context):
        context.add_metadata({"orders": {"eu": 10, "us": 30, "asia": 20}[context.partition]})
        return 1
    """
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Client:
    """`model` trained three times (accuracy 0.6, 0.7, 0.8; the check fails on the second),
    `sales` materialized for eu, us, then eu again."""
    import os

    root = tmp_path_factory.mktemp("page")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "model.py").write_text(MODEL)
    client = Client(home=root / "home", pipelines=root / "pipelines")
    for n in (1, 2, 3):
        os.environ["TRAINING"] = str(n)
        try:
            assert client.materialize(["+model"]).status == "success"
        finally:
            del os.environ["TRAINING"]
    for key in ("eu", "us", "eu"):
        assert client.materialize(["sales"], key).status == "success"
    return client


def test_the_page_shows_the_history_newest_first_with_metadata_and_checks(
    trained: Client,
) -> None:
    page = trained.asset("model")
    assert (page.name, page.group, page.file, page.partitions) == ("model", "ml", "model.py", None)
    assert (page.upstream, page.downstream) == (("rows",), ("report",))
    assert page.partition_counts == {PartitionStatus.MATERIALIZED: 1} and not page.stale
    accuracies = [m.metadata["accuracy"] for m in page.materializations]
    assert accuracies == pytest.approx([0.8, 0.7, 0.6])
    assert [m.checks for m in page.materializations] == [
        {"accurate": True}, {"accurate": False}, {"accurate": True},
    ]  # fmt: skip
    assert [m.current for m in page.materializations] == [True, False, False]
    assert all(m.trigger == "manual" and (m.duration or 0) > 0 for m in page.materializations)
    assert page.metadata_keys == ["accuracy", "rows", "note", "converged"]

    (check,) = page.checks
    assert (check.name, check.blocking, check.description) == ("accurate", False, "good enough")
    assert [r.passed for r in check.results] == [True, False, True]
    assert [r.metadata for r in check.results] == [{"seen": 3}, {"seen": 2}, {"seen": 1}]
    assert check.pass_rate == pytest.approx(2 / 3)

    # Numbers are plotted, oldest first; text and booleans are not.
    assert set(page.series) == {"accuracy", "rows"}
    assert [p.value for p in page.series["accuracy"]] == pytest.approx([0.6, 0.7, 0.8])
    assert page.by_partition == {}


def test_the_limit_keeps_the_newest_and_says_there_are_more(trained: Client) -> None:
    page = trained.asset("model", limit=2)
    assert [m.metadata["accuracy"] for m in page.materializations] == pytest.approx([0.8, 0.7])
    assert page.more and [r.passed for r in page.checks[0].results] == [True, False]
    assert not trained.asset("model", limit=3).more
    with pytest.raises(EngineError, match="at least 1"):
        trained.asset("model", limit=0)


def test_a_change_upstream_makes_it_stale_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "model.py").write_text(MODEL)
    client = Client(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    assert client.materialize(["+model"]).status == "success"
    assert not client.asset("model").stale
    assert client.materialize(["rows"]).status == "success"
    page = client.asset("model")
    assert page.stale and page.stale_reasons == ("upstream rows newer",)
    assert page.partition_counts == {PartitionStatus.STALE: 1}


def test_a_partitioned_asset_across_partitions_and_narrowed_to_one(trained: Client) -> None:
    page = trained.asset("sales")
    assert page.partitions is not None and "eu" in page.partitions
    assert page.partition_counts == {
        PartitionStatus.MATERIALIZED: 2, PartitionStatus.MISSING: 1,
    }  # fmt: skip
    assert [m.partition for m in page.materializations] == ["eu", "us", "eu"]
    # Across partitions: each one's current value, in the definition's key order.
    assert [(p.partition, p.value) for p in page.by_partition["orders"]] == [
        ("eu", 10.0), ("us", 30.0),
    ]  # fmt: skip

    eu = trained.asset("sales", "eu")
    assert eu.partition == "eu" and [m.partition for m in eu.materializations] == ["eu", "eu"]
    assert eu.partition_counts == {PartitionStatus.MATERIALIZED: 1} and eu.by_partition == {}
    assert trained.asset("sales", "asia").materializations == ()


def test_unknown_names_and_keys_are_refused_with_a_suggestion(trained: Client) -> None:
    with pytest.raises(SelectionError, match="unknown asset 'modle'.*model"):
        trained.asset("modle")
    with pytest.raises(PartitionError, match="not partitioned"):
        trained.asset("model", "eu")
    with pytest.raises(PartitionError, match="mars"):
        trained.asset("sales", "mars")


def test_dagtop_asset_prints_the_page_and_its_json(trained: Client) -> None:
    base = [DAGTOP, "--home", str(trained.paths.home), "--pipelines", str(trained.paths.pipelines)]

    def dagtop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)

    shown = dagtop("asset", "model", "--limit", "2")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("model  group ml  model.py:")
    assert "upstream     rows" in shown.stdout and "downstream   report" in shown.stdout
    mats = [line for line in lines if "accuracy=" in line]
    assert len(mats) == 2 and "accuracy=0.8" in mats[0] and "note=try 3" in mats[0]
    assert "(the newest 2; --limit N for more)" in shown.stdout
    assert "  ✓ accurate  1/2 passed (50%)  ✓✗" in lines

    as_json = dagtop("asset", "sales", "--partition", "eu", "--json")
    data = json.loads(as_json.stdout)
    assert data["partition"] == "eu" and len(data["materializations"]) == 2
    assert data["series"]["orders"][0]["value"] == 10

    unknown = dagtop("asset", "modle")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "dagtop: error: unknown asset 'modle' (did you mean model?)"
    ]
    far = dagtop("asset", "zzz")
    assert far.returncode == 2 and far.stderr.strip().splitlines() == [
        "dagtop: error: unknown asset 'zzz' (`dagtop list` shows every asset)"
    ]
    bad_key = dagtop("asset", "sales", "--partition", "mars")
    assert bad_key.returncode == 2 and len(bad_key.stderr.strip().splitlines()) == 1


def test_the_lineage_of_an_older_materialization(trained: Client) -> None:
    oldest = trained.asset("model").materializations[-1]
    root = trained.lineage("model", materialization=oldest.id)
    assert (root.materialization_id, root.run_id, root.replaced) == (
        oldest.id, oldest.run_id, True,
    )  # fmt: skip
    (rows,) = root.children
    assert rows.asset == "rows" and rows.run_id == oldest.run_id
    assert trained.lineage("model").materialization_id != oldest.id
    sales = trained.asset("sales").materializations[0]
    with pytest.raises(EngineError, match="no materialization"):
        trained.lineage("model", materialization=sales.id)


def test_the_page_travels_as_json(trained: Client) -> None:
    from engine.client import AssetPage

    for page in (trained.asset("model"), trained.asset("sales"), trained.asset("sales", "eu")):
        wire = json.loads(json.dumps(page.to_wire()))
        assert AssetPage.from_wire(wire) == page
