"""Upgrading an older schema with Alembic, on the caller's connection and transaction.

Imported only when a database is not at HEAD (see db.py). A database from before migrations
has no `alembic_version` table but a `meta` row `schema_version = 1`; which revision it is at
shows in its columns, so it is stamped with that revision and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection
from sqlmodel import col

from engine.errors import StorageError
from engine.storage.models import HEAD, LEGACY_SCHEMA_VERSION, Meta

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(conn: Connection) -> Config:
    cfg = Config()  # no alembic.ini: everything it would say is here
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn  # migrations/env.py runs on it
    return cfg


def revisions() -> list[str]:
    """Every known revision, oldest first."""
    script = ScriptDirectory(str(MIGRATIONS))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def _legacy_revision(conn: Connection) -> str:
    """The revision a database from before migrations is at.

    Raises:
        StorageError: its `meta` says a newer schema.
    """
    meta = inspect(conn)
    if meta.has_table("meta"):
        found = conn.execute(
            select(col(Meta.value)).where(col(Meta.key) == "schema_version")
        ).first()
        if found is not None and int(found.value) > 1:
            raise _newer(f"schema {found.value}")
    # Databases created since attempts recorded their worker already have the column.
    columns = {c["name"] for c in meta.get_columns("stepattempt")}
    return "0002" if "worker" in columns else "0001"


def _newer(found: str) -> StorageError:
    return StorageError(
        f"this database was written by a newer dagtop ({found}, this dagtop knows {HEAD}); "
        "upgrade dagtop or point --home elsewhere"
    )


def upgrade(conn: Connection, found: str | None, allowed: bool) -> tuple[str | None, str]:
    """Bring the database on `conn` (in a transaction) from `found` to HEAD.

    Args:
        conn: A connection inside the transaction that holds the schema lock.
        found: The stamped revision, or None for a database from before migrations.
        allowed: Upgrade; when False an older database is refused instead.

    Returns:
        The revision it was at, and HEAD.

    Raises:
        StorageError: a newer database, or an older one when not `allowed`.
    """
    legacy = found is None
    current = _legacy_revision(conn) if legacy else found
    assert current is not None
    if current not in revisions():
        raise _newer(f"schema revision {current}")
    if current != HEAD and not allowed:
        raise StorageError(
            f"this database's schema is at revision {current} and this dagtop needs {HEAD}: "
            "run `dagtop db migrate` (stop every engine using it first)"
        )
    cfg = _config(conn)
    if legacy:
        command.stamp(cfg, current)
    if current != HEAD:
        command.upgrade(cfg, HEAD)
    conn.execute(
        update(Meta).where(col(Meta.key) == "schema_version").values(value=LEGACY_SCHEMA_VERSION)
    )
    return current, HEAD
