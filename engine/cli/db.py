"""`dagtop db`: the database's schema, its health and backups, and moving its history.

dagtop db migrate                      # the configured database, up to this dagtop's schema
dagtop db check                        # SQLite's integrity check: a verdict, exit 1 if damaged
dagtop db backup copy.db               # a checked copy, safe while an engine runs
dagtop db restore .dagtop/backups/dagtop-20250601-030000.db
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
    """The database: its schema, integrity and backups; export and import its history."""


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


@db.command()
@click.option("--quick", is_flag=True, help="SQLite's quick check: pages only, not indexes")
@_URL
@click.pass_obj
def check(client: Client, quick: bool, url: str | None) -> None:
    """Check the database's integrity (read only); exit 1 if it is damaged."""
    from engine.units import format_bytes

    verdict = client.check_db(url, quick=quick)
    if verdict.ok:
        what = "quick check" if quick else "integrity check"
        facts = [format_bytes(verdict.size)] if verdict.size else []
        if verdict.runs is not None:
            facts.append(f"{verdict.runs} run{'s' if verdict.runs != 1 else ''}")
        shown = f" ({', '.join(facts)})" if facts else ""
        sys.stdout.write(f"ok: {verdict.path} passes SQLite's {what}{shown}\n")
        return
    from engine.storage.db import recovery_hint

    problem = verdict.problems[0]
    more = f" (and {len(verdict.problems) - 1} more)" if len(verdict.problems) > 1 else ""
    if problem.startswith("the history database"):  # the empty-file verdict says it all
        sys.stdout.write(f"damaged: {problem}\n")
    else:
        sys.stdout.write(
            f"damaged: {verdict.path}: {problem}{more}; {recovery_hint(verdict.path)}\n"
        )
    raise SystemExit(1)


@db.command()
@_FILE
@_URL
@click.pass_obj
def backup(client: Client, file: Path, url: str | None) -> None:
    """Copy the SQLite database to FILE (a new file), safe while an engine runs."""
    from engine.units import format_bytes

    size = client.backup_db(file, url)
    sys.stdout.write(f"backed up {_where(client, url)} to {file} ({format_bytes(size)}, checked)\n")


@db.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_URL
@click.pass_obj
def restore(client: Client, file: Path, url: str | None) -> None:
    """Replace the SQLite database with the backup FILE (stop its engines first).

    The database that was there is renamed, never deleted. Runs recorded after the backup
    was taken are not in the restored history; their values and logs stay where they are.
    """
    done = client.restore_db(file.resolve(), url)
    kept = f"; the file that was there is now {done.set_aside}" if done.set_aside else ""
    sys.stdout.write(f"restored {done.database} from {done.backup} ({done.runs} runs){kept}\n")


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
