"""The partition matrix on a real home: the first poll reads every state, later polls only
what changed, and a run's results (a failed check included) reach the cells."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.client import Client
from engine.history.partition_status import PartitionChanges, PartitionCursor
from engine.status import PartitionStatus
from tests.tui.waits import until
from tui.app import DagtopApp
from tui.screens.partitions import PartitionsScreen

pytestmark = pytest.mark.serial

CHAIN = textwrap.dedent(
    """
    from engine import CheckResult, StaticPartitions, asset, check

    regions = StaticPartitions(["north", "south", "east"])


    @asset(group="chain", partitions=regions)
    def raw(context):
        return {"region": context.partition}


    @asset(group="chain", partitions=regions)
    def clean(raw):
        return raw


    @check(asset="clean", blocking=True)
    def not_south(clean):
        return CheckResult(passed=clean["region"] != "south")
    """
)


class Watched(Client):
    """The real client, noting what each poll of the matrix read."""

    polls: list[tuple[bool, dict[str, int]]]

    def partition_changes(
        self, assets: Sequence[str], cursor: PartitionCursor | None = None
    ) -> PartitionChanges:
        changes: PartitionChanges = super().partition_changes(assets, cursor)
        self.polls.append((changes.full, {k: len(v) for k, v in changes.states.items()}))
        return changes


async def test_the_matrix_reads_only_what_changed_and_shows_a_failed_check(
    tmp_path: Path,
) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "chain.py").write_text(CHAIN)
    client = Watched(home=tmp_path / "home", pipelines=pipelines)
    client.polls = []
    client.materialize(["raw", "clean"], "north")
    app = DagtopApp(client, mode="offline")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = PartitionsScreen("clean")
        await app.push_screen(screen)
        await until(lambda: screen.polls >= 3, pilot, 30)
        matrix = screen.matrix
        assert [matrix.status_of("clean", k) for k in ("north", "south", "east")] == [
            PartitionStatus.MATERIALIZED, PartitionStatus.MISSING, PartitionStatus.MISSING,
        ]  # fmt: skip
        # The first poll read everything; those since, nothing (nothing ran).
        assert client.polls[0][0] and all(
            not full and not states for full, states in client.polls[1:]
        )
        await asyncio.to_thread(client.materialize, ["raw", "clean"], "south")
        await until(lambda: matrix.status_of("clean", "south") == "check-failed", pilot, 30)
        assert matrix.status_of("raw", "south") == PartitionStatus.MATERIALIZED
        assert matrix.status_of("clean", "east") == PartitionStatus.MISSING
        # The poll that saw the run read the two keys it touched, not the rows.
        changed = [states for full, states in client.polls[1:] if states]
        assert changed and not any(full for full, _ in client.polls[1:])
        assert all(n == 1 for states in changed for n in states.values()), changed


GRID = textwrap.dedent(
    """
    from engine import DailyPartitions, MultiPartitions, StaticPartitions, asset

    grid = MultiPartitions({
        "date": DailyPartitions(start="2025-01-01", end="2025-01-04"),
        "region": StaticPartitions(["north", "south"]),
    })


    @asset(group="grid", partitions=grid)
    def sales(context):
        if context.dimensions == {"date": "2025-01-02", "region": "south"}:
            raise ValueError("no data")
        return 1
    """
)


async def test_a_grid_fills_in_cell_by_cell_as_runs_end(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "grid.py").write_text(GRID)
    client = Watched(home=tmp_path / "home", pipelines=pipelines)
    client.polls = []
    app = DagtopApp(client, mode="offline")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = PartitionsScreen("sales")
        await app.push_screen(screen)
        await until(lambda: screen.polls >= 2, pilot, 30)
        matrix = screen.matrix
        north, south = "sales\x1fnorth", "sales\x1fsouth"
        assert matrix.status_of(north, "2025-01-02") == PartitionStatus.MISSING
        await asyncio.to_thread(client.materialize, ["sales"], "2025-01-02|north")
        await until(
            lambda: matrix.status_of(north, "2025-01-02") == PartitionStatus.MATERIALIZED, pilot, 30
        )
        # The asset's own row shows the worst of its regions: south is still missing.
        assert matrix.status_of("sales", "2025-01-02") == PartitionStatus.MISSING
        await asyncio.to_thread(client.materialize, ["sales"], "2025-01-02|south")
        await until(
            lambda: matrix.status_of(south, "2025-01-02") == PartitionStatus.FAILED, pilot, 30
        )
        await until(
            lambda: matrix.status_of("sales", "2025-01-02") == PartitionStatus.FAILED, pilot, 30
        )
        assert matrix.status_of(south, "2025-01-01") == PartitionStatus.MISSING
        # Only the first poll read every key; the others read what the runs touched.
        assert client.polls[0][0] and not any(full for full, _ in client.polls[1:])
