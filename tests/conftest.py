"""Fixtures every test folder may use: a real PostgreSQL server, and databases on either
backend.

The server starts once per test process (so once per xdist worker) when a test first needs it,
and every test gets a database of its own. Without PostgreSQL installed, its tests are skipped
locally; in CI (the CI variable set) they fail, so a missing server cannot pass unnoticed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import BACKENDS, Server, database_for, start_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    try:
        server = start_server()
    except Exception as exc:  # noqa: BLE001 - whatever stopped it, say so
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a PostgreSQL server and none could start: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: Server) -> Iterator[str]:
    """A new, empty PostgreSQL database of this test's own."""
    url = postgres_server.create_database()
    yield url
    with contextlib.suppress(Exception):
        postgres_server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend in turn: a SQLite file, or a PostgreSQL database."""
    return database_for(request, tmp_path)
