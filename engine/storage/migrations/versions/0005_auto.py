"""Asset automation: why a run was requested, and what the `auto` sensor consumed.

Revision ID: auto
Revises: tasks

- `run.reason`: why automation requested a run ("upstream cleaned updated at 09:01").
- `autorequest`: one row per cause the `auto` sensor acted on for an asset partition, unique,
  written in the transaction of the run it requested (exactly once per cause).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "auto"
down_revision = "tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("reason", sa.String(), nullable=True))
    op.create_table(
        "autorequest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset", sa.String(), nullable=False),
        sa.Column("partition", sa.String(), nullable=False),
        sa.Column("cause", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("asset", "partition", "cause"),
    )


def downgrade() -> None:
    op.drop_table("autorequest")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("reason")
