"""The tables. Times are UTC epoch seconds (floats): portable across SQLite and PostgreSQL,
cheap to compare, and turned into ISO strings only at the edges (JSON, the UI)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Text, UniqueConstraint, text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from engine.status import BackfillStatus, CommandStatus, RunStatus, StepStatus, TickStatus

# The schema revision these tables are: the newest migration in engine/storage/migrations/versions
# (a test keeps them in step).
HEAD = "sensors"
# dagtop releases from before migrations read only `meta.schema_version` and refuse anything
# above 1: a database this dagtop has touched says 2, so they never write into it.
LEGACY_SCHEMA_VERSION = "2"


class _Clean(TypeDecorator[str]):
    """Free text (errors, tracebacks, log messages) in a form every backend stores.

    A step's error may hold anything its code raised: a lone surrogate (a str Python allows and
    UTF-8 cannot encode) is written as its escape, and so is NUL on PostgreSQL, which refuses it
    in text. Keys and names never pass through here: they are validated where they are made.
    The column type (`impl`) is the subclass's.
    """

    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or (value.isascii() and "\x00" not in value):
            return value
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value.replace("\x00", "\\x00") if dialect.name == "postgresql" else value


# `cache_ok` again on each subclass: SQLAlchemy reads it from the class itself, and without it
# warns and leaves every statement over these columns out of its compiled cache.
class CleanText(_Clean):
    impl = Text
    cache_ok = True


class CleanString(_Clean):
    impl = String
    cache_ok = True


# Byte counts and nanosecond times overflow PostgreSQL's 32-bit INTEGER; on SQLite every
# integer is 64 bits whatever its declared type, so BIGINT changes nothing there.
BIG = BigInteger


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Run(SQLModel, table=True):
    __table_args__ = (
        Index("ix_run_created", "created_at"),
        Index("ix_run_status", "status"),
        Index("ix_run_updated", "updated_at"),  # what changed since a poll
    )

    id: str = Field(primary_key=True)
    kind: str  # "assets" | "pipeline"
    target: str  # what the user asked for, for display
    selection: str = "[]"  # JSON list of asset names, or the pipeline name
    partition: str | None = None
    params: str = "{}"  # JSON object
    trigger: str = "manual"  # manual | schedule | sensor | backfill | retry | auto
    trigger_ref: str | None = None  # the schedule, sensor or backfill that made it
    reason: str | None = Field(default=None, sa_type=CleanString)  # why automation asked for it
    backfill_id: str | None = Field(default=None, index=True)
    status: str = RunStatus.QUEUED.value
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float = 0.0
    owner: str | None = None  # "pid:create_time" of the process coordinating it
    cancel_requested: bool = False
    error: str | None = Field(default=None, sa_type=CleanString)


class Step(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        Index("ix_step_key", "key", "id"),  # the newest step of an asset or task
        Index("ix_step_key_partition", "key", "partition", "id"),  # ... of each partition
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, foreign_key="run.id")
    key: str
    partition: str | None = None  # the run's, so that partition reads need not join every run
    kind: str  # "asset" | "python" | "shell"
    position: int = 0  # topological order, for display
    upstream: str = "[]"  # JSON list of step keys in this run
    status: str = StepStatus.QUEUED.value
    attempts: int = 0
    max_attempts: int = 1
    retry_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(CleanText))
    peak_rss_bytes: int | None = Field(default=None, sa_type=BIG)
    cpu_seconds: float | None = None
    log_path: str | None = None
    skip: str | None = None  # a skipped step's `SkipKind` (its `error` says why in words)


class StepAttempt(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("step_id", "attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    step_id: int = Field(index=True, foreign_key="step.id")
    run_id: str = Field(index=True)
    key: str
    attempt: int
    status: str = StepStatus.RUNNING.value
    pid: int | None = None
    pid_create_time: float | None = None
    host: str | None = None  # the machine the attempt ran on
    worker: str | None = None  # "local", or the address of the executor worker that ran it
    log_path: str
    started_at: float
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(CleanText))
    traceback: str | None = Field(default=None, sa_column=Column(CleanText))
    output_path: str | None = None
    peak_rss_bytes: int | None = Field(default=None, sa_type=BIG)
    peak_cpu_percent: float | None = None
    cpu_seconds: float | None = None
    read_bytes: int | None = Field(default=None, sa_type=BIG)
    write_bytes: int | None = Field(default=None, sa_type=BIG)
    peak_threads: int | None = None


class Event(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    step_key: str | None = None
    attempt: int | None = None
    ts: float
    kind: str
    message: str | None = Field(default=None, sa_column=Column(CleanText))
    data: str | None = Field(default=None, sa_column=Column(CleanText))


# A materialization holds its value until a newer one of the same partition replaces it: the
# current ones are one per asset partition, whatever the history holds.
_CURRENT = text("value_path IS NOT NULL")


# Only SQLite's clause here: naming `postgresql_where` makes SQLAlchemy import its PostgreSQL
# dialect to check the name, a tenth of a second of every command's start on a SQLite home.
# `postgresql_partial_indexes` adds it before the tables are created on PostgreSQL.
_MAT_CURRENT = Index("ix_mat_current", "asset", "partition", "created_at", sqlite_where=_CURRENT)


def postgresql_partial_indexes() -> None:
    """Give the partial indexes their PostgreSQL clause (imports that dialect)."""
    _MAT_CURRENT.dialect_options["postgresql"]["where"] = _CURRENT


class Materialization(SQLModel, table=True):
    __table_args__ = (
        Index("ix_mat_asset_partition", "asset", "partition", "created_at"),
        _MAT_CURRENT,
    )

    id: int | None = Field(default=None, primary_key=True)
    asset: str
    partition: str | None = None
    run_id: str = Field(index=True)
    attempt_id: int | None = None
    created_at: float
    metadata_json: str = "{}"
    code_version: str | None = None
    inputs_json: str = "[]"  # ids of the upstream materializations it consumed
    value_path: str | None = None  # None once a newer materialization replaced the value
    value_size: int | None = Field(default=None, sa_type=BIG)


class CheckRecord(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    asset: str = Field(index=True)
    partition: str | None = None
    name: str
    passed: bool
    blocking: bool = False
    description: str | None = Field(default=None, sa_type=CleanString)
    metadata_json: str = "{}"
    error: str | None = Field(default=None, sa_column=Column(CleanText))
    created_at: float


class ResourceSample(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    attempt_id: int = Field(index=True)
    t: float
    cpu_percent: float
    cpu_seconds: float
    rss_bytes: int = Field(sa_type=BIG)
    read_bytes: int = Field(default=0, sa_type=BIG)
    write_bytes: int = Field(default=0, sa_type=BIG)
    threads: int = 0
    children: int = 0


class ScheduleTick(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("schedule", "tick_time"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule: str = Field(index=True)
    tick_time: float
    run_id: str | None = None
    status: str = TickStatus.STARTED.value
    reason: str | None = Field(default=None, sa_type=CleanString)
    created_at: float


class SensorFile(SQLModel, table=True):
    """The sensor cursor: one row per file version seen, so each starts exactly one run."""

    __table_args__ = (UniqueConstraint("sensor", "path", "size", "mtime_ns"),)

    id: int | None = Field(default=None, primary_key=True)
    sensor: str = Field(index=True)
    path: str
    size: int = Field(sa_type=BIG)
    mtime_ns: int = Field(sa_type=BIG)
    run_id: str | None = None
    seen_at: float


class AutoRequest(SQLModel, table=True):
    """What the `auto` sensor consumed: one row per cause it acted on for an asset partition
    (an upstream's materialization, a cron tick, being missing), written in the transaction of
    the run it requested, so that a cause never leads to two runs.

    `partition` is "" for an unpartitioned asset: a NULL would never collide in the unique
    constraint. A row of cause "seen" keeps when the sensor first evaluated an asset (cron ticks
    before it are not its).
    """

    __table_args__ = (UniqueConstraint("asset", "partition", "cause"),)

    id: int | None = Field(default=None, primary_key=True)
    asset: str
    partition: str = ""
    cause: str
    run_id: str | None = None
    reason: str | None = Field(default=None, sa_type=CleanString)
    created_at: float


class SensorTick(SQLModel, table=True):
    """One evaluation of a custom sensor (or a pass of the built-in `auto`): when, how long,
    what it requested or why not.

    A tick that requested runs is written in the same transaction as those runs, their run
    keys and the sensor's new cursor; one that failed or timed out is written alone.
    """

    __table_args__ = (Index("ix_sensortick_sensor", "sensor", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    sensor: str
    started_at: float
    duration: float
    status: str  # a TickStatus: started (it requested runs) | skipped | failed
    run_ids: str = "[]"  # JSON list of the runs it started
    run_keys_skipped: int = 0  # requests whose run key the sensor had already requested
    reason: str | None = Field(default=None, sa_type=CleanString)  # a SkipReason's text
    error: str | None = Field(default=None, sa_column=Column(CleanText))
    cursor: str | None = Field(default=None, sa_column=Column(CleanText))  # after the tick
    keys_added: int = 0  # dynamic partition keys added by the tick
    log_tail: str | None = Field(default=None, sa_column=Column(CleanText))


class SensorCursor(SQLModel, table=True):
    """A custom sensor's cursor (`context.cursor`), as its last recorded tick left it."""

    sensor: str = Field(primary_key=True)
    cursor: str | None = Field(default=None, sa_column=Column(CleanText))
    updated_at: float


class SensorRunKey(SQLModel, table=True):
    """A run key a custom sensor requested: the same key never starts a second run."""

    __table_args__ = (UniqueConstraint("sensor", "run_key"),)

    id: int | None = Field(default=None, primary_key=True)
    sensor: str
    run_key: str
    run_id: str | None = None
    created_at: float


class DynamicPartitionKey(SQLModel, table=True):
    """A key of a DynamicPartitions definition. A removed key keeps its row (and its history)
    with `removed_at` set; adding it again clears it."""

    __table_args__ = (UniqueConstraint("definition", "key"),)

    id: int | None = Field(default=None, primary_key=True)  # the keys' order
    definition: str = Field(index=True)
    key: str
    added_at: float
    removed_at: float | None = None


class Toggle(SQLModel, table=True):
    """On/off state of a schedule or sensor, kept across restarts."""

    kind: str = Field(primary_key=True)  # "schedule" | "sensor"
    name: str = Field(primary_key=True)
    enabled: bool = True
    updated_at: float = 0.0


class Backfill(SQLModel, table=True):
    id: str = Field(primary_key=True)
    selection: str  # JSON list
    partitions: str  # JSON list of keys
    max_parallel: int = 4
    status: str = BackfillStatus.RUNNING.value
    created_at: float
    ended_at: float | None = None
    cancel_requested: bool = False


class Command(SQLModel, table=True):
    """A request from a CLI or UI process to whichever engine holds the lease."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    payload: str = "{}"
    status: str = Field(default=CommandStatus.PENDING.value, index=True)
    created_at: float
    taken_at: float | None = None
    done_at: float | None = None
    result: str | None = Field(default=None, sa_column=Column(CleanText))
    error: str | None = Field(default=None, sa_type=CleanString)


class Lease(SQLModel, table=True):
    """Which engine schedules for this home; a lease whose heartbeat stopped can be taken."""

    name: str = Field(primary_key=True)
    holder: str
    pid: int
    heartbeat_at: float
    acquired_at: float
