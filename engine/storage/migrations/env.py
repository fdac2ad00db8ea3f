"""Alembic's entry point: run the migrations on the connection dagtop hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from engine.storage import models

assert models  # registers every table on SQLModel.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite alters most columns only by copying the table: let Alembic do that for us.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():  # inside the caller's transaction: it commits, or not
    context.run_migrations()
