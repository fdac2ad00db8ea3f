"""Opening the database: SQLite in WAL mode with a busy timeout, or PostgreSQL.

The schema is versioned with Alembic (`engine/storage/migrations`). Opening a database that is
already at `HEAD` costs one query and never imports Alembic, which would add a tenth of a
second or more to every command; a new database is created from the models and stamped (as
Alembic's own docs advise), and only an older one goes through `engine.storage.schema`.

Storage can fail: a SQLite file whose pages are damaged, that was cut short or that is full
answers every query with a `StorageError` of one line that names the file, says what is wrong
and what to do (the newest backup and the exact command that restores it), never with a
driver traceback. A zero-byte file where a history was is refused, not taken for a new one.
Backups (`backup`, `rolling_backup`, `restore`) use SQLite's online backup API, which is safe
while an engine writes.
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, event, insert
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

from engine.errors import StorageError
from engine.redact import redact
from engine.storage import models
from engine.storage.models import HEAD, LEGACY_SCHEMA_VERSION, Meta
from engine.units import format_bytes

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


# SQLite's primary result codes (https://sqlite.org/rescode.html) that say the file itself cannot
# be used, as opposed to a query's or a lock's problem.
SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT = 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 13, 14, 26
DAMAGED = (SQLITE_CORRUPT, SQLITE_NOTADB)
FULL_BELOW = 1 << 20
"""Bytes free under which a failed write is put down to a full disk."""

_verified: weakref.WeakSet[SAEngine] = weakref.WeakSet()
"""Engines whose database passed `verify` in this process (the UI and its engine check once)."""
_wrote: weakref.WeakSet[SAEngine] = weakref.WeakSet()
"""Engines that committed a transaction in this process: `close` checkpoints their WAL."""


def database_url(home: Path, configured: str | None = None) -> str:
    """The database to use: DAGTOP_DATABASE_URL, else the project config's, else the home's."""
    return os.environ.get("DAGTOP_DATABASE_URL") or configured or f"sqlite:///{home / 'dagtop.db'}"


def display_url(url: str) -> str:
    """`url` without its password, for messages (also when it does not parse)."""
    return redact(url)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def unusable(path: Path, exc: BaseException) -> StorageError | None:
    """The one-line error for a SQLite error that says the file itself cannot be used.

    None for any other error (a constraint, a lock, a missing table): those are the caller's.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return None
    code &= 0xFF  # the primary code of an extended one (SQLITE_IOERR_WRITE is 778)
    detail = first_line(exc)
    if code in DAMAGED:
        return damaged(path, detail)
    if code in (SQLITE_FULL, SQLITE_IOERR):
        free = _free_space(path)
        # A full disk shows as SQLITE_FULL when a write comes up short, but as a plain I/O
        # error when SQLite cannot even grow its shared-memory file to read: ask the disk.
        if code == SQLITE_FULL and free is not None and free >= FULL_BELOW:
            return StorageError(
                f"cannot write the history database {path}: {detail}, though its disk has "
                f"{format_bytes(free)} free (a quota, or a file size limit?); lift the limit, "
                "then run the command again",
                title="Disk full",
            )
        if code == SQLITE_FULL or (free is not None and free < FULL_BELOW):
            shown = f"; {format_bytes(free)} free" if free is not None else ""
            return StorageError(
                f"the disk of the history database {path} is full ({detail}{shown}); free some "
                "space, then run the command again",
                title="Disk full",
            )
        return StorageError(
            f"cannot read or write the history database {path}: {detail}; check the disk "
            "(`dmesg` says more), then run `dagtop db check`",
            title="Disk error",
        )
    if code == SQLITE_CANTOPEN:
        return StorageError(
            f"cannot open the history database {path}: {detail}; check that its folder exists "
            "and that you may write there",
            title="Storage error",
        )
    if code == SQLITE_READONLY:
        return StorageError(
            f"cannot write the history database {path}: {detail}; check its permissions and "
            "those of its folder",
            title="Storage error",
        )
    return None


def damaged(path: Path, what: str) -> StorageError:
    """The error for a damaged history database: what is wrong, and how to get it back."""
    return StorageError(
        f"the history database {path} is damaged ({what}); {recovery_hint(path)}",
        title="History database damaged",
    )


def recovery_hint(path: Path) -> str:
    """What to do about a damaged database: restore its newest backup (the exact command),
    or, with none, set it aside and start a new history."""
    from engine.storage import backup  # the error path only

    newest = backup.newest(path)
    if newest is not None:
        return (
            f"restore its newest backup ({backup.describe_age(newest)}) with: "
            f"{backup.restore_command(path, newest)}"
        )
    return (
        f"it has no backup in {backup.folder(path)}: move it (with its -wal file, if any) "
        "out of the way to start a new history; every value and log is kept"
    )


def _free_space(path: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None


def _translate_errors(path: Path) -> Any:
    """A `handle_error` listener: the file's own failures become one-line StorageErrors."""

    def handle(ctx: ExceptionContext) -> None:
        problem = unusable(path, ctx.original_exception)
        if problem is not None:
            raise problem from ctx.original_exception

    return handle


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
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the home, the user's only
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    else:
        # A long-running engine outlives server restarts: test a pooled connection before use.
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        hint = (
            " (pip install -e '.[postgres]' in dagtop's clone)"
            if url.startswith("postgres")
            else ""
        )
        raise StorageError(f"cannot open database {display_url(url)}: {exc}{hint}") from exc
    except Exception as exc:  # noqa: BLE001 - a malformed URL is a user error
        raise StorageError(f"cannot open database {display_url(url)!r}: {exc}") from exc
    if path is not None:
        # Every query, and the pragmas each new connection runs, go through here: a damaged,
        # full or unreadable file is one line that says what to do, never a driver traceback.
        event.listen(engine, "handle_error", _translate_errors(path))
        event.listen(engine, "commit", lambda _conn: _wrote.add(engine))
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
    path = sqlite_path(url)
    if path is not None:
        refuse_lost_history(path)
    engine = connect(url)
    if upgrade is None:
        upgrade = engine.dialect.name == "sqlite"
    try:
        if revision(engine) != HEAD:
            ensure_schema(engine, upgrade)
    except OperationalError as exc:
        raise StorageError(f"cannot open database {display_url(url)}: {first_line(exc)}") from exc
    return engine


def refuse_lost_history(path: Path) -> None:
    """Refuse to start a new history where one was: an empty or missing database file whose
    folder shows earlier runs.

    SQLite takes a zero-byte file for a new, empty database, and so would dagtop, starting a
    new history beside the values and logs of the old one. A file dagtop created is never
    empty for longer than it takes to turn on WAL (which writes its first page at once), so
    a zero-byte file beside a write-ahead log, backups, values or logs was cut short (a crash
    mid-copy, a full disk, a truncating tool). A missing file is a deliberate fresh start,
    unless its write-ahead log is still there: SQLite would take the log's pages for the new
    database's.

    Raises:
        StorageError: the file is empty and the folder shows a history, or it is missing but
            its write-ahead log is not.
    """
    wal = path.with_name(path.name + "-wal")
    wal_size = _size(wal) or 0
    size = _size(path)
    if size or (size is None and not wal_size):
        return
    if size is None:
        raise StorageError(
            f"the history database {path} is missing, but its write-ahead log {wal} holds "
            f"{format_bytes(wal_size)} of its history; {recovery_hint(path)}",
            title="History database missing",
        )
    signs = _history_signs(path, wal_size)
    if not signs:
        return  # a new database, maybe being created by another process this instant
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # another process may be creating it right now
        time.sleep(0.05)
        if _size(path):
            return
    raise StorageError(
        f"the history database {path} is empty (0 bytes), but {' and '.join(signs)} show there "
        f"was a history: it was cut short (a crash, a full disk); {recovery_hint(path)}",
        title="History database empty",
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _history_signs(path: Path, wal_size: int) -> list[str]:
    """What in a database's folder shows that it held a history (cheap: stops at the first
    file of each kind)."""
    from engine.storage import backup

    signs = []
    if wal_size:
        signs.append(f"its write-ahead log ({format_bytes(wal_size)})")
    if backup.newest(path) is not None:
        signs.append(f"its backups in {backup.folder(path)}")
    for name in ("values", "logs"):
        folder = path.parent / name
        if _has_a_file(folder):
            signs.append(f"the {name} in {folder}")
    return signs


def _has_a_file(folder: Path) -> bool:
    return any(files for _dirpath, _dirs, files in os.walk(folder))  # stops at the first


def verify(engine: SAEngine) -> None:
    """Run SQLite's `quick_check` on the database, once per process and engine.

    An engine starts only on a database that passes: recovery and the value sweep must never
    act on what a damaged page says. The check reads every page (about 0.2 s per 100 MB) and
    takes no write lock. PostgreSQL checks its own pages; nothing to do there.

    Raises:
        StorageError: the database is damaged (the message says how to restore it).
    """
    path = sqlite_path(str(engine.url))
    if path is None or engine in _verified:
        return
    token = _immediate.set(False)
    try:
        with engine.connect() as conn:
            # One problem is enough to refuse; the whole list is `dagtop db check`'s.
            rows = [r for (r,) in conn.exec_driver_sql("PRAGMA quick_check(1)")]
    finally:
        _immediate.reset(token)
    if rows != ["ok"]:
        raise damaged(path, f"SQLite's quick check: {check_problem(rows)}")
    _verified.add(engine)


def check_problem(rows: list[str]) -> str:
    """SQLite's first integrity-check finding on one line (it can span several)."""
    words = " ".join(rows[:1]).replace("*** in database main ***", "").split()
    return " ".join(words) or "no answer"


def close(engine: SAEngine) -> None:
    """On a clean exit: checkpoint the write-ahead log into the database (TRUNCATE) if this
    process wrote, and close every pooled connection.

    SQLite removes the `-wal` and `-shm` files when the last connection to the database
    closes; a process that leaves without closing (the CLI ends with `os._exit`) leaves them
    behind, the log as large as its last few megabytes of writes. Another process still
    using the database keeps them, as it should: the checkpoint then waits for it at most a
    moment, and whatever it could not copy waits for the next one.
    """
    if sqlite_path(str(engine.url)) is not None and engine in _wrote:
        _wrote.discard(engine)
        try:
            raw = engine.raw_connection()
            try:
                conn = raw.driver_connection
                assert conn is not None
                conn.execute("PRAGMA busy_timeout=200")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                raw.close()
        except (StorageError, sqlite3.Error, OperationalError):
            pass  # housekeeping on the way out: the next writer checkpoints instead
    engine.dispose()


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
    if conn.dialect.name == "postgresql":
        models.postgresql_partial_indexes()
    SQLModel.metadata.create_all(conn)
    _alembic_version.create(conn)
    conn.execute(_alembic_version.insert().values(version_num=HEAD))
    conn.execute(insert(Meta).values(key="schema_version", value=LEGACY_SCHEMA_VERSION))


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
