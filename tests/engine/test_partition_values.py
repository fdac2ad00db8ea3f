"""What a partition's status says about its value: a failed check shows on it, and a value
deleted by hand is missing everywhere (status, staleness, `--stale`), and a run that needs it
fails with one clear line. Real runs (worker processes, SQLite) and the real `dagtop` command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.client import Client
from engine.history.partition_status import PartitionState
from engine.status import Freshness, PartitionStatus, RunStatus, StepStatus

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
CHAIN = textwrap.dedent(
    """
    from engine import CheckResult, StaticPartitions, asset, check

    regions = StaticPartitions(["north", "south"])


    @asset(partitions=regions)
    def raw(context):
        return {"region": context.partition}


    @asset(partitions=regions)
    def clean(raw):
        return raw


    @check(asset="clean", blocking=True)
    def not_south(clean):
        return CheckResult(passed=clean["region"] != "south")


    @asset
    def summary(clean):
        return sorted(clean)


    @asset
    def lonely():
        return 1
    """
)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "chain.py").write_text(CHAIN)
    return Client(home=tmp_path / "home", pipelines=pipelines)


def dagtop(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines)]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


def state(client: Client, asset: str, key: str | None) -> PartitionState:
    found: PartitionState = next(p for p in client.partitions(asset) if p.key == key)
    return found


def value_of(client: Client, asset: str, key: str | None) -> Path:
    (path,) = (client.paths.values / asset / (key or "_")).glob("*.pkl")
    return path


def test_a_failed_blocking_check_shows_on_its_partition(client: Client) -> None:
    client.materialize(["raw", "clean"], "north")
    client.materialize(["raw", "clean"], "south")  # its check fails: the run fails, the value stays
    south = state(client, "clean", "south")
    assert (south.status, south.failed_checks) == (PartitionStatus.MATERIALIZED, ("not_south",))
    assert state(client, "clean", "north").failed_checks == ()
    text = dagtop(client, "partitions", "clean").stdout
    assert "✗ check not_south" in next(line for line in text.splitlines() if "south" in line)
    assert "✗ check" not in next(line for line in text.splitlines() if "north" in line)
    rows = {
        row["key"]: row
        for row in json.loads(dagtop(client, "partitions", "clean", "--json").stdout)
    }
    assert rows["south"]["failed_checks"] == ["not_south"] and rows["north"]["failed_checks"] == []
    # A new value that passes its checks clears it: the check belongs to the value.
    (client.paths.pipelines / "chain.py").write_text(CHAIN.replace('!= "south"', '!= "east"'))
    client.materialize(["raw", "clean"], "south")
    assert state(client, "clean", "south").failed_checks == ()


def test_a_deleted_value_is_missing_and_a_run_that_needs_it_says_so(client: Client) -> None:
    client.materialize(["raw", "clean"], "north")
    value_of(client, "raw", "north").unlink()
    gone = state(client, "raw", "north")
    assert (gone.status, gone.reason) == (PartitionStatus.MISSING, "stored value missing")
    stale = {(s.asset, s.status) for s in client.stale(["raw", "clean"], "north")}
    assert stale == {("raw", Freshness.MISSING), ("clean", Freshness.STALE)}

    needs = dagtop(client, "materialize", "clean", "--partition", "north")
    assert needs.returncode == 1
    assert "Traceback" not in needs.stderr + needs.stdout
    assert "FileNotFoundError" not in needs.stderr + needs.stdout
    (line,) = [ln for ln in needs.stdout.splitlines() if "no stored value" in ln]
    assert "'raw'" in line and "north" in line

    again = dagtop(client, "materialize", "raw", "clean", "--partition", "north", "--stale")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing is stale" not in again.stdout
    assert state(client, "raw", "north").status == PartitionStatus.MATERIALIZED
    assert value_of(client, "raw", "north").exists()


def test_an_unpartitioned_value_deleted_by_hand_is_missing_in_list_and_on_the_home_screen(
    client: Client,
) -> None:
    client.materialize(["lonely"])
    assert client.node_statuses()["lonely"].status == StepStatus.SUCCESS
    value_of(client, "lonely", None).unlink()
    node = client.node_statuses()["lonely"]
    assert (node.status, node.reason) == (PartitionStatus.STALE, "stored value missing")
    listed = {a["name"]: a for a in json.loads(dagtop(client, "list", "--json").stdout)["assets"]}
    assert listed["lonely"]["status"] == PartitionStatus.MISSING
    assert "□ missing (stored value missing)" in dagtop(client, "list").stdout
    assert state(client, "lonely", None).status == PartitionStatus.MISSING


def test_a_reader_of_every_partition_sees_a_deleted_one_as_missing(client: Client) -> None:
    client.materialize(["raw", "clean"], "north")
    client.materialize(["raw", "clean"], "south")
    value_of(client, "clean", "south").unlink()
    view = client.materialize(["summary"])
    assert view.status == RunStatus.SUCCESS, [(s.key, s.error) for s in view.steps]
    assert state(client, "clean", "south").status == PartitionStatus.MISSING
