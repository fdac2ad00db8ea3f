"""Lineage and staleness: what produced a value, what depends on it, and what is out of date
after an upstream run or a code edit; `materialize --stale` runs exactly what is due.

Real runs (worker processes, SQLite) on a small partitioned chain written into tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.client import Client, LineageNode, RunView
from engine.status import Freshness, PartitionStatus, RunStatus
from tests.waiting import wait_for

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

CHAIN = textwrap.dedent(
    """
    from engine import StaticPartitions, asset

    regions = StaticPartitions(["north", "south"])


    @asset(partitions=regions)
    def raw_events(context):
        return {"region": context.partition, "n": context.params.get("n", 1)}


    @asset(partitions=regions)
    def cleaned(raw_events):
        return raw_events["n"] * 2


    @asset
    def summary(cleaned):
        return sum(cleaned.values())


    @asset(code_version="v1")
    def pinned():
        return 1
    """
)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "chain.py").write_text(CHAIN)
    (tmp_path / "dagtop.toml").write_text("max_workers = 2\n")
    return Client(home=tmp_path / "home", pipelines=pipelines)


def ok(view: RunView) -> RunView:
    assert view.status == RunStatus.SUCCESS, [(s.key, s.status, s.error) for s in view.steps]
    return view


def child(node: LineageNode, asset: str, partition: str | None = None) -> LineageNode:
    found = [c for c in node.children if c.asset == asset and c.partition == partition]
    assert len(found) == 1, [(c.asset, c.partition) for c in node.children]
    return found[0]


def at(t: float | None) -> float:
    """A time the test knows was recorded."""
    assert t is not None
    return t


def dagtop(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(client.paths.home), "--pipelines", str(client.paths.pipelines)]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


def test_lineage_follows_a_partitioned_chain_back_to_its_roots(client: Client) -> None:
    north = ok(client.materialize(["raw_events", "cleaned"], "north", params={"n": 3}))
    south = ok(client.materialize(["raw_events", "cleaned"], "south"))
    report = ok(client.materialize(["summary"]))

    root = client.lineage("summary")
    assert (root.asset, root.partition, root.run_id) == ("summary", None, report.id)
    assert [(c.asset, c.partition) for c in root.children] == [
        ("cleaned", "north"),
        ("cleaned", "south"),
    ]
    raw_north = child(child(root, "cleaned", "north"), "raw_events", "north")
    assert raw_north.run_id == north.id and raw_north.params == {"n": 3}
    assert child(child(root, "cleaned", "south"), "raw_events", "south").run_id == south.id
    assert raw_north.children == ()  # a root
    manifest = client.load()
    for node in root.walk():
        assert node.code_version == manifest.assets[node.asset].code_version
        assert node.attempt_id and node.created_at and node.trigger == "manual"
        assert not (node.replaced or node.stale or node.code_changed or node.repeat)
    assert at(raw_north.created_at) < at(child(root, "cleaned", "north").created_at)
    assert at(child(root, "cleaned", "north").created_at) < at(root.created_at)

    one = client.lineage("cleaned", "north")
    assert [(c.asset, c.partition) for c in one.children] == [("raw_events", "north")]

    down = client.lineage("raw_events", "north", downstream=True)
    cleaned = child(down, "cleaned", "north")
    assert cleaned.consumed is True and child(cleaned, "summary").consumed is True

    as_json = json.loads(json.dumps(root.to_json()))  # what `--json` prints
    assert as_json["run_id"] == report.id and as_json["code_changed"] is False
    assert as_json["children"][0]["children"][0]["params"] == {"n": 3}
    text = dagtop(client, "lineage", "summary").stdout.splitlines()
    assert text[0].startswith("summary  run " + report.id)
    assert text[1].startswith("├── cleaned [north]") and text[2].startswith("│   └── raw_events")
    assert "params n=3" in text[2]


def test_a_rematerialized_upstream_shows_in_lineage_and_makes_downstream_stale(
    client: Client,
) -> None:
    for region in ("north", "south"):
        ok(client.materialize(["raw_events", "cleaned"], region))
    ok(client.materialize(["summary"]))
    again = ok(client.materialize(["raw_events"], "north"))

    root = client.lineage("summary")
    cleaned = child(root, "cleaned", "north")
    old_raw = child(cleaned, "raw_events", "north")
    assert old_raw.replaced and old_raw.run_id != again.id  # what it consumed, since replaced
    assert cleaned.stale == ("upstream raw_events newer",)
    assert root.stale == ("upstream cleaned stale",)  # staleness shows all the way down
    assert not child(root, "cleaned", "south").stale

    down = client.lineage("raw_events", "north", downstream=True)
    assert down.run_id == again.id
    assert child(down, "cleaned", "north").consumed is False  # built from the older value

    ok(client.materialize(["cleaned"], "north"))
    down = client.lineage("raw_events", "north", downstream=True)
    cleaned = child(down, "cleaned", "north")
    assert cleaned.consumed is True and not cleaned.stale
    assert child(cleaned, "summary").consumed is False
    assert child(cleaned, "summary").stale == ("upstream cleaned newer",)

    states = {p.key: (p.status, p.reason) for p in client.partitions("summary")}
    assert states == {None: (PartitionStatus.STALE, "upstream cleaned newer")}
    states = {p.key: (p.status, p.reason) for p in client.partitions("raw_events")}
    assert states == {
        "north": (PartitionStatus.MATERIALIZED, None),
        "south": (PartitionStatus.MATERIALIZED, None),
    }


def test_staleness_from_a_code_edit_picked_up_by_hot_reload(client: Client) -> None:
    from engine.service.daemon import Engine

    engine = Engine(client.paths, client.config, schedules=False, sensors=False, db=client.db)
    engine.start()
    client.attach(engine)
    try:
        ok(client.materialize(["raw_events", "cleaned"], "north"))
        ok(client.materialize(["summary", "pinned"]))
        assert {p.status for p in client.partitions("cleaned") if p.key == "north"} == {
            PartitionStatus.MATERIALIZED
        }
        before = engine.manifest().assets["cleaned"].code_version
        path = client.paths.pipelines / "chain.py"
        # Edit `cleaned`'s body, and `pinned`'s body under its unchanged explicit code_version.
        path.write_text(
            CHAIN.replace('raw_events["n"] * 2', 'raw_events["n"] * 3').replace(
                "return 1", "return 10"
            )
        )
        wait_for(lambda: engine.manifest().assets["cleaned"].code_version != before)

        states = {p.key: (p.status, p.reason) for p in client.partitions("cleaned")}
        assert states == {
            "north": (PartitionStatus.STALE, "code changed"),
            "south": (PartitionStatus.MISSING, None),
        }
        assert client.partitions("summary")[0].reason == "upstream cleaned stale"
        assert client.partitions("raw_events")[0].status == PartitionStatus.MATERIALIZED
        assert client.partitions("pinned")[0].status == PartitionStatus.MATERIALIZED
        node = client.lineage("cleaned", "north")
        assert node.code_changed and node.code_version == before

        path.write_text(path.read_text().replace('code_version="v1"', 'code_version="v2"'))
        wait_for(lambda: engine.manifest().assets["pinned"].code_version == "v2")
        assert (client.partitions("pinned")[0].status, client.partitions("pinned")[0].reason) == (
            PartitionStatus.STALE,
            "code changed",
        )
        listed = {a["name"]: a for a in client.describe()["assets"]}
        assert listed["pinned"]["stale_reason"] == "code changed"
        assert listed["cleaned"]["stale_reason"] == "1 partition: code changed"
        assert listed["raw_events"]["status"] == PartitionStatus.MATERIALIZED
    finally:
        engine.stop()


def test_materialize_stale_runs_exactly_the_stale_set_in_order(client: Client) -> None:
    ok(client.materialize(["raw_events", "cleaned"], "north"))
    ok(client.materialize(["summary"]))
    ok(client.materialize(["raw_events"], "north"))

    states, view = client.materialize_stale(["*"], "north")
    assert [(s.asset, s.status, s.reasons) for s in states] == [
        ("raw_events", Freshness.CURRENT, ()),
        ("cleaned", Freshness.STALE, ("upstream raw_events newer",)),
        ("summary", Freshness.STALE, ("upstream cleaned stale",)),
        (
            "pinned",
            Freshness.MISSING,
            ("never materialized",),
        ),  # as Dagster's "unsynced": missing too
    ]
    assert view is not None
    by_key = {s.key: s for s in ok(view).steps}
    assert set(by_key) == {"cleaned", "summary", "pinned"}
    # In dependency order:
    assert at(by_key["cleaned"].ended_at) <= at(by_key["summary"].started_at)
    assert view.partition == "north"
    assert all(s.status == Freshness.CURRENT for s in client.stale(["*"], "north"))

    # A missing upstream in the selection runs first, and what reads it runs after it.
    states, view = client.materialize_stale(["*summary"], "south")
    assert [(s.asset, s.status) for s in states] == [
        ("raw_events", Freshness.MISSING),
        ("cleaned", Freshness.MISSING),
        ("summary", Freshness.STALE),
    ]
    assert states[2].reasons == ("upstream cleaned runs first",)
    assert view is not None
    assert [s.key for s in ok(view).steps] == ["raw_events", "cleaned", "summary"]

    # Unpartitioned only: the partition is not passed on to the run.
    states, view = client.materialize_stale(["summary", "pinned"])
    assert view is None and {s.status for s in states} == {Freshness.CURRENT}

    result = dagtop(client, "materialize", "--stale", "*", "--partition", "north")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing is stale"
    ok(client.materialize(["raw_events"], "north"))
    result = dagtop(client, "materialize", "--stale", "*", "--partition", "north")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["◧", "cleaned", "[north]", "stale:", "upstream", "raw_events",
                                "newer"]  # fmt: skip
    assert lines[1].split() == ["◧", "summary", "stale:", "upstream", "cleaned", "stale"]
    assert "materializing 2 of 4 assets" in lines
    assert {a["name"]: a["status"] for a in client.describe()["assets"]} == {
        "raw_events": PartitionStatus.MATERIALIZED,
        "cleaned": PartitionStatus.MATERIALIZED,
        "summary": PartitionStatus.MATERIALIZED,
        "pinned": PartitionStatus.MATERIALIZED,
    }


def test_list_marks_stale_assets_with_the_reason(client: Client) -> None:
    ok(client.materialize(["raw_events", "cleaned"], "north"))
    ok(client.materialize(["raw_events"], "north"))
    listing = dagtop(client, "list")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if x.strip().startswith("cleaned"))
    assert "◧ stale (1 partition: upstream raw_events newer)" in line
    data = {a["name"]: a for a in client.describe()["assets"]}
    assert data["cleaned"]["status"] == PartitionStatus.STALE
    assert (
        data["summary"]["status"] == PartitionStatus.MISSING
        and data["summary"]["stale_reason"] is None
    )
    partitions = dagtop(client, "partitions", "cleaned")
    assert "stale  (upstream raw_events newer)" in partitions.stdout


def test_lineage_mistakes_are_one_line(client: Client) -> None:
    from engine.errors import EngineError

    ok(client.materialize(["pinned"]))
    for args, words in [
        (("pinned", "north"), "not partitioned"),
        (("cleaned", None), "--partition"),
        (("cleaned", "east"), "east"),
        (("summary", None), "no materialization"),
        (("sumary", None), "did you mean summary"),
    ]:
        with pytest.raises(EngineError, match=words):
            client.lineage(*args)
    result = dagtop(client, "lineage", "pinned", "--partition", "north")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert result.stderr.strip().splitlines() == [
        "dagtop: error: asset 'pinned' is not partitioned: drop --partition"
    ]
    down = client.lineage("cleaned", "north", downstream=True)
    assert down.materialization_id is None and down.children[0].asset == "summary"
    assert down.children[0].consumed is False


VARIED = textwrap.dedent(
    """
    from engine import StaticPartitions, asset

    regions = StaticPartitions(["north", "south", "east"])
    days = StaticPartitions(["d1", "d2"])


    @asset(partitions=regions)
    def raw(context):
        return 1


    @asset(partitions=regions)
    def clean(raw):
        return raw


    @asset(partitions=days)
    def daily(clean):
        return 1


    @asset
    def left(clean):
        return 1


    @asset
    def right(clean, raw):
        return 1


    @asset
    def joined(left, right):
        return 1


    @asset(code_version="v2")
    def pinned():
        return 1


    @asset
    def after_pinned(pinned, joined):
        return 1


    @asset
    def never():
        return 1
    """
)


def test_staleness_read_in_one_query_equals_one_query_per_asset(tmp_path: Path) -> None:
    import random

    from engine.history.lineage import Staleness
    from engine.storage import repo
    from engine.storage.db import read_scope, session_scope
    from engine.storage.models import Materialization

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "varied.py").write_text(VARIED)
    client = Client(home=tmp_path / "home", pipelines=pipelines)
    manifest = client.load()
    keys = {"raw": 3, "clean": 3, "daily": 2}
    names = [n for n in manifest.assets if n != "never"] + ["gone"]  # gone: no longer defined
    rng = random.Random(11)
    at = 1_000.0
    with session_scope(client.db) as s:
        for n in range(300):
            name = rng.choice(names)
            spec = manifest.assets.get(name)
            pdef = spec.partitions_def if spec is not None else None
            partition = None if pdef is None else rng.choice(pdef.keys()[: keys[name]])
            at += rng.choice((0.0, 0.5, 3.0))  # some share a time: the id decides
            version = spec.code_version if spec is not None and rng.random() > 0.1 else "old"
            mat = Materialization(
                asset=name, partition=partition, run_id=f"r{n}", created_at=at,
                code_version=version, value_path=f"/values/{name}/{n}",
            )  # fmt: skip
            repo.add_materialization(s, mat)
        for name, partition, later in (("clean", "north", 1.0), ("left", None, 0.0)):
            # Two current values of one partition (the older one not cleared, as a store
            # written by an older engine may hold): the newest wins, the later id on a tie.
            extra = Materialization(
                asset=name, partition=partition, run_id="x", created_at=at + later,
                code_version="old", value_path=f"/values/{name}/x",
            )  # fmt: skip
            s.add(extra)
    everything = [*manifest.assets, "gone"]
    with read_scope(client.db) as s:
        batched = repo.latest_per_partition_of(s, everything)
        one_by_one = {name: repo.latest_per_partition(s, name) for name in everything}
        assert {n: {k: m.id for k, m in v.items()} for n, v in batched.items()} == {
            n: {k: m.id for k, m in v.items()} for n, v in one_by_one.items()
        }
        assert batched["never"] == {} and batched["gone"]

        slow, fast = Staleness(s, manifest), Staleness(s, manifest)
        fast.preload(manifest.assets)
        judged = {
            (name, key): slow.reasons(name, key) for name in everything for key in one_by_one[name]
        }
        assert judged == {(name, key): fast.reasons(name, key) for name, key in judged}
    # The history is varied enough to say something: every kind of reason shows up.
    kinds = {r if r == "code changed" else r.split()[-1] for why in judged.values() for r in why}
    assert {"code changed", "newer", "stale"} <= kinds, judged
    assert any(not why for why in judged.values())
