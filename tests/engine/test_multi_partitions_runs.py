"""MultiPartitions through real runs: the key and its dimensions in the step, `--partition` checked
with one line, a backfill over the time dimension covering every region, what a downstream
partitioned alike or by one dimension reads, status, staleness and lineage per key. Real worker
processes, SQLite and the real `dagtop` command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.client import Client
from engine.status import Freshness, PartitionStatus

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
GRID = textwrap.dedent(
    """
    import json

    from engine import DailyPartitions, MultiPartitions, StaticPartitions, asset

    days = DailyPartitions(start="2025-01-01", end="2025-01-04")
    regions = StaticPartitions(["us", "eu"])
    grid = MultiPartitions({"region": regions, "date": days})


    def seen(context, **inputs):
        # What the step was given, for the test to read.
        out = context.home / "seen" / f"{context.key}.{context.partition.replace('|', '_')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"partition": context.partition,
                                   "dimensions": context.dimensions, **inputs}))


    @asset(partitions=days)
    def weather(context):
        return f"weather {context.partition}"


    @asset(partitions=grid)
    def sales(context, weather):
        seen(context, weather=weather)
        return f"sales {context.partition}"


    @asset(partitions=grid)
    def clean(context, sales):
        seen(context, sales=sales)
        return sales.upper()


    @asset(partitions=days)
    def daily_total(context, sales):
        seen(context, sales=sales)
        return len(sales)


    @asset(partitions=regions)
    def by_region(context, sales):
        seen(context, sales=sales)
        return len(sales)
    """
)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "grid.py").write_text(GRID)
    return Client(home=tmp_path / "home", pipelines=pipelines)


def dagtop(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines)]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)


def seen(client: Client, asset: str, key: str) -> dict[str, object]:
    path = client.paths.home / "seen" / f"{asset}.{key.replace('|', '_')}.json"
    found: dict[str, object] = json.loads(path.read_text())
    return found


def statuses(client: Client, asset: str) -> dict[str | None, PartitionStatus]:
    return {s.key: s.status for s in client.partitions(asset)}


def test_a_key_runs_with_its_dimensions_and_bad_keys_are_one_line(client: Client) -> None:
    ok = dagtop(client, "materialize", "weather", "sales", "--partition", "2025-01-02|eu")
    # weather is daily: a key of two dimensions does not fit it, and the error says so.
    assert ok.returncode != 0
    assert "weather" in ok.stderr + ok.stdout and "Traceback" not in ok.stderr

    assert dagtop(client, "materialize", "weather", "--partition", "2025-01-02").returncode == 0
    ran = dagtop(client, "materialize", "sales", "--partition", "2025-01-02|eu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert seen(client, "sales", "2025-01-02|eu") == {
        "partition": "2025-01-02|eu",
        "dimensions": {"date": "2025-01-02", "region": "eu"},
        "weather": "weather 2025-01-02",  # the upstream key of its date dimension
    }
    for bad, says in [
        ("2025-01-02|EU", "did you mean 'eu'"),
        ("eu|2025-01-02", "did you mean '2025-01-02|eu'"),
        ("2025-01-02", "names only the date"),
        ("2025-02-01|eu", "at or after the end"),
    ]:
        refused = dagtop(client, "materialize", "sales", "--partition", bad)
        assert refused.returncode == 2, (bad, refused.stdout, refused.stderr)
        lines = [ln for ln in (refused.stdout + refused.stderr).splitlines() if ln.strip()]
        assert len(lines) == 1 and says in lines[0], (bad, lines)
        assert "Traceback" not in refused.stderr
    # Nothing was recorded for the refused keys.
    assert [r.partition for r in client.runs(limit=50)].count("2025-01-02|eu") == 1


def test_a_backfill_over_the_time_dimension_covers_every_region(client: Client) -> None:
    assert (
        dagtop(
            client, "backfill", "weather", "--from", "2025-01-01", "--to", "2025-01-03"
        ).returncode
        == 0
    )
    done = dagtop(client, "backfill", "sales", "--from", "2025-01-02", "--to", "2025-01-03")
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(client, "sales") == {
        "2025-01-01|us": PartitionStatus.MISSING,
        "2025-01-01|eu": PartitionStatus.MISSING,
        "2025-01-02|us": PartitionStatus.MATERIALIZED,
        "2025-01-02|eu": PartitionStatus.MATERIALIZED,
        "2025-01-03|us": PartitionStatus.MATERIALIZED,
        "2025-01-03|eu": PartitionStatus.MATERIALIZED,
    }
    listed = dagtop(client, "backfill", "sales", "--partitions", "2025-01-01|eu,2025-01-01|us")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert set(statuses(client, "sales").values()) == {PartitionStatus.MATERIALIZED}
    text = dagtop(client, "partitions", "sales").stdout
    assert "2025-01-03|eu" in text and "materialized 6" in text


def test_downstreams_read_the_same_key_or_the_keys_of_their_dimension(client: Client) -> None:
    dagtop(client, "backfill", "weather", "--from", "2025-01-01", "--to", "2025-01-03")
    dagtop(client, "backfill", "sales", "--from", "2025-01-01", "--to", "2025-01-02")
    for key in ("2025-01-02|us", "2025-01-02|eu"):
        clean = dagtop(client, "materialize", "clean", "--partition", key)
        assert clean.returncode == 0, clean.stdout + clean.stderr
    assert seen(client, "clean", "2025-01-02|us")["sales"] == "sales 2025-01-02|us"

    assert dagtop(client, "materialize", "daily_total", "--partition", "2025-01-02").returncode == 0
    assert seen(client, "daily_total", "2025-01-02")["sales"] == {
        "2025-01-02|us": "sales 2025-01-02|us",
        "2025-01-02|eu": "sales 2025-01-02|eu",
    }
    assert dagtop(client, "materialize", "by_region", "--partition", "eu").returncode == 0
    assert seen(client, "by_region", "eu")["sales"] == {
        "2025-01-01|eu": "sales 2025-01-01|eu",
        "2025-01-02|eu": "sales 2025-01-02|eu",
    }

    # Staleness per key: a new sales value for one key makes only what read it stale.
    assert dagtop(client, "materialize", "sales", "--partition", "2025-01-02|eu").returncode == 0
    daily = {s.key: s for s in client.partitions("daily_total")}
    assert daily["2025-01-02"].status == PartitionStatus.STALE
    assert "upstream sales newer" in (daily["2025-01-02"].reason or "")
    assert statuses(client, "clean")["2025-01-02|us"] == PartitionStatus.MATERIALIZED
    assert statuses(client, "by_region") == {
        "us": PartitionStatus.MISSING,
        "eu": PartitionStatus.STALE,
    }
    stale = {(s.asset, s.status) for s in client.stale(["sales", "clean"], "2025-01-02|eu")}
    assert stale == {("sales", Freshness.CURRENT), ("clean", Freshness.STALE)}

    # Lineage per key: the key's upstream is its date's weather; downstream, its date's total.
    up = dagtop(client, "lineage", "sales", "--partition", "2025-01-02|eu").stdout
    assert "weather [2025-01-02]" in up
    down = dagtop(client, "lineage", "sales", "--partition", "2025-01-02|us", "--downstream")
    assert "clean [2025-01-02|us]" in down.stdout and "daily_total [2025-01-02]" in down.stdout
    assert "by_region [us]" in down.stdout
