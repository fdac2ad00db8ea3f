"""Backups of a SQLite history: checked copies, rolling backups, restore, integrity check.

Copies go through SQLite's online backup API (`sqlite3.Connection.backup`), which reads one
consistent snapshot while engines keep writing (in WAL mode a reader never blocks a writer).
Each copy is written under a temp name, checked with `quick_check`, switched to a rollback
journal (so that a backup is one self-contained file) and only then renamed into place: a
backup that exists is whole and readable.

Rolling backups live in `backups/` beside the database, named `STEM-YYYYmmdd-HHMMSS.db`; the
rotation deletes only files of that name (never anything else in the folder), and never keeps
a copy of a damaged database in place of a good backup. A restore sets the current database
file aside (renamed, never deleted) with its write-ahead log, as `NAME.before-restore-STAMP`
and `...-wal`, so SQLite still reads the two together.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shlex
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine as SAEngine

from engine.errors import StorageError
from engine.storage.db import (
    BUSY_TIMEOUT_MS,
    DAMAGED,
    check_problem,
    damaged,
    first_line,
    sqlite_path,
)

log = logging.getLogger(__name__)

STAMP = "%Y%m%d-%H%M%S"
TMP_AGE = 3600.0
"""A temp copy older than this (seconds) is left from a backup that never finished."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an integrity check found."""

    path: Path
    ok: bool
    problems: tuple[str, ...]
    size: int
    runs: int | None
    """Runs in the history (None when the database could not be read)."""


def folder(database: Path) -> Path:
    """Where the rolling backups of `database` live."""
    return database.parent / "backups"


def _pattern(database: Path) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(database.stem)}-(\d{{8}}-\d{{6}})\.db$")


def rolling(database: Path) -> list[Path]:
    """The rolling backups of `database`, oldest first (only files of dagtop's naming)."""
    try:
        names = os.listdir(folder(database))
    except (FileNotFoundError, NotADirectoryError):
        return []
    pattern = _pattern(database)
    return [folder(database) / n for n in sorted(n for n in names if pattern.match(n))]


def newest(database: Path) -> Path | None:
    """The newest rolling backup of `database`, if it has one."""
    found = rolling(database)
    return found[-1] if found else None


def taken_at(backup: Path) -> float | None:
    """When a rolling backup was taken (from its name), as epoch seconds."""
    match = re.search(r"-(\d{8}-\d{6})\.db$", backup.name)
    if not match:
        return None
    return datetime.strptime(match.group(1), STAMP).timestamp()


def describe_age(backup: Path) -> str:
    """`taken 2025-06-01 03:00, 5 h ago`."""
    from engine.units import format_duration

    when = taken_at(backup)
    if when is None:
        return backup.name
    ago = format_duration(max(0.0, time.time() - when))
    return f"taken {datetime.fromtimestamp(when):%Y-%m-%d %H:%M}, {ago} ago"


def restore_command(database: Path, backup: Path) -> str:
    """The exact command that restores `backup` into `database`, wherever it is typed."""
    if database.name == "dagtop.db":  # a home folder's own database
        target = f"--home {shlex.quote(str(database.parent))} "
        return f"dagtop {target}db restore {shlex.quote(str(backup))}"
    url = shlex.quote(f"sqlite:///{database}")
    return f"dagtop db restore {shlex.quote(str(backup))} --url {url}"


# --- copies -------------------------------------------------------------------------------------


def _sqlite_file(engine: SAEngine, what: str) -> Path:
    path = sqlite_path(str(engine.url))
    if path is None:
        raise StorageError(
            f"{what} copies a SQLite history; back up PostgreSQL with pg_dump "
            "(pg_dump --format=custom --file=FILE DBNAME)",
            title="Not SQLite",
        )
    return path


def backup(engine: SAEngine, dest: Path) -> int:
    """Copy the database to `dest`, a new file, while engines may be writing; returns its size.

    Raises:
        StorageError: `dest` exists, the database is not SQLite, or the copy fails SQLite's
            quick check (the database itself is damaged; the copy is not kept).
    """
    source = _sqlite_file(engine, "dagtop db backup")
    if dest.exists():
        raise StorageError(f"{dest} exists: name a new file", title="File exists")
    _copy(engine, source, dest)
    return dest.stat().st_size


def _copy(engine: SAEngine, source: Path, dest: Path) -> None:
    """Copy, check and rename into place (see the module's docstring)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{os.urandom(3).hex()}")
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        target = sqlite3.connect(tmp)
        try:
            try:
                # One step (pages=-1): one read snapshot, however busy the writers are.
                conn.backup(target)
            except sqlite3.Error as exc:
                code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
                if code in DAMAGED:
                    raise damaged(source, first_line(exc)) from exc
                raise StorageError(f"cannot copy {source} to {dest}: {first_line(exc)}") from exc
            target.execute("PRAGMA journal_mode=DELETE")
            found = [r for (r,) in target.execute("PRAGMA quick_check(1)")]
        finally:
            target.close()
        if found != ["ok"]:
            raise damaged(source, f"SQLite's quick check: {check_problem(found)}")
        os.replace(tmp, dest)
        _sync_folder(dest.parent)
    except BaseException:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)  # our own temp copy, never renamed into place
        raise
    finally:
        raw.close()


def _sync_folder(path: Path) -> None:
    """Make a rename durable (the folder's entry), as far as the platform allows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rolling_backup(engine: SAEngine, keep: int, now: float | None = None) -> Path:
    """Take a rolling backup beside the database and keep only the newest `keep`.

    A damaged database is not copied: the check refuses the copy before it could replace a
    good backup, and nothing is rotated out.

    Raises:
        StorageError: the database is not SQLite, or is damaged.
    """
    source = _sqlite_file(engine, "a rolling backup")
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime(STAMP)
    dest = folder(source) / f"{source.stem}-{stamp}.db"
    _copy(engine, source, dest)
    for old in rolling(source)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    _remove_stale_temps(folder(source), source)
    return dest


def _remove_stale_temps(where: Path, source: Path) -> None:
    prefix = f".tmp-{source.stem}-"
    with contextlib.suppress(OSError):
        for entry in os.scandir(where):
            if entry.name.startswith(prefix) and time.time() - entry.stat().st_mtime > TMP_AGE:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def due_in(database: Path, every: float, now: float | None = None) -> float:
    """Seconds until the next rolling backup is due (0: now)."""
    latest = newest(database)
    when = taken_at(latest) if latest is not None else None
    if when is None:
        return 0.0
    return max(0.0, when + every - (time.time() if now is None else now))


# --- integrity check ----------------------------------------------------------------------------


def check(path: Path, quick: bool = False) -> Verdict:
    """SQLite's integrity check of a history file, read as it is: nothing is created, migrated
    or written (a missing file is an error, not a new database)."""
    from engine.storage.db import refuse_lost_history

    if not path.exists():
        raise StorageError(f"no history database at {path}", title="No database")
    size = path.stat().st_size
    try:
        refuse_lost_history(path)
    except StorageError as exc:
        return Verdict(path, False, (exc.msg,), size, None)
    pragma = "quick_check(100)" if quick else "integrity_check(100)"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        return Verdict(path, False, (first_line(exc),), size, None)
    try:
        problems = [r for (r,) in conn.execute(f"PRAGMA {pragma}")]
        if problems == ["ok"]:
            runs = None
            with contextlib.suppress(sqlite3.Error):  # a SQLite file that is not a history
                runs = conn.execute("SELECT count(*) FROM run").fetchone()[0]
            return Verdict(path, True, (), size, runs)
        return Verdict(path, False, tuple(check_problem([p]) for p in problems), size, None)
    except sqlite3.Error as exc:
        return Verdict(path, False, (first_line(exc),), size, None)
    finally:
        conn.close()


# --- restore ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restored:
    database: Path
    backup: Path
    set_aside: Path | None
    """Where the database that was there now is (None: there was none)."""
    runs: int | None


def restore(database: Path, source: Path, now: float | None = None) -> Restored:
    """Replace `database` with a copy of the backup `source`; the old file is set aside.

    Raises:
        StorageError: the backup is missing or damaged, or a process has the database open.
    """
    if not source.is_file():
        raise StorageError(f"no backup at {source}", title="No backup")
    verdict = check(source, quick=True)
    if not verdict.ok:
        raise StorageError(
            f"the backup {source} is damaged too ({verdict.problems[0]}): choose another",
            title="Backup damaged",
        )
    if verdict.runs is None:
        raise StorageError(f"{source} is not a dagtop history", title="Not a history")
    if _in_use(database):
        raise StorageError(
            f"{database} is open in another process: stop its engine (`dagtop daemon`, the UI) "
            "and any command using it, then restore",
            title="Database in use",
        )
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime(STAMP)
    aside = database.with_name(f"{database.name}.before-restore-{stamp}")
    tmp = database.with_name(f".tmp-restore-{database.name}-{os.getpid()}")
    # Copy first, through the backup API (the backup may be in WAL mode with a log of its
    # own), so that a failure leaves the current database where it was.
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True)
    try:
        target = sqlite3.connect(tmp)
        try:
            src.backup(target)
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            target.close()
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot copy {source}: {first_line(exc)}") from exc
    finally:
        src.close()
    set_aside = None
    if database.exists():
        os.replace(database, aside)
        set_aside = aside
    for suffix in ("-wal", "-shm"):
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            # Renamed with the database, so SQLite reads the set-aside file with its own log.
            os.replace(companion, aside.with_name(aside.name + suffix))
            set_aside = aside
    os.replace(tmp, database)
    for suffix in ("-wal", "-shm"):  # the temp copy's own, if SQLite left any
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
    _sync_folder(database.parent)
    return Restored(database, source, set_aside, verdict.runs)


def _in_use(database: Path) -> bool:
    """Whether another process has the database open.

    Every connection to a WAL database holds a shared lock on its `-shm` file for as long as
    it is open, and a writer locks the database file; POSIX locks are per process, and this
    process opened neither, so a lock we cannot take belongs to someone else.
    """
    for path in (database.with_name(database.name + "-shm"), database):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return False
