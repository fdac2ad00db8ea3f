"""Custom sensors and dynamic partitions.

Revision ID: sensors
Revises: auto

- `sensortick`: each evaluation of a custom sensor (what it requested, skipped or failed on).
- `sensorcursor`: a custom sensor's cursor, written with the runs of the tick that moved it.
- `sensorrunkey`: the run keys a sensor requested, unique per sensor: a key starts one run.
- `dynamicpartitionkey`: the keys of each DynamicPartitions definition, in the order added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "sensors"
down_revision = "auto"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sensortick",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sensor", sa.String(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("run_ids", sa.String(), nullable=False),
        sa.Column("run_keys_skipped", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("keys_added", sa.Integer(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=True),
    )
    op.create_index("ix_sensortick_sensor", "sensortick", ["sensor", "id"])
    op.create_table(
        "sensorcursor",
        sa.Column("sensor", sa.String(), primary_key=True),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "sensorrunkey",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sensor", sa.String(), nullable=False),
        sa.Column("run_key", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("sensor", "run_key"),
    )
    op.create_table(
        "dynamicpartitionkey",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("definition", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("added_at", sa.Float(), nullable=False),
        sa.Column("removed_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("definition", "key"),
    )
    op.create_index("ix_dynamicpartitionkey_definition", "dynamicpartitionkey", ["definition"])


def downgrade() -> None:
    op.drop_index("ix_dynamicpartitionkey_definition", "dynamicpartitionkey")
    op.drop_table("dynamicpartitionkey")
    op.drop_table("sensorrunkey")
    op.drop_table("sensorcursor")
    op.drop_index("ix_sensortick_sensor", "sensortick")
    op.drop_table("sensortick")
