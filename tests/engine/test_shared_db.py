"""Several engines on one database: the lease and the command queue hold under concurrent
writers on both backends.

Each race holds one writer's transaction open at the worst moment (after it read and changed
the contested row, before it commits) while the other writer runs, so the outcome does not
depend on timing: without row locks (PostgreSQL) or the write lock (SQLite) both would win.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine as SAEngine

from engine.service import lease
from engine.storage import repo
from engine.storage.db import open_db, read_scope, session_scope
from engine.storage.models import Lease

NOW = 1_000_000.0


@pytest.fixture
def db(db_url: str) -> SAEngine:
    return open_db(db_url)


def _while_open(
    db: SAEngine, first: Callable[[Any], Any], second: Callable[[], Any]
) -> tuple[Any, Any]:
    """Run `first` in a transaction and, before it commits, `second` in another thread.

    The first commits once the second is done, or after a second if the second waits on
    it (the right outcome when the second needs a lock the first holds).
    """
    started, done = threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def run_second() -> None:
        started.wait()
        try:
            out["second"] = second()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            out["error"] = exc
        done.set()

    thread = threading.Thread(target=run_second)
    thread.start()
    with session_scope(db) as s:
        out["first"] = first(s)
        started.set()
        done.wait(1.0)
    thread.join(30)
    assert "error" not in out, out.get("error")
    assert not thread.is_alive()
    return out["first"], out["second"]


def test_two_engines_taking_a_free_lease_at_once_get_one_holder(db: SAEngine) -> None:
    first, second = _while_open(
        db, lambda s: lease.acquire(s, "engine-a", NOW), lambda: lease.try_acquire(db, "b", NOW)
    )
    assert first is None  # a took it
    assert second is not None and second.holder == "engine-a"
    with read_scope(db) as s:
        held = repo.get_lease(s, lease.NAME)
        assert held is not None and held.holder == "engine-a"


def test_two_engines_taking_over_an_expired_lease_get_one_holder(db: SAEngine) -> None:
    with session_scope(db) as s:
        repo.add_lease(s, Lease(name=lease.NAME, holder="gone", pid=1, heartbeat_at=0.0,
                                acquired_at=0.0))  # fmt: skip
    first, second = _while_open(
        db, lambda s: lease.acquire(s, "engine-a", NOW), lambda: lease.try_acquire(db, "b", NOW)
    )
    assert first is None
    assert second is not None and second.holder == "engine-a"
    assert lease.heartbeat(db, "engine-a", NOW + 1) and not lease.heartbeat(db, "b", NOW + 1)


def test_a_command_is_taken_by_one_engine_while_another_looks(db: SAEngine) -> None:
    with session_scope(db) as s:
        wanted = repo.add_command(s, "run", {}, NOW).id

    def take_second() -> list[int]:
        with session_scope(db) as s:
            return [c.id or 0 for c in repo.take_commands(s, NOW)]

    first, second = _while_open(
        db, lambda s: [c.id for c in repo.take_commands(s, NOW)], take_second
    )
    assert first == [wanted] and second == []
    with read_scope(db) as s:
        cmd = repo.get_command(s, wanted or 0)
        assert cmd is not None and cmd.status == "taken"


def test_engines_draining_one_queue_take_every_command_exactly_once(db: SAEngine) -> None:
    with session_scope(db) as s:
        ids = {repo.add_command(s, "run", {"n": i}, NOW).id or 0 for i in range(200)}
    taken: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def drain(mine: list[int]) -> None:
        barrier.wait()
        while True:
            with session_scope(db) as s:
                batch = [c.id or 0 for c in repo.take_commands(s, NOW, limit=5)]
            if not batch:
                return
            mine.extend(batch)

    threads = [threading.Thread(target=drain, args=(t,)) for t in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [i for t in taken for i in t]
    assert sorted(everything) == sorted(ids)  # none twice, none left behind
