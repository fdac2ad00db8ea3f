"""An asset's history, newest first, read through an index.

Revision ID: assetpage
Revises: tasks

- `ix_mat_asset_id`: the newest materializations of an asset across its partitions, in the
  order they were recorded (the asset page, `dagtop asset`), so that reading the last N costs N
  rows, not a sort of every materialization the asset ever had (`ix_mat_asset_partition`
  orders them within one partition only). Not `(asset, created_at)`: the planner would take
  that for the reads of current values too (it spares their sort) and walk every replaced
  materialization instead of `ix_mat_current`.
"""

from __future__ import annotations

from alembic import op

revision = "assetpage"
down_revision = "tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_mat_asset_id", "materialization", ["asset", "id"])


def downgrade() -> None:
    op.drop_index("ix_mat_asset_id", "materialization")
