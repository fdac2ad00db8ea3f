"""Dynamic partitions: keys added and removed at run time (`dagtop keys`, an asset's
`context.add_partitions`), checked as every key is, and used by materialize, backfills,
`dagtop partitions` and staleness as static keys are. Real CLI processes, real SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.authoring.partitions import (
    DynamicPartitions,
    InvalidPartitionKey,
    PartitionsDefinition,
)
from engine.client import Client
from engine.status import PartitionStatus

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

PIPELINE = textwrap.dedent(
    """
    from engine import DynamicPartitions, asset

    customers = DynamicPartitions("customers")


    @asset
    def signups(context):
        context.add_partitions(customers, context.params.get("names", []))
        return len(context.params.get("names", []))


    @asset(partitions=customers)
    def customer_model(context):
        return context.partition.upper()


    @asset(partitions=customers)
    def report(customer_model):
        return customer_model + "!"
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "crm.py").write_text(PIPELINE)
    return tmp_path


def dagtop(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_definition_round_trips_and_suggests_the_closest_key() -> None:
    bound = DynamicPartitions("customers").with_keys(["acme", "globex"])
    assert PartitionsDefinition.from_spec({**bound.to_spec(), "keys": ["acme", "globex"]}) == bound
    assert bound.to_spec() == {"kind": "dynamic", "name": "customers"}  # keys are not definitions
    assert bound.keys() == ["acme", "globex"]
    with pytest.raises(InvalidPartitionKey, match=r"'acm' is not a key of 'customers' \(did you mean 'acme'\?\)"):  # fmt: skip  # noqa: E501
        bound.validate_key("acm")
    with pytest.raises(InvalidPartitionKey, match="no keys yet"):
        DynamicPartitions("customers").validate_key("acme")
    with pytest.raises(ValueError, match="DynamicPartitions name"):
        DynamicPartitions("../etc")


def test_keys_are_added_listed_removed_and_used_like_static_keys(project: Path) -> None:
    added = dagtop(project, "keys", "add", "customers", "acme", "globex")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "customers: 2 key(s) added, 2 in all"
    again = dagtop(project, "keys", "add", "customers", "acme", "--json")
    assert json.loads(again.stdout) == {"changed": [], "keys": ["acme", "globex"]}  # a no-op
    assert dagtop(project, "keys", "list", "customers").stdout.split() == ["acme", "globex"]

    done = dagtop(project, "materialize", "customer_model", "report", "--partition", "acme")
    assert done.returncode == 0, done.stderr
    unknown = dagtop(project, "materialize", "customer_model", "--partition", "acme-corp")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "dagtop: error: asset 'customer_model': 'acme-corp' is not a key of 'customers' "
        "(did you mean 'acme'?)"
    ]
    backfill = dagtop(project, "backfill", "customer_model", "report")  # every key
    assert backfill.returncode == 0, backfill.stderr
    assert "2/2 partitions" in backfill.stdout
    client = Client(project / "home", project / "pipelines")
    states = {p.key: p.status for p in client.partitions("report")}
    assert states == {"acme": PartitionStatus.MATERIALIZED, "globex": PartitionStatus.MATERIALIZED}

    removed = dagtop(project, "keys", "remove", "customers", "acme")
    assert removed.returncode == 0 and "1 key(s) removed, 1 in all" in removed.stdout
    assert [p.key for p in client.partitions("report")] == ["globex"]
    # Its history stays: the runs, and the value, which comes back with the key.
    assert any(v.partition == "acme" for v in client.runs(20))
    dagtop(project, "keys", "add", "customers", "acme")
    assert client.partitions("report")[-1].status == PartitionStatus.MATERIALIZED


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["bad\nkey"], "contains a control character"),
        ([" padded"], "starts or ends with a space"),
        ([""], "non-empty string"),
    ],
)
def test_a_hostile_key_is_refused_in_one_line(project: Path, keys: list[str], message: str) -> None:
    done = dagtop(project, "keys", "add", "customers", *keys)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert dagtop(project, "keys", "list", "customers", "--json").stdout.strip() == "[]"


def test_a_key_with_path_tricks_stays_a_key_and_its_value_stays_in_the_home(
    project: Path,
) -> None:
    assert dagtop(project, "keys", "add", "customers", "../../escape").returncode == 0
    done = dagtop(project, "materialize", "customer_model", "--partition", "../../escape")
    assert done.returncode == 0, done.stderr
    assert not (project.parent / "escape").exists()
    values = list((project / "home" / "values" / "customer_model").rglob("*.pkl"))
    assert len(values) == 1 and "escape~" in values[0].parent.name


def test_an_unknown_definition_is_refused_with_the_closest_name(project: Path) -> None:
    done = dagtop(project, "keys", "add", "customer", "acme")
    assert done.returncode == 2
    assert "no asset is partitioned by DynamicPartitions 'customer'" in done.stderr
    assert "customers" in done.stderr


def test_an_asset_adds_keys_with_its_materialization(project: Path) -> None:
    done = dagtop(project, "materialize", "signups", "--param", 'names=["initech", "umbrella"]')
    assert done.returncode == 0, done.stderr
    assert dagtop(project, "keys", "list", "customers").stdout.split() == ["initech", "umbrella"]


def test_engine_testing_collects_the_keys_an_asset_adds() -> None:
    from engine.authoring.context import build_context

    context = build_context(params={"names": ["a", "b"]})
    context.add_partitions(DynamicPartitions("customers"), ["a", "b"])
    assert context.added_partitions == {"customers": ["a", "b"]}
    with pytest.raises(ValueError, match="control character"):
        context.add_partitions("customers", ["x\x1b"])
