"""Reads cost what their answer needs, not what the history holds.

Two histories of the same project (`tests.benchmarks._history_data`: an hourly two-asset chain
with a check, a report reading every hour, 30 feature assets, a task pipeline), one ten times
the other: the same partitions and values, ten times the runs behind them. Each read is made on
both and measured by what SQLite itself did: the statements run and the virtual machine
instructions they took (a progress handler, called every 100 instructions), which grow with
every row a query reads. Time is not measured: these are not benchmarks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event

from engine.client import Client
from tests.benchmarks import _history_data as history

SMALL, LARGE = 300, 3_000
END = "2025-01-03-00:00"  # 48 hourly keys


@dataclass
class Work:
    statements: int = 0
    steps: int = 0  # hundreds of SQLite VM instructions


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Client, Any]]:
    out = {}
    for size in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"h{size}")
        client = history.write_project(root, end=END)
        made = history.build_history(client, size)
        out[size] = (Client(home=client.paths.home, pipelines=client.paths.pipelines), made)
    return out


def measure(client: Client, read: Callable[[], Any]) -> Work:
    """What SQLite did for `read()`, after a first call (which may fill caches)."""
    read()
    work = Work()
    watched: list[sqlite3.Connection] = []

    def tick() -> int:
        work.steps += 1
        return 0

    def before(conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        work.statements += not sql.startswith("BEGIN")  # the transaction, not a read
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.set_progress_handler(tick, 100)
        watched.append(raw)

    event.listen(client.db, "before_cursor_execute", before)
    try:
        read()
    finally:
        event.remove(client.db, "before_cursor_execute", before)
        for raw in watched:
            raw.set_progress_handler(None, 0)
    return work


READS: dict[str, Callable[[Client, Any], Any]] = {
    "runs": lambda c, h: c.runs(20),
    "partitions of the chain": lambda c, h: c.partitions("clean"),
    "partitions of an asset never materialized": lambda c, h: c.partitions("never"),
    "lineage --partition": lambda c, h: c.lineage("clean", h.a_key),
    "lineage --partition --downstream": lambda c, h: c.lineage("raw", h.a_key, downstream=True),
    "list": lambda c, h: c.describe(),
    "home node statuses": lambda c, h: c.node_statuses(),
    "task node statuses": lambda c, h: c.node_statuses(pipeline="ingest"),
    "logs by an id prefix": lambda c, h: c.logs(h.a_run[:5]),
    "stale": lambda c, h: c.stale(["clean", "hourly_report"], h.a_key),
    "asset page": lambda c, h: c.asset("clean", limit=20),
    # One: the small history has one materialization of that key, the large one more.
    "asset page --partition": lambda c, h: c.asset("clean", h.a_key, limit=1),
    "asset page of an unpartitioned asset": lambda c, h: c.asset("hourly_report", limit=20),
}


@pytest.mark.parametrize("name", list(READS))
def test_a_read_costs_the_same_over_ten_times_the_history(
    histories: dict[int, tuple[Client, Any]], name: str
) -> None:
    small = measure(histories[SMALL][0], lambda: READS[name](*histories[SMALL]))
    large = measure(histories[LARGE][0], lambda: READS[name](*histories[LARGE]))
    assert large.statements <= small.statements + 1, (small, large)
    assert large.steps <= 1.5 * small.steps + 20, (small, large)


def test_the_matrix_poll_reads_nothing_when_nothing_changed(
    histories: dict[int, tuple[Client, Any]],
) -> None:
    client, _ = histories[LARGE]
    rows = ["raw", "clean", "hourly_report"]
    first = client.partition_changes(rows, None)
    assert first.full and len(first.states["clean"]) == 48
    again = client.partition_changes(rows, first.cursor)
    assert not again.full and again.states == {}
    idle = measure(client, lambda: client.partition_changes(rows, again.cursor))
    full = measure(client, lambda: client.partition_changes(rows, None))
    # Two small queries (the runs changed in the last OVERLAP seconds, and their steps).
    assert idle.statements == 2 and idle.steps * 20 < full.steps, (idle, full)


@pytest.fixture
def plans(histories: dict[int, tuple[Client, Any]]) -> Iterator[Callable[[str], str]]:
    client, _ = histories[LARGE]

    def plan(sql: str) -> str:
        with client.db.connect() as conn:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
        return "\n".join(str(row[-1]) for row in rows)

    yield plan


def test_the_reads_go_through_their_indexes(plans: Callable[[str], str]) -> None:
    assert "ix_step_key_partition" in plans(
        "SELECT max(id) FROM step WHERE key = 'clean' AND partition = '2025-01-01-05:00'"
    )
    assert "ix_step_key" in plans(
        "SELECT id FROM step WHERE key = 'raw' AND kind = 'asset' ORDER BY id DESC LIMIT 1"
    )
    assert "ix_mat_current" in plans(
        "SELECT * FROM materialization WHERE asset = 'clean' AND value_path IS NOT NULL"
    )
    assert "ix_run_updated" in plans("SELECT id FROM run WHERE updated_at > 5")
    assert "ix_mat_asset_partition" in plans(
        "SELECT * FROM materialization WHERE asset = 'clean' AND partition = '2025-01-01-05:00'"
        " ORDER BY created_at DESC, id DESC LIMIT 20"
    )
    assert "ix_materialization_run_id" in plans(
        "SELECT * FROM materialization WHERE run_id IN ('a', 'b') AND coalesce(asset, '') = 'x'"
    )
    assert "PRIMARY KEY" in plans(
        "SELECT * FROM run WHERE id >= 'ab' AND id < 'ac' AND id LIKE 'ab%'"
    ) or "sqlite_autoindex_run_1" in plans(
        "SELECT * FROM run WHERE id >= 'ab' AND id < 'ac' AND id LIKE 'ab%'"
    )


def test_histories_differ_only_in_size(histories: dict[int, tuple[Client, Any]]) -> None:
    small, large = histories[SMALL][1], histories[LARGE][1]
    assert (small.runs, large.runs) == (SMALL, LARGE) and small.keys == large.keys == 48
    assert large.steps > 8 * small.steps


def test_the_asset_page_finds_the_newest_materializations_through_the_steps(
    histories: dict[int, tuple[Client, Any]],
) -> None:
    client, _ = histories[LARGE]
    with client.db.connect() as conn:
        newest = [
            row[0]
            for row in conn.exec_driver_sql(
                "SELECT id FROM materialization WHERE asset = 'clean'"
                " ORDER BY created_at DESC, id DESC LIMIT 150"
            )
        ]
    page = client.asset("clean", limit=150)  # more than a batch of steps, failures among them
    assert [m.id for m in page.materializations] == newest and page.more
