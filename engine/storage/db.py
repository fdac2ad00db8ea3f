"""Opening the database: SQLite in WAL mode with a busy timeout, or any SQLAlchemy URL."""

from __future__ import annotations

import contextvars
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

from engine.errors import StorageError
from engine.storage import models
from engine.storage.models import SCHEMA_VERSION, Meta

BUSY_TIMEOUT_MS = 30_000
# Writes begin with BEGIN IMMEDIATE, reads with a plain (deferred) BEGIN; see open_db.
_immediate: contextvars.ContextVar[bool] = contextvars.ContextVar("immediate", default=True)


def database_url(home: Path) -> str:
    return os.environ.get("DAGTOP_DATABASE_URL") or f"sqlite:///{home / 'dagtop.db'}"


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the UI read while the engine writes; NORMAL is durable across a process crash
    # and loses at most the last transaction on power loss, which reconcile then repairs.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_db(url: str) -> SAEngine:
    """Create the engine for `url`, create or check the schema, and return it.

    Raises:
        StorageError: the database cannot be opened, or was written by a newer dagtop.
    """
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a malformed URL is a user error
        raise StorageError(f"cannot open database {url!r}: {exc}") from exc
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        # SQLite's default deferred transactions can fail with "database is locked" when two
        # writers upgrade a read lock at once; BEGIN IMMEDIATE takes the write lock up front
        # and waits on the busy timeout instead.
        event.listen(
            engine,
            "begin",
            lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE" if _immediate.get() else "BEGIN"),
        )

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

    try:
        _ensure_schema(engine)
    except OperationalError as exc:
        raise StorageError(f"cannot open database {url}: {exc.orig}") from exc
    return engine


def _ensure_schema(engine: SAEngine) -> None:
    assert models  # the import registers every table on SQLModel.metadata
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        row = session.get(Meta, "schema_version")
        if row is None:
            session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            session.commit()
            return
        found = int(row.value)
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"this database was written by a newer dagtop (schema {found}, this dagtop knows "
            f"{SCHEMA_VERSION}); upgrade dagtop or point --home elsewhere"
        )


@contextmanager
def session_scope(engine: SAEngine) -> Iterator[Session]:
    """One short transaction: commit on success, roll back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_scope(engine: SAEngine) -> Iterator[Session]:
    """A read-only transaction: it never takes the write lock, so it never waits on writers."""
    token = _immediate.set(False)
    try:
        # Closing (not rolling back) ends the transaction without expiring what was loaded,
        # so rows stay readable after the block.
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        _immediate.reset(token)
