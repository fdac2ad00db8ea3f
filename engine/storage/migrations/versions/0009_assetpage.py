"""An asset's history, newest first, read through an index.

Revision ID: assetpage
Revises: 0003

- `ix_mat_asset_created`: the newest materializations of an asset across its partitions (the
  asset page, `dagtop asset`), so that reading the last N costs N rows, not a sort of every
  materialization the asset ever had (`ix_mat_asset_partition` orders them within one
  partition only).
"""

from __future__ import annotations

from alembic import op

revision = "assetpage"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_mat_asset_created", "materialization", ["asset", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_mat_asset_created", "materialization")
