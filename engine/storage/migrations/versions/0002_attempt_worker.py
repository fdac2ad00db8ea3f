"""Attempts record which executor worker ran them.

Revision ID: 0002
Revises: 0001

Nullable, so attempts recorded before it simply have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stepattempt") as batch:
        batch.add_column(sa.Column("worker", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stepattempt") as batch:
        batch.drop_column("worker")
