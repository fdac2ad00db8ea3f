"""Every query dagtop makes, as named functions taking a Session first.

Only the facade (engine.client) and the coordinator open sessions; nothing else writes SQL.
High-volume rows (events, resource samples) are inserted in batches through SQLAlchemy Core.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import String, case, column, delete, func, insert, inspect, update, values
from sqlalchemy import select as select_columns
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from engine.errors import RunNotFound
from engine.status import BackfillStatus, CommandStatus, RunStatus, StepStatus
from engine.storage.models import (
    AutoRequest,
    Backfill,
    CheckRecord,
    Command,
    DynamicPartitionKey,
    Event,
    Lease,
    Materialization,
    ResourceSample,
    Run,
    ScheduleTick,
    SensorCursor,
    SensorFile,
    SensorRunKey,
    SensorTick,
    Step,
    StepAttempt,
    Toggle,
)

ACTIVE_RUN = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
HEX = "0123456789abcdef"  # run ids are lowercase hex

# Typing of queries: a model's field is typed as its value (`Run.id: str`), so in a query it is
# wrapped in `col()` wherever it must be typed as the column it is there. SQLModel's `select`
# types at most four columns: a query of more is SQLAlchemy's `select` (`select_columns`), run
# with the session's `execute`, whose rows are the same `Row` objects `exec` returns.


# --- runs and steps ---------------------------------------------------------------------------


def add_run(session: Session, run: Run, steps: Sequence[Step]) -> None:
    session.add(run)
    session.flush()
    for step in steps:
        session.add(step)


def find_run(session: Session, run_id: str) -> Run:
    """A run by id or by a unique id prefix (as git does for commits).

    Raises:
        RunNotFound: no run, or the prefix matches several.
    """
    run = session.get(Run, run_id)
    if run is not None:
        return run
    if run_id and all(c in HEX for c in run_id.lower()):
        prefix = run_id.lower()
        # A range of the primary key, which LIKE (the prefix test) cannot use on its own.
        query = select(Run).where(col(Run.id) >= prefix, col(Run.id).startswith(prefix))
        rest = prefix.rstrip("f")
        if rest:
            query = query.where(col(Run.id) < rest[:-1] + HEX[HEX.index(rest[-1]) + 1])
        matches = session.exec(query.limit(2)).all()
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise RunNotFound(f"run id {run_id!r} is ambiguous: give more characters")
    raise RunNotFound(f"no run {run_id!r} (see `dagtop runs`)")


def runs_by_id(session: Session, run_ids: Iterable[str]) -> dict[str, Run]:
    ids = list(run_ids)
    if not ids:
        return {}
    return {r.id: r for r in session.exec(select(Run).where(col(Run.id).in_(ids)))}


def recent_runs(session: Session, limit: int, offset: int = 0) -> Sequence[Run]:
    return session.exec(
        select(Run)
        .order_by(col(Run.created_at).desc(), col(Run.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()


def runs_changed_since(session: Session, since: float, limit: int = 500) -> Sequence[Run]:
    return session.exec(
        select(Run).where(col(Run.updated_at) > since).order_by(col(Run.updated_at)).limit(limit)
    ).all()


def steps_of(session: Session, run_ids: Iterable[str]) -> dict[str, list[Step]]:
    ids = list(run_ids)
    out: dict[str, list[Step]] = {rid: [] for rid in ids}
    if not ids:
        return out
    for step in session.exec(
        select(Step).where(col(Step.run_id).in_(ids)).order_by(col(Step.position), col(Step.id))
    ):
        out[step.run_id].append(step)
    return out


def step(session: Session, run_id: str, key: str) -> Step | None:
    return session.exec(select(Step).where(Step.run_id == run_id, Step.key == key)).first()


def attempts_of(session: Session, run_id: str) -> Sequence[StepAttempt]:
    return session.exec(
        select(StepAttempt)
        .where(StepAttempt.run_id == run_id)
        .order_by(col(StepAttempt.started_at), col(StepAttempt.id))
    ).all()


def placements_of_runs(
    session: Session, run_ids: Iterable[str]
) -> dict[tuple[str, str], list[tuple[int, str, str | None, str | None, str | None]]]:
    """Where each attempt of each step of these runs ran, oldest first: (run id, step key) ->
    [(attempt, status, host, worker, error)]."""
    ids = list(run_ids)
    out: dict[tuple[str, str], list[tuple[int, str, str | None, str | None, str | None]]] = {}
    if not ids:
        return out
    # Only the columns a placement needs: this feeds every run view (the UI's refreshes).
    rows = session.execute(
        select_columns(
            col(StepAttempt.run_id), col(StepAttempt.key), col(StepAttempt.attempt),
            col(StepAttempt.status), col(StepAttempt.host), col(StepAttempt.worker),
            col(StepAttempt.error),
        )
        .where(col(StepAttempt.run_id).in_(ids))
        .order_by(col(StepAttempt.id))
    )  # fmt: skip
    for run_id, key, attempt_no, status, host, worker, error in rows:
        out.setdefault((run_id, key), []).append((attempt_no, status, host, worker, error))
    return out


def attempt(session: Session, attempt_id: int) -> StepAttempt | None:
    return session.get(StepAttempt, attempt_id)


def active_runs(session: Session) -> Sequence[Run]:
    return session.exec(select(Run).where(col(Run.status).in_(ACTIVE_RUN))).all()


def running_attempts(session: Session, run_id: str) -> Sequence[StepAttempt]:
    return session.exec(
        select(StepAttempt).where(
            StepAttempt.run_id == run_id, StepAttempt.status == StepStatus.RUNNING.value
        )
    ).all()


def cancel_requested(session: Session, run_ids: Iterable[str]) -> list[str]:
    ids = list(run_ids)
    if not ids:
        return []
    return list(
        session.exec(
            select(Run.id).where(col(Run.id).in_(ids), col(Run.cancel_requested).is_(True))
        ).all()
    )


# --- events and samples -----------------------------------------------------------------------


def add_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(Event), list(rows))


def step_result(session: Session, run_id: str, key: str) -> Any:
    """What the newest `result` event of a step's attempts carried (a task's return value
    decided: a branch's ids, a short-circuit's verdict, a list's length), or None."""
    row = session.exec(
        select(Event)
        .where(Event.run_id == run_id, Event.step_key == key, Event.kind == "result")
        .order_by(col(Event.id).desc())
    ).first()
    return json.loads(row.data).get("value") if row is not None and row.data else None


def delete_step(session: Session, step: Step) -> None:
    """A step that never ran, replaced (a mapped task by its instances)."""
    session.delete(step)


def events_of(session: Session, run_id: str, after_id: int = 0) -> Sequence[Event]:
    return session.exec(
        select(Event)
        .where(Event.run_id == run_id, col(Event.id) > after_id)
        .order_by(col(Event.id))
    ).all()


def add_samples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(ResourceSample), list(rows))


def replace_samples(session: Session, attempt_id: int, rows: Sequence[dict[str, Any]]) -> None:
    """Swap the live samples of a finished attempt for its bounded, downsampled series."""
    session.execute(delete(ResourceSample).where(col(ResourceSample.attempt_id) == attempt_id))
    add_samples(session, rows)


def samples_of(
    session: Session, attempt_id: int, since: float | None = None
) -> Sequence[ResourceSample]:
    query = select(ResourceSample).where(ResourceSample.attempt_id == attempt_id)
    if since is not None:
        query = query.where(col(ResourceSample.t) > since)
    return session.exec(query.order_by(col(ResourceSample.t))).all()


# --- materializations and checks --------------------------------------------------------------


def latest_materialization(
    session: Session, asset: str, partition: str | None
) -> Materialization | None:
    return session.exec(
        select(Materialization)
        .where(
            Materialization.asset == asset,
            Materialization.partition == partition,
            col(Materialization.value_path).is_not(None),
        )
        .order_by(col(Materialization.created_at).desc(), col(Materialization.id).desc())
        .limit(1)
    ).first()


def latest_per_partition(session: Session, asset: str) -> dict[str | None, Any]:
    """The newest materialization that still has its value, per partition of an asset (as
    rows: `mat.id`, `mat.value_path`, ...)."""
    out: dict[str | None, Any] = {}
    for mat in session.execute(
        select_columns(*MAT_ROW)
        .where(col(Materialization.asset) == asset, col(Materialization.value_path).is_not(None))
        .order_by(col(Materialization.created_at), col(Materialization.id))
    ):
        out[mat.partition] = mat
    return out


ID_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-parameter limit
MAT_ROW = tuple(inspect(Materialization).columns)


def materializations_by_id(session: Session, ids: Iterable[int]) -> dict[int, Materialization]:
    """Materializations by id, whether or not a newer one replaced their value (lineage)."""
    wanted = sorted({i for i in ids if i})
    out: dict[int, Materialization] = {}
    for i in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[i : i + ID_CHUNK]
        for mat in session.exec(select(Materialization).where(col(Materialization.id).in_(chunk))):
            out[mat.id or 0] = mat
    return out


def add_materialization(session: Session, mat: Materialization) -> list[str]:
    """Record a materialization; returns the value files it supersedes (delete after commit)."""
    older = session.exec(
        select(Materialization).where(
            Materialization.asset == mat.asset,
            Materialization.partition == mat.partition,
            col(Materialization.value_path).is_not(None),
        )
    ).all()
    stale = [m.value_path for m in older if m.value_path and m.value_path != mat.value_path]
    for m in older:
        m.value_path = None
        session.add(m)
    session.add(mat)
    session.flush()
    return stale


def add_materializations(session: Session, mats: Sequence[Materialization]) -> list[str]:
    """`add_materialization` of each partition of one asset (a ranged step's keys), with one
    query per ID_CHUNK keys instead of one per key: a year of daily keys is 731 rows."""
    if len(mats) <= 1:
        return [path for mat in mats for path in add_materialization(session, mat)]
    asset = mats[0].asset
    keys = [mat.partition for mat in mats]
    new_paths = {mat.value_path for mat in mats}
    stale: list[str] = []
    for i in range(0, len(keys), ID_CHUNK):
        for old in session.exec(
            select(Materialization).where(
                Materialization.asset == asset,
                col(Materialization.partition).in_(keys[i : i + ID_CHUNK]),
                col(Materialization.value_path).is_not(None),
            )
        ):
            if old.value_path and old.value_path not in new_paths:
                stale.append(old.value_path)
            old.value_path = None
            session.add(old)
    session.add_all(mats)
    session.flush()
    return stale


def materializations_of_runs(
    session: Session, run_ids: Iterable[str]
) -> dict[str, list[Materialization]]:
    ids = list(run_ids)
    out: dict[str, list[Materialization]] = {rid: [] for rid in ids}
    if ids:
        for mat in session.exec(
            select(Materialization).where(col(Materialization.run_id).in_(ids))
        ):
            out[mat.run_id].append(mat)
    return out


def referenced_values(session: Session) -> set[str]:
    return {
        p
        for p in session.exec(
            select(Materialization.value_path).where(col(Materialization.value_path).is_not(None))
        )
        if p
    }


def recorded_attempts(session: Session, run_ids: Iterable[str]) -> dict[tuple[str, str, int], str]:
    """The attempts of these runs that this database records: (run, step, attempt) -> status."""
    ids = sorted(set(run_ids))
    out: dict[tuple[str, str, int], str] = {}
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(
                StepAttempt.run_id, StepAttempt.key, StepAttempt.attempt, StepAttempt.status
            ).where(col(StepAttempt.run_id).in_(ids[i : i + ID_CHUNK]))
        )
        for run_id, key, number, status in rows:
            out[(run_id, key, number)] = status
    return out


def add_check_records(session: Session, records: Sequence[CheckRecord]) -> None:
    for rec in records:
        session.add(rec)


def checks_of_runs(session: Session, run_ids: Iterable[str]) -> dict[str, list[CheckRecord]]:
    ids = list(run_ids)
    out: dict[str, list[CheckRecord]] = {rid: [] for rid in ids}
    if ids:
        for rec in session.exec(
            select(CheckRecord)
            .where(col(CheckRecord.run_id).in_(ids))
            .order_by(col(CheckRecord.id))
        ):
            out[rec.run_id].append(rec)
    return out


# --- lease -----------------------------------------------------------------------------------


def get_lease(session: Session, name: str, for_update: bool = False) -> Lease | None:
    """The lease row; `for_update` locks it until commit (PostgreSQL: engines race for it)."""
    return session.get(Lease, name, with_for_update=for_update or None)


def add_lease(session: Session, lease: Lease) -> None:
    """Insert the lease row; the flush raises IntegrityError if another engine just did."""
    session.add(lease)
    session.flush()


# --- backfills --------------------------------------------------------------------------------


def get_backfill(session: Session, backfill_id: str) -> Backfill | None:
    return session.get(Backfill, backfill_id)


def find_backfill(session: Session, backfill_id: str) -> Backfill:
    """A backfill by id or unique prefix. Raises RunNotFound."""
    found = session.get(Backfill, backfill_id)
    if found is not None:
        return found
    matches = session.exec(
        select(Backfill).where(col(Backfill.id).startswith(backfill_id)).limit(2)
    ).all()
    if len(matches) == 1:
        return matches[0]
    raise RunNotFound(f"no backfill {backfill_id!r} (see `dagtop backfills`)")


def recent_backfills(session: Session, limit: int = 20) -> Sequence[Backfill]:
    return session.exec(
        select(Backfill).order_by(col(Backfill.created_at).desc()).limit(limit)
    ).all()


def runs_of_backfill(session: Session, backfill_id: str) -> Sequence[Run]:
    """Every run of a backfill as a row: for tests and one-off tools only, never for a poll
    (a backfill of a year of hourly keys has 8,760 of them)."""
    return session.exec(
        select(Run).where(Run.backfill_id == backfill_id).order_by(col(Run.created_at))
    ).all()


# Backfills can have tens of thousands of runs: what follows reads them as counts or as plain
# tuples of the few columns needed, and what runs at every pass of the engine reads only what
# changed since the last one.


def running_backfills(session: Session) -> list[tuple[str, int, bool]]:
    """(id, max_parallel, cancel_requested) of each running backfill; never its key list."""
    rows = session.exec(
        select(Backfill.id, Backfill.max_parallel, Backfill.cancel_requested).where(
            col(Backfill.status) == BackfillStatus.RUNNING
        )
    ).all()
    return [(bid, int(cap), bool(cancel)) for bid, cap, cancel in rows]


def backfill_run_counts(
    session: Session, backfill_ids: Iterable[str], range_sep: str
) -> dict[str, list[tuple[str, str | None, int]]]:
    """Per backfill, its runs counted by status in one aggregate query, as (status, range, n):
    runs of one key are counted together (range None); each run of a range (a partition
    containing `range_sep`) is a row of its own with its partition, since it covers several
    keys. Every backfill asked for gets an entry."""
    ids = list(dict.fromkeys(backfill_ids))
    out: dict[str, list[tuple[str, str | None, int]]] = {bid: [] for bid in ids}
    ranged = case((col(Run.partition).contains(range_sep), Run.partition), else_=None)
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(Run.backfill_id, Run.status, ranged, func.count())
            .where(col(Run.backfill_id).in_(ids[i : i + ID_CHUNK]))
            .group_by(Run.backfill_id, Run.status, ranged)
        ).all()
        for bid, status, partition, n in rows:
            out[str(bid)].append((status, partition, int(n)))
    return out


def backfill_run_states(
    session: Session, backfill_id: str
) -> list[tuple[str, str, str | None, str | None, float]]:
    """(id, status, partition, owner, created_at) of each run of a backfill, oldest first:
    what an engine reads once when it starts tracking a backfill."""
    rows = session.execute(
        select_columns(
            col(Run.id), col(Run.status), col(Run.partition), col(Run.owner), col(Run.created_at)
        )
        .where(col(Run.backfill_id) == backfill_id)
        .order_by(col(Run.created_at), col(Run.id))
    ).all()
    return [tuple(row) for row in rows]


def queued_plain_run_states(session: Session) -> list[tuple[str, float, str | None]]:
    """(id, created_at, owner) of every queued run of no backfill."""
    rows = session.exec(
        select(Run.id, Run.created_at, Run.owner).where(
            col(Run.status) == RunStatus.QUEUED, col(Run.backfill_id).is_(None)
        )
    ).all()
    return list(rows)


def backfill_run_totals(session: Session, backfill_ids: Iterable[str]) -> dict[str, int]:
    """How many runs each of these backfills has (counted in the backfill_id index)."""
    ids = list(dict.fromkeys(backfill_ids))
    out: dict[str, int] = {}
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(Run.backfill_id, func.count())
            .where(col(Run.backfill_id).in_(ids[i : i + ID_CHUNK]))
            .group_by(Run.backfill_id)
        ).all()
        out.update((str(bid), int(n)) for bid, n in rows)
    return out


def newest_run_created(session: Session) -> float | None:
    """When the newest run was created: one step down the created_at index."""
    return session.exec(select(func.max(Run.created_at))).one()


def runs_created_after(
    session: Session, after: float, skip_backfills: Iterable[str] = ()
) -> list[tuple[str, float, str | None, str, str | None]]:
    """(id, created_at, backfill_id, status, owner) of the runs created after `after`, oldest
    first, except the runs of `skip_backfills` (an engine that tracks a backfill has read them).
    """
    query = select_columns(
        col(Run.id), col(Run.created_at), col(Run.backfill_id), col(Run.status), col(Run.owner)
    ).where(col(Run.created_at) > after)
    skip = list(skip_backfills)
    if skip:
        query = query.where(col(Run.backfill_id).is_(None) | col(Run.backfill_id).not_in(skip))
    rows = session.execute(query.order_by(col(Run.created_at), col(Run.id))).all()
    return [tuple(row) for row in rows]


def run_states(session: Session, run_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """(status, owner) of each of these runs that exists."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, tuple[str, str | None]] = {}
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(Run.id, Run.status, Run.owner).where(col(Run.id).in_(ids[i : i + ID_CHUNK]))
        ).all()
        out.update((rid, (status, owner)) for rid, status, owner in rows)
    return out


def recent_backfill_heads(session: Session, limit: int) -> list[Any]:
    """The newest backfills without their key lists: rows of (id, selection, max_parallel,
    status, created_at, ended_at)."""
    b = Backfill
    return list(
        session.execute(
            select_columns(
                col(b.id),
                col(b.selection),
                col(b.max_parallel),
                col(b.status),
                col(b.created_at),
                col(b.ended_at),
            )
            .order_by(col(b.created_at).desc())
            .limit(limit)
        ).all()
    )


def backfill_key_lists(session: Session, backfill_ids: Iterable[str]) -> dict[str, str]:
    """The key list (JSON text) of each of these backfills."""
    ids = list(dict.fromkeys(backfill_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(Backfill.id, Backfill.partitions).where(
                col(Backfill.id).in_(ids[i : i + ID_CHUNK])
            )
        ).all()
        out.update((bid, text) for bid, text in rows)
    return out


def step_states(session: Session, run_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """(key, status) of each step of these runs, in plan order."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, list[tuple[str, str]]] = {rid: [] for rid in ids}
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(Step.run_id, Step.key, Step.status)
            .where(col(Step.run_id).in_(ids[i : i + ID_CHUNK]))
            .order_by(col(Step.position), col(Step.id))
        ).all()
        for rid, key, status in rows:
            out[rid].append((key, status))
    return out


def set_backfill_runs_cancel(session: Session, backfill_id: str, cancel: bool, now: float) -> None:
    """Ask every unfinished run of a backfill to cancel (or no longer), in one statement."""
    session.execute(
        update(Run)
        .where(col(Run.backfill_id) == backfill_id, col(Run.status).in_(ACTIVE_RUN))
        .values(cancel_requested=cancel, updated_at=now)
    )


def detach_from_backfill(session: Session, run_ids: Iterable[str], now: float) -> None:
    """The runs stop counting as their backfill's (a resume gave their keys new runs); they
    keep `trigger_ref`, so the history still says which backfill made them."""
    ids = list(run_ids)
    for i in range(0, len(ids), ID_CHUNK):
        session.execute(
            update(Run)
            .where(col(Run.id).in_(ids[i : i + ID_CHUNK]))
            .values(backfill_id=None, updated_at=now)
        )


def insert_runs(
    session: Session, runs: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]]
) -> None:
    """Insert many planned runs and their steps (rows as dicts) in bulk, through Core."""
    for i in range(0, len(runs), ID_CHUNK):
        session.execute(insert(Run), list(runs[i : i + ID_CHUNK]))
    for i in range(0, len(steps), ID_CHUNK):
        session.execute(insert(Step), list(steps[i : i + ID_CHUNK]))


# --- commands ---------------------------------------------------------------------------------


def add_command(session: Session, kind: str, payload: dict[str, Any], now: float) -> Command:
    cmd = Command(kind=kind, payload=json.dumps(payload), created_at=now)
    session.add(cmd)
    session.flush()
    return cmd


def get_command(session: Session, command_id: int, for_update: bool = False) -> Command | None:
    return session.get(Command, command_id, with_for_update=for_update or None)


def has_pending_commands(session: Session) -> bool:
    """Whether any command waits (a read: cheaper than the write transaction that takes)."""
    found = session.exec(
        select(Command.id).where(col(Command.status) == CommandStatus.PENDING).limit(1)
    ).first()
    return found is not None


def take_commands(session: Session, now: float, limit: int = 50) -> Sequence[Command]:
    """Mark up to `limit` pending commands taken and return them; each is taken exactly once.

    On PostgreSQL the rows are locked and rows another engine has locked are skipped, so
    engines sharing the database never take the same command; SQLite renders no FOR UPDATE,
    and its write lock (BEGIN IMMEDIATE) already lets one taker in at a time.
    """
    cmds = session.exec(
        select(Command)
        .where(col(Command.status) == CommandStatus.PENDING)
        .order_by(col(Command.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for cmd in cmds:
        cmd.status = CommandStatus.TAKEN
        cmd.taken_at = now
        session.add(cmd)
    return cmds


def touch_runs(session: Session, run_ids: Iterable[str], now: float) -> None:
    ids = list(run_ids)
    if ids:
        session.execute(update(Run).where(col(Run.id).in_(ids)).values(updated_at=now))


# --- schedule and sensor toggles -------------------------------------------------------------


def toggles(session: Session, kind: str) -> dict[str, Toggle]:
    """Every persisted on/off row of schedules or sensors (`kind`); others are on."""
    return {t.name: t for t in session.exec(select(Toggle).where(Toggle.kind == kind))}


def set_toggle(session: Session, kind: str, name: str, enabled: bool, now: float) -> Toggle:
    row = session.get(Toggle, (kind, name))
    if row is None:
        row = Toggle(kind=kind, name=name)
    row.enabled = enabled
    row.updated_at = now
    session.add(row)
    return row


# --- asset automation (the `auto` sensor) -----------------------------------------------------
# Each read costs what it is asked about: the causes of the candidates of one pass, the steps of
# the runs still queued or running, never the history of requests or runs.


def consumed_causes(
    session: Session, asset: str, wanted: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of the (partition, cause) pairs of `asset` the `auto` sensor has already acted
    on (partition "" for an unpartitioned asset)."""
    pairs = sorted(set(wanted))
    out: set[tuple[str, str]] = set()
    by_cause: dict[str, list[str]] = {}
    for partition, cause in pairs:
        by_cause.setdefault(cause, []).append(partition)
    for cause, partitions in by_cause.items():
        for i in range(0, len(partitions), ID_CHUNK):
            out.update(
                (p, cause)
                for p in session.exec(
                    select(AutoRequest.partition).where(
                        AutoRequest.asset == asset,
                        AutoRequest.cause == cause,
                        col(AutoRequest.partition).in_(partitions[i : i + ID_CHUNK]),
                    )
                )
            )
    return out


def auto_first_seen(session: Session, assets: Iterable[str]) -> dict[str, float]:
    """When the `auto` sensor first evaluated each of `assets` (its "seen" row), if it did."""
    wanted = sorted(set(assets))
    out: dict[str, float] = {}
    for i in range(0, len(wanted), ID_CHUNK):
        out.update(
            session.exec(
                select(AutoRequest.asset, AutoRequest.created_at).where(
                    AutoRequest.cause == "seen",
                    AutoRequest.partition == "",
                    col(AutoRequest.asset).in_(wanted[i : i + ID_CHUNK]),
                )
            ).all()
        )
    return out


def add_auto_requests(session: Session, rows: Sequence[AutoRequest]) -> None:
    """Record what an evaluation consumed; the flush raises IntegrityError if a cause was
    already taken."""
    session.add_all(rows)
    session.flush()


def active_asset_steps(session: Session, assets: Iterable[str]) -> set[tuple[str, str | None]]:
    """(asset, partition) of every step of `assets` in a run still queued or running: found
    through the runs' status index, so the cost is the runs in flight, not the history."""
    wanted = sorted(set(assets))
    runs = list(session.exec(select(Run.id).where(col(Run.status).in_(ACTIVE_RUN))))
    out: set[tuple[str, str | None]] = set()
    if not wanted:
        return out
    keys = set(wanted)
    for i in range(0, len(runs), ID_CHUNK):
        query = select(Step.key, Step.partition, Step.status).where(
            col(Step.run_id).in_(runs[i : i + ID_CHUNK]), Step.kind == "asset"
        )
        if len(wanted) <= ID_CHUNK:  # else matched here: the bound parameters would overflow
            query = query.where(col(Step.key).in_(wanted))
        for key, partition, status in session.exec(query):
            if key in keys and not StepStatus(status).finished:
                out.add((key, partition))
    return out


def newest_materialization_id(session: Session) -> int:
    """The id of the newest materialization (0 without any): whether anything was recorded."""
    return int(session.exec(select(func.max(Materialization.id))).one() or 0)


# --- schedules --------------------------------------------------------------------------------


def add_schedule_tick(session: Session, tick: ScheduleTick) -> None:
    """Claim a tick; the flush raises IntegrityError if (schedule, tick_time) is already taken."""
    session.add(tick)
    session.flush()


def last_schedule_tick(session: Session, schedule: str) -> ScheduleTick | None:
    """The schedule's most recent tick (by tick time), whatever its status."""
    tick = ScheduleTick
    return session.exec(
        select(tick)
        .where(tick.schedule == schedule)
        .order_by(col(tick.tick_time).desc(), col(tick.id).desc())
        .limit(1)
    ).first()


def last_schedule_ticks(session: Session) -> dict[str, ScheduleTick]:
    """Per schedule, its most recent tick (by tick time)."""
    tick = ScheduleTick
    newest = (
        select(tick.schedule, func.max(tick.tick_time).label("tick_time"))
        .group_by(tick.schedule)
        .subquery()
    )
    rows = session.exec(
        select(tick).join(
            newest,
            (col(tick.schedule) == newest.c.schedule) & (col(tick.tick_time) == newest.c.tick_time),
        )
    ).all()
    return {row.schedule: row for row in rows}


def schedule_ticks(session: Session, schedule: str, limit: int = 100) -> Sequence[ScheduleTick]:
    """The schedule's ticks, newest first."""
    tick = ScheduleTick
    return session.exec(
        select(tick)
        .where(tick.schedule == schedule)
        .order_by(col(tick.tick_time).desc(), col(tick.id).desc())
        .limit(limit)
    ).all()


# --- sensors ----------------------------------------------------------------------------------
# The cursor (SensorFile: one row per file version seen) and the sensors' on/off toggles.

SENSOR_PATH_CHUNK = 500  # paths per IN (...) query: well under SQLite's bound-parameter limit


def sensor_versions(
    session: Session, sensor: str, paths: Iterable[str]
) -> set[tuple[str, int, int]]:
    """The (path, size, mtime_ns) versions of `paths` already in the sensor's cursor."""

    wanted = list(dict.fromkeys(paths))
    out: set[tuple[str, int, int]] = set()
    for i in range(0, len(wanted), SENSOR_PATH_CHUNK):
        chunk = wanted[i : i + SENSOR_PATH_CHUNK]
        rows = session.exec(
            select(SensorFile.path, SensorFile.size, SensorFile.mtime_ns).where(
                SensorFile.sensor == sensor, col(SensorFile.path).in_(chunk)
            )
        ).all()
        out.update((path, size, mtime_ns) for path, size, mtime_ns in rows)
    return out


def add_sensor_files(session: Session, rows: Sequence[Any]) -> None:
    """Insert cursor rows (SensorFile); a version already claimed fails with IntegrityError."""
    if rows:
        session.add_all(list(rows))
        session.flush()


def sensor_stats(session: Session) -> dict[str, tuple[int, Any]]:
    """Per sensor: how many file versions its cursor holds, and the newest row (a SensorFile)."""

    counts = session.exec(
        select(SensorFile.sensor, func.count(), func.max(SensorFile.id)).group_by(SensorFile.sensor)
    ).all()
    if not counts:
        return {}
    newest = {
        row.id: row
        for row in session.exec(
            select(SensorFile).where(col(SensorFile.id).in_([last for _, _, last in counts]))
        )
    }
    return {sensor: (int(n), newest[last]) for sensor, n, last in counts if last in newest}


# --- custom sensors ---------------------------------------------------------------------------
# A tick, the runs it requested, their run keys and the sensor's new cursor are one transaction.


def sensor_cursor(session: Session, sensor: str) -> str | None:
    row = session.get(SensorCursor, sensor)
    return None if row is None else row.cursor


def set_sensor_cursor(session: Session, sensor: str, cursor: str | None, now: float) -> None:
    row = session.get(SensorCursor, sensor)
    if row is None:
        row = SensorCursor(sensor=sensor, updated_at=now)
    row.cursor, row.updated_at = cursor, now
    session.add(row)


def requested_run_keys(session: Session, sensor: str, keys: Iterable[str]) -> set[str]:
    """Which of `keys` the sensor has already requested (each started its one run then)."""
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    for i in range(0, len(wanted), SENSOR_PATH_CHUNK):
        chunk = wanted[i : i + SENSOR_PATH_CHUNK]
        found.update(
            session.exec(
                select(SensorRunKey.run_key).where(
                    SensorRunKey.sensor == sensor, col(SensorRunKey.run_key).in_(chunk)
                )
            ).all()
        )
    return found


def add_run_keys(session: Session, rows: Sequence[SensorRunKey]) -> None:
    """Insert run keys; one already requested fails with IntegrityError (another engine)."""
    if rows:
        session.add_all(list(rows))
        session.flush()


def add_sensor_tick(session: Session, tick: SensorTick) -> None:
    session.add(tick)


def prune_sensor_ticks(session: Session, sensor: str, keep: int) -> None:
    """Delete the sensor's ticks but its newest `keep` (its cursor and run keys are kept
    elsewhere: a tick is history only)."""
    oldest_kept = session.exec(
        select(SensorTick.id)
        .where(SensorTick.sensor == sensor)
        .order_by(col(SensorTick.id).desc())
        .offset(keep - 1)
        .limit(1)
    ).first()
    if oldest_kept is not None:
        session.execute(
            delete(SensorTick).where(
                col(SensorTick.sensor) == sensor, col(SensorTick.id) < oldest_kept
            )
        )


def sensor_ticks(session: Session, sensor: str, limit: int = 50) -> Sequence[SensorTick]:
    """The sensor's ticks, newest first."""
    return session.exec(
        select(SensorTick)
        .where(SensorTick.sensor == sensor)
        .order_by(col(SensorTick.id).desc())
        .limit(limit)
    ).all()


def last_sensor_ticks(session: Session) -> dict[str, SensorTick]:
    """Per sensor, its newest tick."""
    newest = select(func.max(SensorTick.id)).group_by(SensorTick.sensor)
    rows = session.exec(select(SensorTick).where(col(SensorTick.id).in_(newest))).all()
    return {row.sensor: row for row in rows}


# --- dynamic partitions -----------------------------------------------------------------------


def dynamic_keys(session: Session, definitions: Iterable[str]) -> dict[str, list[str]]:
    """The current keys of each definition, in the order they were first added."""
    names = list(dict.fromkeys(definitions))
    out: dict[str, list[str]] = {name: [] for name in names}
    if not names:
        return out
    rows = session.exec(
        select(DynamicPartitionKey.definition, DynamicPartitionKey.key)
        .where(
            col(DynamicPartitionKey.definition).in_(names),
            col(DynamicPartitionKey.removed_at).is_(None),
        )
        .order_by(col(DynamicPartitionKey.id))
    ).all()
    for definition, key in rows:
        out[definition].append(key)
    return out


def dynamic_key_count(session: Session, definition: str) -> int:
    """How many keys were ever stored under `definition` (removed ones too)."""
    return int(
        session.exec(select(func.count()).where(DynamicPartitionKey.definition == definition)).one()
    )


def add_dynamic_keys(
    session: Session, definition: str, keys: Sequence[str], now: float
) -> list[str]:
    """Add keys (a key that exists is left as it is; a removed one comes back); returns the
    keys that were not there."""
    rows = {
        row.key: row
        for row in session.exec(
            select(DynamicPartitionKey).where(
                DynamicPartitionKey.definition == definition,
                col(DynamicPartitionKey.key).in_(list(keys)),
            )
        )
    }
    added: list[str] = []
    for key in dict.fromkeys(keys):
        row = rows.get(key)
        if row is None:
            session.add(DynamicPartitionKey(definition=definition, key=key, added_at=now))
        elif row.removed_at is not None:
            row.removed_at = None
            session.add(row)
        else:
            continue
        added.append(key)
    session.flush()
    return added


def remove_dynamic_keys(
    session: Session, definition: str, keys: Sequence[str], now: float
) -> list[str]:
    """Mark keys removed (their rows and every run and value of them stay); returns the keys
    that were there."""
    rows = session.exec(
        select(DynamicPartitionKey).where(
            DynamicPartitionKey.definition == definition,
            col(DynamicPartitionKey.key).in_(list(keys)),
            col(DynamicPartitionKey.removed_at).is_(None),
        )
    ).all()
    for row in rows:
        row.removed_at = now
        session.add(row)
    return [row.key for row in rows]


def latest_per_partition_of(
    session: Session, assets: Iterable[str]
) -> dict[str, dict[str | None, Any]]:
    """`latest_per_partition` of many assets in one query per ID_CHUNK of them: the home
    screen judges the staleness of every asset at once, and one query per asset was most of
    its first read. Every asset asked for gets an entry, empty if it has no current value.
    Rows, as `latest_per_partition`."""
    wanted = sorted(set(assets))
    out: dict[str, dict[str | None, Any]] = {name: {} for name in wanted}
    for i in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[i : i + ID_CHUNK]
        for mat in session.execute(
            select_columns(*MAT_ROW)
            .where(
                col(Materialization.asset).in_(chunk),
                col(Materialization.value_path).is_not(None),
            )
            .order_by(col(Materialization.created_at), col(Materialization.id))
        ):
            out[mat.asset][mat.partition] = mat  # in time order: the newest wins
    return out


# --- reads that cost what their answer needs ----------------------------------------------------
# Each reads through an index what its answer is made of (the newest step of each partition, the
# current values, what changed since a cursor), never the whole history behind it. See the
# indexes of migration 0003. What they return in bulk are rows, not ORM objects: building an
# object costs ~30x a row, and a year of hourly partitions is 8,760 of them.

STEP_ROW = (col(Step.id), col(Step.run_id), col(Step.key), col(Step.kind), col(Step.partition),
            col(Step.status), col(Step.started_at), col(Step.ended_at))  # fmt: skip


def newest_steps_per_partition(
    session: Session, asset: str, partitions: Iterable[str] | None = None
) -> dict[str | None, Any]:
    """The newest step of `asset` in each partition it ran for (the run's partition: a key, or
    a range `FIRST...LAST`), or only in `partitions`.

    Every partition is found by a loose index scan (`ix_step_key_partition`): one seek to each
    next partition and one to its newest step, so the read costs the partitions, not the runs.
    Rows (`step.status`, `step.ended_at`, ...), as the other bulk reads here.
    """
    newer = aliased(Step)
    if partitions is not None:
        wanted = sorted(set(partitions))
        out: dict[str | None, Any] = {}
        for i in range(0, len(wanted), ID_CHUNK):
            for step in session.execute(
                select_columns(*STEP_ROW).where(
                    col(Step.key) == asset,
                    col(Step.kind) == "asset",
                    col(Step.partition).in_(wanted[i : i + ID_CHUNK]),
                )
            ):
                if step.partition not in out or (out[step.partition].id or 0) < (step.id or 0):
                    out[step.partition] = step
        return out
    first = select(func.min(Step.partition).label("p")).where(Step.key == asset)
    parts = first.cte("parts", recursive=True)
    following = (
        select(func.min(newer.partition)).where(newer.key == asset, newer.partition > parts.c.p)
    ).scalar_subquery()
    parts = parts.union_all(select(following).where(parts.c.p.is_not(None)))
    newest = (
        select(newer.id)
        .where(newer.key == asset, newer.partition == parts.c.p, newer.kind == "asset")
        .order_by(col(newer.id).desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(select_columns(*STEP_ROW).join(parts, col(Step.id) == newest))
    return {step.partition: step for step in rows}


def newest_step(session: Session, asset: str) -> Any:
    """The newest step of an asset, whatever its partition (a row; None: it never ran)."""
    return session.execute(
        select_columns(*STEP_ROW)
        .where(col(Step.key) == asset, col(Step.kind) == "asset")
        .order_by(col(Step.id).desc())
        .limit(1)
    ).first()


def newest_steps_of(
    session: Session, keys: Iterable[str], pipeline: str | None = None
) -> list[Any]:
    """The newest step of each asset of `keys` (or of each task of the task pipeline
    `pipeline`): one index seek per key (`ix_step_key`), not a pass over every step. Rows."""
    wanted = sorted(set(keys))
    newer = aliased(Step)
    out: list[Any] = []
    for i in range(0, len(wanted), ID_CHUNK):
        # A CTE of the keys (SQLite names a VALUES list's columns only there).
        names = (
            values(column("key", String), name="wanted")
            .data([(k,) for k in wanted[i : i + ID_CHUNK]])
            .cte("wanted")
        )
        newest = select(newer.id).where(newer.key == names.c.key)
        if pipeline is None:
            newest = newest.where(newer.kind == "asset")
        else:
            newest = newest.join(Run, col(Run.id) == newer.run_id).where(
                Run.kind == "pipeline", Run.selection == json.dumps(pipeline)
            )
        ids = select(newest.order_by(col(newer.id).desc()).limit(1).scalar_subquery())
        out += session.execute(
            select_columns(*STEP_ROW).where(col(Step.id).in_(ids.select_from(names)))
        )
    return out


def current_materializations(
    session: Session, asset: str, partitions: Iterable[str | None]
) -> dict[str | None, Any]:
    """`latest_per_partition` of only some partitions (None: an unpartitioned asset's value)."""
    partitions = set(partitions)
    wanted = sorted({p for p in partitions if p is not None})
    out: dict[str | None, Any] = {}
    queries = [col(Materialization.partition).is_(None)] if None in partitions else []
    queries += [
        col(Materialization.partition).in_(wanted[i : i + ID_CHUNK])
        for i in range(0, len(wanted), ID_CHUNK)
    ]
    for where in queries:
        for mat in session.execute(
            select_columns(*MAT_ROW)
            .where(
                col(Materialization.asset) == asset,
                where,
                col(Materialization.value_path).is_not(None),
            )
            .order_by(col(Materialization.created_at), col(Materialization.id))
        ):
            out[mat.partition] = mat  # in time order: the newest wins
    return out


def failed_checks(
    session: Session, asset: str, run_ids: Iterable[str]
) -> dict[tuple[str, str | None], list[str]]:
    """The checks of `asset` that failed in these runs (those of its current values), by (run,
    partition): found through the runs (`ix_checkrecord_run_id`), never through every check
    the asset ever ran."""
    ids = sorted(set(run_ids))
    out: dict[tuple[str, str | None], list[str]] = {}
    for i in range(0, len(ids), ID_CHUNK):
        rows = session.exec(
            select(CheckRecord.run_id, CheckRecord.partition, CheckRecord.name)
            .where(
                col(CheckRecord.run_id).in_(ids[i : i + ID_CHUNK]),
                # coalesce(): matched on each row the run index finds, so that the planner never
                # walks the asset's whole check history (`ix_checkrecord_asset`) instead.
                func.coalesce(CheckRecord.asset, "") == asset,
                col(CheckRecord.passed).is_(False),
            )
            .order_by(col(CheckRecord.id))
        )
        for run_id, partition, name in rows:
            found = out.setdefault((run_id, partition), [])
            if name not in found:
                found.append(name)
    return out


def asset_steps_changed_since(
    session: Session, since: float
) -> list[tuple[str, float, str, str | None]]:
    """(run, its updated_at, asset, run partition) of every asset step whose run changed after
    `since` (a run's `updated_at` moves at each change of its steps).

    Two queries, the runs (`ix_run_updated`) then their steps, so that no planner can start
    from the steps and read them all.
    """
    runs = dict(
        session.exec(select(Run.id, Run.updated_at).where(col(Run.updated_at) > since)).all()
    )
    ids = sorted(runs)
    out = []
    for i in range(0, len(ids), ID_CHUNK):
        for run_id, key, partition in session.exec(
            select(Step.run_id, Step.key, Step.partition).where(
                col(Step.run_id).in_(ids[i : i + ID_CHUNK]), Step.kind == "asset"
            )
        ):
            out.append((run_id, runs[run_id], key, partition))
    return out


def last_update(session: Session) -> float:
    """The newest `updated_at` of any run (0 without runs): where a changes cursor starts."""
    return float(session.exec(select(func.max(Run.updated_at))).one() or 0.0)


# --- an asset's page ----------------------------------------------------------------------------


def asset_history(
    session: Session, asset: str, limit: int, partition: str | None = None
) -> list[Any]:
    """The newest `limit` materializations of `asset` (or of one `partition` of it), the last
    recorded first (across partitions: of the runs planned last). Rows, as the bulk reads.

    One partition's are read in order from `ix_mat_asset_partition`. Across partitions they are
    found through the asset's newest steps (`ix_step_key`: a step that succeeded recorded its
    materializations, one per key for a range), a batch at a time until `limit` are found, so
    the read costs the steps it walks back through, not the asset's whole history. No index of
    its own: one led by `asset` ties with `ix_mat_current` for the reads of current values, and
    SQLite, without statistics, then breaks the tie by the order the indexes were created in.
    """
    if partition is not None:
        return list(
            session.execute(
                select_columns(*MAT_ROW)
                .where(
                    col(Materialization.asset) == asset,
                    col(Materialization.partition) == partition,
                )
                .order_by(col(Materialization.created_at).desc(), col(Materialization.id).desc())
                .limit(limit)
            )
        )
    out: list[Any] = []
    before: int | None = None
    batch = limit + 10  # a few failed steps between materializations cost no second query
    while len(out) < limit:
        query = select(Step.id, Step.run_id).where(Step.key == asset, Step.kind == "asset")
        if before is not None:
            query = query.where(col(Step.id) < before)
        steps = session.exec(query.order_by(col(Step.id).desc()).limit(batch)).all()
        if not steps:
            break
        before = steps[-1][0]
        found = session.execute(
            select_columns(*MAT_ROW).where(
                col(Materialization.run_id).in_([run_id for _, run_id in steps]),
                # coalesce(): matched on each row the run index finds (as in failed_checks).
                func.coalesce(Materialization.asset, "") == asset,
            )
        ).all()
        out += found
        batch = min(batch * 2, ID_CHUNK)
    # Steps are numbered as runs are planned and runs may end in another order (a backfill's,
    # in parallel): what was found is ordered by when each value was recorded.
    out.sort(key=lambda mat: (mat.created_at, mat.id or 0), reverse=True)
    return out[:limit]


def asset_steps_of_runs(session: Session, asset: str, run_ids: Iterable[str]) -> dict[str, Any]:
    """The step of `asset` in each of these runs, with its run's trigger: run id -> row
    (`started_at`, `ended_at`, `trigger`, `trigger_ref`)."""
    ids = sorted(set(run_ids))
    out: dict[str, Any] = {}
    for i in range(0, len(ids), ID_CHUNK):
        for row in session.execute(
            select_columns(
                col(Step.run_id), col(Step.started_at), col(Step.ended_at),
                col(Run.trigger), col(Run.trigger_ref),
            )
            .join(Run, col(Run.id) == col(Step.run_id))
            .where(col(Step.run_id).in_(ids[i : i + ID_CHUNK]), col(Step.key) == asset)
        ):  # fmt: skip
            out[row.run_id] = row
    return out


def asset_checks_of_runs(session: Session, asset: str, run_ids: Iterable[str]) -> list[Any]:
    """The check results of `asset` in these runs, oldest first: found through the runs
    (`ix_checkrecord_run_id`), never through every check the asset ever ran. Rows."""
    ids = sorted(set(run_ids))
    out: list[Any] = []
    for i in range(0, len(ids), ID_CHUNK):
        out += session.execute(
            select_columns(*CHECK_ROW)
            .where(
                col(CheckRecord.run_id).in_(ids[i : i + ID_CHUNK]),
                func.coalesce(CheckRecord.asset, "") == asset,  # as in failed_checks
            )
            .order_by(col(CheckRecord.id))
        )
    out.sort(key=lambda row: row.id)
    return out


CHECK_ROW = tuple(inspect(CheckRecord).columns)
