"""Opening the database: SQLite in WAL mode with a busy timeout, or PostgreSQL.

The schema is versioned with Alembic (`engine/storage/migrations`). Opening a database that is
already at `HEAD` costs one query and never imports Alembic, which would add a tenth of a
second or more to every command; a new database is created from the models and stamped (as
Alembic's own docs advise), and only an older one goes through `engine.storage.schema`.
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

from engine.errors import StorageError
from engine.storage import models
from engine.storage.models import HEAD, LEGACY_SCHEMA_VERSION, Meta

BUSY_TIMEOUT_MS = 30_000
# Writes begin with BEGIN IMMEDIATE, reads with a plain (deferred) BEGIN; see open_db.
_immediate: contextvars.ContextVar[bool] = contextvars.ContextVar("immediate", default=True)

# Alembic's own bookkeeping table, in the layout Alembic creates, so that a new database can be
# stamped without importing Alembic.
_alembic_version = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def database_url(home: Path, configured: str | None = None) -> str:
    """The database to use: DAGTOP_DATABASE_URL, else the project config's, else the home's."""
    return os.environ.get("DAGTOP_DATABASE_URL") or configured or f"sqlite:///{home / 'dagtop.db'}"


def display_url(url: str) -> str:
    """`url` without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse has nothing to hide we can find
        return url


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # WAL lets the UI read while the engine writes; NORMAL is durable across a process crash
    # and loses at most the last transaction on power loss, which reconcile then repairs.
    # Turning a new database to WAL needs it alone for a moment, and SQLite answers "locked"
    # at once, without its busy wait, while another connection is creating the schema: retry
    # within the busy timeout. (Once in WAL, the mode is kept in the file and this is a no-op.)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def connect(url: str) -> SAEngine:
    """The SQLAlchemy engine for `url`, with dagtop's settings; the schema is not touched.

    Raises:
        StorageError: the URL is malformed or its driver is not installed.
    """
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    else:
        # A long-running engine outlives server restarts: test a pooled connection before use.
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        hint = " (pip install 'dagtop[postgres]')" if url.startswith("postgres") else ""
        raise StorageError(f"cannot open database {display_url(url)}: {exc}{hint}") from exc
    except Exception as exc:  # noqa: BLE001 - a malformed URL is a user error
        raise StorageError(f"cannot open database {display_url(url)!r}: {exc}") from exc
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        # SQLite's default deferred transactions can fail with "database is locked" when two
        # writers upgrade a read lock at once; BEGIN IMMEDIATE takes the write lock up front
        # and waits on the busy timeout instead. PostgreSQL needs none of this: its writes are
        # ordinary transactions, and the few rows several engines race for are locked
        # explicitly (see lease.py and repo.take_commands).
        event.listen(
            engine,
            "begin",
            lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE" if _immediate.get() else "BEGIN"),
        )

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

    return engine


def open_db(url: str, upgrade: bool | None = None) -> SAEngine:
    """Create the engine for `url`, create or check the schema, and return it.

    Args:
        url: A SQLAlchemy URL (sqlite:///PATH or postgresql+psycopg://...).
        upgrade: Bring an older schema up to date. By default only on SQLite: a PostgreSQL
            database may be shared by engines of several versions, so it is upgraded on
            purpose, with `dagtop db migrate`.

    Raises:
        StorageError: the database cannot be opened, was written by a newer dagtop, or needs
            a migration that `upgrade` does not allow.
    """
    engine = connect(url)
    if upgrade is None:
        upgrade = engine.dialect.name == "sqlite"
    try:
        if revision(engine) != HEAD:
            ensure_schema(engine, upgrade)
    except OperationalError as exc:
        raise StorageError(f"cannot open database {display_url(url)}: {first_line(exc)}") from exc
    return engine


def first_line(exc: BaseException) -> str:
    """The first line of a driver's error (PostgreSQL's add hints on further lines)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def revision(engine: SAEngine) -> str | None:
    """The schema revision stamped in the database; None when it has none (new, or legacy)."""
    token = _immediate.set(False)
    try:
        with engine.connect() as conn:
            return _stamped(conn)
    finally:
        _immediate.reset(token)


def _stamped(conn: Connection) -> str | None:
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(_alembic_version.select()).scalar()


def ensure_schema(engine: SAEngine, upgrade: bool = True) -> tuple[str | None, str]:
    """Create the schema of a new database, or bring an older one to HEAD.

    One transaction holds the write lock throughout, so engines opening the same database at
    once create or migrate it once. Returns the revision found (None for a new database) and
    the one the database is at now.

    Raises:
        StorageError: the database is newer than this dagtop, or older and not `upgrade`.
    """
    with _schema_lock(engine) as conn:
        found = _stamped(conn)
        if found == HEAD:
            return HEAD, HEAD
        if found is None and not conn.dialect.has_table(conn, "run"):
            _create(conn)
            return None, HEAD
        from engine.storage import schema  # Alembic: only when a migration may be due

        return schema.upgrade(conn, found, allowed=upgrade)


@contextmanager
def _schema_lock(engine: SAEngine) -> Iterator[Connection]:
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE takes the write lock
        if conn.dialect.name == "postgresql":
            # Any constant does; dagtop takes no other advisory lock.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4407001)")
        yield conn


def _create(conn: Connection) -> None:
    assert models  # the import registers every table on SQLModel.metadata
    SQLModel.metadata.create_all(conn)
    _alembic_version.create(conn)
    conn.execute(_alembic_version.insert().values(version_num=HEAD))
    conn.execute(
        Meta.__table__.insert().values(  # type: ignore[attr-defined]
            key="schema_version", value=LEGACY_SCHEMA_VERSION
        )
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
