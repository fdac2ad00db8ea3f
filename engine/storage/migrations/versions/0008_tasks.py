"""Why a step was skipped, as Airflow's trigger rules need to know it.

Revision ID: tasks
Revises: 0003

- `step.skip`: a skipped step's kind of skip (`status.SkipKind`): an upstream failed, a branch
  did not choose it, a short-circuit, or its trigger rule. Trigger rules count an upstream
  skipped because of a failure as failed, the others as skipped; a run whose only unsuccessful
  steps were skipped by a branch or a short-circuit succeeds. Skips recorded before this
  revision were all caused by a failure upstream (or a blocking check), and are marked so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "tasks"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("skip", sa.String(), nullable=True))
    op.execute("UPDATE step SET skip = 'upstream_failed' WHERE status = 'skipped'")


def downgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.drop_column("skip")
