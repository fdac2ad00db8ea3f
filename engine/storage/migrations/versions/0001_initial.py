"""The schema of the first release, as it stood before migrations.

Revision ID: 0001
Revises: none

Byte counts and nanosecond times are BIGINT: PostgreSQL's INTEGER is 32 bits. SQLite keeps
every integer in 64 bits whatever its declared type, so a SQLite database made by that release
(INTEGER there) is this revision as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _text() -> sa.String:
    return sa.String()


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", _text(), primary_key=True),
        sa.Column("value", _text(), nullable=False),
    )
    op.create_table(
        "run",
        sa.Column("id", _text(), primary_key=True),
        sa.Column("kind", _text(), nullable=False),
        sa.Column("target", _text(), nullable=False),
        sa.Column("selection", _text(), nullable=False),
        sa.Column("partition", _text()),
        sa.Column("params", _text(), nullable=False),
        sa.Column("trigger", _text(), nullable=False),
        sa.Column("trigger_ref", _text()),
        sa.Column("backfill_id", _text()),
        sa.Column("status", _text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("owner", _text()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", _text()),
    )
    op.create_index("ix_run_created", "run", ["created_at"])
    op.create_index("ix_run_status", "run", ["status"])
    op.create_index("ix_run_backfill_id", "run", ["backfill_id"])
    op.create_table(
        "step",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", _text(), sa.ForeignKey("run.id"), nullable=False),
        sa.Column("key", _text(), nullable=False),
        sa.Column("kind", _text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("upstream", _text(), nullable=False),
        sa.Column("status", _text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.Float()),
        sa.Column("started_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("peak_rss_bytes", sa.BigInteger()),
        sa.Column("cpu_seconds", sa.Float()),
        sa.Column("log_path", _text()),
        sa.UniqueConstraint("run_id", "key"),
    )
    op.create_index("ix_step_run_id", "step", ["run_id"])
    op.create_table(
        "stepattempt",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("step_id", sa.Integer(), sa.ForeignKey("step.id"), nullable=False),
        sa.Column("run_id", _text(), nullable=False),
        sa.Column("key", _text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", _text(), nullable=False),
        sa.Column("pid", sa.Integer()),
        sa.Column("pid_create_time", sa.Float()),
        sa.Column("host", _text()),
        sa.Column("log_path", _text(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("traceback", sa.Text()),
        sa.Column("output_path", _text()),
        sa.Column("peak_rss_bytes", sa.BigInteger()),
        sa.Column("peak_cpu_percent", sa.Float()),
        sa.Column("cpu_seconds", sa.Float()),
        sa.Column("read_bytes", sa.BigInteger()),
        sa.Column("write_bytes", sa.BigInteger()),
        sa.Column("peak_threads", sa.Integer()),
        sa.UniqueConstraint("step_id", "attempt"),
    )
    op.create_index("ix_stepattempt_step_id", "stepattempt", ["step_id"])
    op.create_index("ix_stepattempt_run_id", "stepattempt", ["run_id"])
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", _text(), nullable=False),
        sa.Column("step_key", _text()),
        sa.Column("attempt", sa.Integer()),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", _text(), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("data", sa.Text()),
    )
    op.create_index("ix_event_run_id", "event", ["run_id"])
    op.create_table(
        "materialization",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("asset", _text(), nullable=False),
        sa.Column("partition", _text()),
        sa.Column("run_id", _text(), nullable=False),
        sa.Column("attempt_id", sa.Integer()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("metadata_json", _text(), nullable=False),
        sa.Column("code_version", _text()),
        sa.Column("inputs_json", _text(), nullable=False),
        sa.Column("value_path", _text()),
        sa.Column("value_size", sa.BigInteger()),
    )
    op.create_index(
        "ix_mat_asset_partition", "materialization", ["asset", "partition", "created_at"]
    )
    op.create_index("ix_materialization_run_id", "materialization", ["run_id"])
    op.create_table(
        "checkrecord",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", _text(), nullable=False),
        sa.Column("asset", _text(), nullable=False),
        sa.Column("partition", _text()),
        sa.Column("name", _text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("blocking", sa.Boolean(), nullable=False),
        sa.Column("description", _text()),
        sa.Column("metadata_json", _text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_checkrecord_run_id", "checkrecord", ["run_id"])
    op.create_index("ix_checkrecord_asset", "checkrecord", ["asset"])
    op.create_table(
        "resourcesample",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("read_bytes", sa.BigInteger(), nullable=False),
        sa.Column("write_bytes", sa.BigInteger(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("children", sa.Integer(), nullable=False),
    )
    op.create_index("ix_resourcesample_attempt_id", "resourcesample", ["attempt_id"])
    op.create_table(
        "scheduletick",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("schedule", _text(), nullable=False),
        sa.Column("tick_time", sa.Float(), nullable=False),
        sa.Column("run_id", _text()),
        sa.Column("status", _text(), nullable=False),
        sa.Column("reason", _text()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("schedule", "tick_time"),
    )
    op.create_index("ix_scheduletick_schedule", "scheduletick", ["schedule"])
    op.create_table(
        "sensorfile",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sensor", _text(), nullable=False),
        sa.Column("path", _text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("run_id", _text()),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("sensor", "path", "size", "mtime_ns"),
    )
    op.create_index("ix_sensorfile_sensor", "sensorfile", ["sensor"])
    op.create_table(
        "toggle",
        sa.Column("kind", _text(), primary_key=True),
        sa.Column("name", _text(), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "backfill",
        sa.Column("id", _text(), primary_key=True),
        sa.Column("selection", _text(), nullable=False),
        sa.Column("partitions", _text(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("status", _text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "command",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", _text(), nullable=False),
        sa.Column("payload", _text(), nullable=False),
        sa.Column("status", _text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("taken_at", sa.Float()),
        sa.Column("done_at", sa.Float()),
        sa.Column("result", sa.Text()),
        sa.Column("error", _text()),
    )
    op.create_index("ix_command_status", "command", ["status"])
    op.create_table(
        "lease",
        sa.Column("name", _text(), primary_key=True),
        sa.Column("holder", _text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "lease", "command", "backfill", "toggle", "sensorfile", "scheduletick",
        "resourcesample", "checkrecord", "materialization", "event", "stepattempt", "step",
        "run", "meta",
    ):  # fmt: skip
        op.drop_table(table)
