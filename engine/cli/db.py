"""`dagtop db`: the database's schema and moving its history (SQLite to PostgreSQL, say).

dagtop db migrate                      # the configured database, up to this dagtop's schema
dagtop db export history.jsonl         # every run, step, attempt, value record, ...
DAGTOP_DATABASE_URL=postgresql+psycopg://... dagtop db import history.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.client import Client

_URL = click.option(
    "--url", help="A SQLAlchemy URL [default: DAGTOP_DATABASE_URL, the config, the home's]"
)
_FILE = click.argument("file", type=click.Path(path_type=Path, dir_okay=False))


@click.group()
def db() -> None:
    """The database: upgrade its schema, export and import its history."""


def _where(client: Client, url: str | None) -> str:
    from engine.storage.db import display_url

    return display_url(client.database_url(url))


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {table}" for table, n in counts.items() if n) or "no rows"


@db.command()
@_URL
@click.pass_obj
def migrate(client: Client, url: str | None) -> None:
    """Create or upgrade the database's schema to this dagtop's (stop its engines first)."""
    change = client.migrate_db(url)
    where = _where(client, url)
    if change.found is None:
        sys.stdout.write(f"{where}: created at schema revision {change.now}\n")
    elif change.found == change.now and change.had_stamp:
        sys.stdout.write(f"{where}: already at schema revision {change.now}\n")
    else:
        before = change.found if change.had_stamp else f"{change.found} (before migrations)"
        sys.stdout.write(f"{where}: schema revision {before} → {change.now}\n")


@db.command("export")
@_FILE
@_URL
@click.pass_obj
def export_(client: Client, file: Path, url: str | None) -> None:
    """Write the database's whole history to FILE (one JSON object per row)."""
    counts = client.export_db(file, url)
    sys.stdout.write(f"exported {_summary(counts)} from {_where(client, url)} to {file}\n")


@db.command("import")
@_FILE
@_URL
@click.pass_obj
def import_(client: Client, file: Path, url: str | None) -> None:
    """Load FILE (from `dagtop db export`) into the database, which must have no history yet."""
    counts = client.import_db(file, url)
    sys.stdout.write(f"imported {_summary(counts)} into {_where(client, url)}\n")
