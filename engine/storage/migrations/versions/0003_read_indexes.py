"""Reads that cost what their answer needs, not what the history holds.

Revision ID: 0003
Revises: 0002

- `step.partition`: the run's partition, on each of its steps, so that the newest step of each
  partition of an asset is found through an index (`ix_step_key_partition`) rather than by
  reading every run; filled in from the runs for the history already there.
- `ix_step_key`: the newest step of an asset or task.
- `ix_run_updated`: what changed since a moment (the UI's polls).
- `ix_mat_current`: only the materializations that still hold their value, one per asset
  partition, however many replaced ones the history keeps.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CURRENT = sa.text("value_path IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("partition", sa.String(), nullable=True))
    op.execute(
        "UPDATE step SET partition = (SELECT run.partition FROM run WHERE run.id = step.run_id)"
    )
    op.create_index("ix_step_key", "step", ["key", "id"])
    op.create_index("ix_step_key_partition", "step", ["key", "partition", "id"])
    op.create_index("ix_run_updated", "run", ["updated_at"])
    op.create_index(
        "ix_mat_current",
        "materialization",
        ["asset", "partition", "created_at"],
        sqlite_where=CURRENT,
        postgresql_where=CURRENT,
    )


def downgrade() -> None:
    op.drop_index("ix_mat_current", "materialization")
    op.drop_index("ix_run_updated", "run")
    op.drop_index("ix_step_key_partition", "step")
    op.drop_index("ix_step_key", "step")
    with op.batch_alter_table("step") as batch:
        batch.drop_column("partition")
