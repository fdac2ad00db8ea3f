"""Moving a history between databases (SQLite to PostgreSQL, say) as a JSON-lines file.

The first line names the format and the schema revision; every other line is one row,
`{"table": NAME, "row": {column: value}}`, tables in an order that respects foreign keys.
Values are JSON's own (strings, numbers, booleans, null), so any backend reads them back.

Two tables stay behind: the lease and the command queue coordinate the processes running on
the source right now and mean nothing in another database. `meta` and Alembic's version are
the target's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from engine.errors import StorageError
from engine.storage import models
from engine.storage.db import display_url, first_line, read_scope
from engine.storage.models import HEAD

FORMAT = "dagtop-export"
SKIPPED = {"meta", "lease", "command"}
BATCH = 1000


def _tables() -> list[Table]:
    assert models  # the import registers every table on SQLModel.metadata
    return [t for t in SQLModel.metadata.sorted_tables if t.name not in SKIPPED]


def export(db: SAEngine, path: Path, if_empty: str | None = None) -> dict[str, int]:
    """Write every history table of `db` to `path` (through a temp file); rows per table.

    Raises:
        StorageError: `path` cannot be written, or `db` holds no row and `if_empty` (the
            message to refuse with) is given: then nothing is written.
    """
    counts: dict[str, int] = {}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out, read_scope(db) as session:
            out.write(json.dumps({"format": FORMAT, "revision": HEAD}) + "\n")
            conn = session.connection()
            for table in _tables():
                counts[table.name] = 0
                query = select(table).order_by(*table.primary_key.columns)
                for row in conn.execution_options(yield_per=BATCH).execute(query).mappings():
                    out.write(json.dumps({"table": table.name, "row": dict(row)}) + "\n")
                    counts[table.name] += 1
        if if_empty is not None and not any(counts.values()):
            raise StorageError(if_empty, title="Nothing to export")
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise StorageError(f"{path} line {number}: not JSON") from None
                    if not isinstance(item, dict):
                        raise StorageError(f"{path} line {number}: not a dagtop export line")
                    yield number, item
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise StorageError(f"{path} is not a dagtop export (not UTF-8 text)") from None


def import_(db: SAEngine, path: Path) -> dict[str, int]:
    """Load an export into `db`, which must hold no history; rows per table.

    All or nothing: one transaction, so a bad line leaves the target as empty as it was.

    Raises:
        StorageError: the file is not an export of this schema, or the target is not empty.
    """
    rows = _rows(path)
    first = next(rows, None)
    if first is None or first[1].get("format") != FORMAT:
        raise StorageError(f"{path} is not a dagtop export (see `dagtop db export`)")
    revision = first[1].get("revision")
    if revision != HEAD:
        raise StorageError(
            f"{path} was exported at schema revision {revision} and this dagtop is at {HEAD}: "
            "export it again with this dagtop (which upgrades the source first)"
        )
    tables = {t.name: t for t in _tables()}
    try:
        return _load(db, path, tables, rows)
    except DBAPIError as exc:  # a value the target's columns refuse, say
        raise StorageError(f"cannot import {path}: {first_line(exc)}") from exc


def _load(
    db: SAEngine, path: Path, tables: dict[str, Table], rows: Iterator[tuple[int, dict[str, Any]]]
) -> dict[str, int]:
    counts = dict.fromkeys(tables, 0)
    with db.begin() as conn:
        for table in tables.values():
            found = conn.execute(select(func.count()).select_from(table)).scalar()
            if found:
                where = display_url(db.url.render_as_string(hide_password=False))
                raise StorageError(
                    f"the target database {where} is not empty ({table.name} has {found} "
                    "rows), and nothing was imported: import into a database with no history, "
                    "before any engine starts on it (create one with `dagtop db migrate --url "
                    "URL`), or drop this one and create it again",
                    title="Target not empty",
                )
        batch: list[dict[str, Any]] = []
        current: Table | None = None
        for number, item in rows:
            into = tables.get(str(item.get("table")))
            row = item.get("row")
            if into is None or not isinstance(row, dict):
                raise StorageError(f"{path} line {number}: unknown table {item.get('table')!r}")
            unknown = set(row) - set(into.columns.keys())
            if unknown:
                raise StorageError(f"{path} line {number}: {into.name} has no {min(unknown)!r}")
            if into is not current or len(batch) >= BATCH:
                _flush(conn, current, batch)
                current, batch = into, []
            batch.append(row)
            counts[into.name] += 1
        _flush(conn, current, batch)
        _advance_sequences(conn, list(tables.values()))
    return counts


def _flush(conn: Connection, table: Table | None, batch: list[dict[str, Any]]) -> None:
    if table is not None and batch:
        conn.execute(table.insert(), batch)


def _advance_sequences(conn: Connection, tables: list[Table]) -> None:
    """Move PostgreSQL's id sequences past the imported ids, or the next insert collides."""
    if conn.dialect.name != "postgresql":
        return  # SQLite picks max(id) + 1 by itself
    quote = conn.dialect.identifier_preparer.quote
    for table in tables:
        key = list(table.primary_key.columns)
        if len(key) != 1 or key[0].type.python_type is not int:
            continue
        name, column = quote(table.name), quote(key[0].name)
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                f"COALESCE(MAX({column}), 1), MAX({column}) IS NOT NULL) FROM {name}"
            ),
            {"table": name, "column": key[0].name},
        )
