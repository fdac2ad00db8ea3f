"""The database itself: `dagtop db migrate`, `export`, `import`, `check`, `backup`, `restore`,
and the check every engine and the UI make before they act on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.client.project import Project
from engine.errors import StorageError

if TYPE_CHECKING:
    from engine.storage.backup import Restored, Verdict


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """What `dagtop db migrate` did: the revision found (None: a new database) and now."""

    found: str | None
    now: str
    had_stamp: bool  # False: a database from before migrations, stamped now


class DatabaseAdmin(Project):
    """Looking after a project's database (or another, by its URL)."""

    def database_url(self, url: str | None = None) -> str:
        """`url`, or the configured database: DAGTOP_DATABASE_URL, the config, the home's."""
        from engine.storage.db import database_url

        if url:
            return url
        self._ensure_home()
        return database_url(self.paths.home, self.config.database_url)

    def migrate_db(self, url: str | None = None) -> SchemaChange:
        """Create or upgrade the database's schema to this dagtop's (`dagtop db migrate`)."""
        from sqlalchemy.exc import OperationalError

        from engine.storage.db import connect, display_url, ensure_schema, first_line, revision
        from engine.storage.models import HEAD

        target = self.database_url(url)
        db = connect(target)
        try:
            stamped = revision(db)
            found, now = (HEAD, HEAD) if stamped == HEAD else ensure_schema(db, upgrade=True)
        except OperationalError as exc:
            where = display_url(target)
            raise StorageError(f"cannot open database {where}: {first_line(exc)}") from exc
        finally:
            db.dispose()
        return SchemaChange(found=found, now=now, had_stamp=stamped is not None)

    def export_db(self, path: Path, url: str | None = None) -> dict[str, int]:
        """Write the database's history to a JSON-lines file; rows per table.

        Raises:
            StorageError: the database holds no history (the wrong one, most likely: the
                message names it and the setting it came from); nothing is written.
        """
        from engine.storage import transfer
        from engine.storage.db import display_url, open_db, sqlite_path

        target = self.database_url(url)
        where = f"{display_url(target)} ({self._chosen_by(url)})"
        missing = sqlite_path(target)
        if missing is not None and not missing.exists():  # never create one just to read it
            raise StorageError(
                f"nothing to export: there is no database at {where}; name the one to read "
                "with --url",
                title="Nothing to export",
            )
        empty = (
            f"nothing to export: {where} holds no history, and {path} was not written; "
            "name the database to read with --url"
        )
        return transfer.export(open_db(target), path, if_empty=empty)

    def _chosen_by(self, url: str | None) -> str:
        """Which setting chose the database: what a user checks when it is the wrong one."""
        import os

        if url:
            return "from --url"
        if os.environ.get("DAGTOP_DATABASE_URL"):
            return "from DAGTOP_DATABASE_URL"
        if self.config.database_url:
            return "from database_url in the project's config"
        return "the home folder's"

    def import_db(self, path: Path, url: str | None = None) -> dict[str, int]:
        """Load an export into the database, which must have no history; rows per table."""
        from engine.storage import transfer
        from engine.storage.db import open_db

        return transfer.import_(open_db(self.database_url(url), upgrade=True), path)

    def verify_db(self) -> None:
        """Refuse a damaged database (SQLite's quick check), before anything acts on it.

        Raises:
            StorageError: the database is damaged; the message says how to restore it.
        """
        from engine.storage.db import verify

        verify(self.db)

    def check_db(self, url: str | None = None, quick: bool = False) -> Verdict:
        """SQLite's integrity check of the database (`dagtop db check`), which is read as it is:
        nothing is created or migrated.

        Raises:
            StorageError: there is no database file to check.
        """
        from engine.storage import backup
        from engine.storage.db import display_url, open_db, sqlite_path

        target = self.database_url(url)
        path = sqlite_path(target)
        if path is not None:
            return backup.check(path, quick=quick)
        # PostgreSQL checks its own pages: say whether it answers, at this dagtop's schema.
        db = open_db(target, upgrade=False)
        db.dispose()
        return backup.Verdict(Path(display_url(target)), True, (), 0, None)

    def backup_db(self, file: Path, url: str | None = None) -> int:
        """Copy the SQLite database to a new `file` with SQLite's online backup API, safe while
        an engine runs (`dagtop db backup`); returns the copy's size.

        Raises:
            StorageError: `file` exists, the database is PostgreSQL (use pg_dump), or damaged.
        """
        from engine.storage import backup
        from engine.storage.db import open_db

        db = open_db(self.database_url(url))
        try:
            return backup.backup(db, file)
        finally:
            db.dispose()

    def restore_db(self, file: Path, url: str | None = None) -> Restored:
        """Replace the SQLite database with a copy of the backup `file`, setting the current one
        aside (`dagtop db restore`).

        Raises:
            StorageError: the database is PostgreSQL, in use, or the backup is not usable.
        """
        from engine.storage import backup
        from engine.storage.db import sqlite_path

        target = self.database_url(url)
        path = sqlite_path(target)
        if path is None:
            raise StorageError(
                "dagtop db restore replaces a SQLite file; restore PostgreSQL with pg_restore",
                title="Not SQLite",
            )
        return backup.restore(path, file)
