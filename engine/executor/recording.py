"""What the coordinator writes to storage as it executes runs, and nothing else.

A run: `claim_run` takes it over (running, owned by this engine), `record_steps` settles the
steps that end without running (skipped, canceled) and `record_run_end` its final status.

An attempt, from its start to its end: `record_start` marks the step running and creates the
attempt row, preparing its launch in the same transaction; `record_pid` and `record_placement`
say where it runs; `record_end` settles it in exactly one terminal state (the attempt and step
rows, the events it sent, its downsampled resource series, on success its materialization and
check records, and a retry's time when it runs again) and writes dagtop's last line in its
log. `LiveSamples` carries the monitor's samples of running attempts to storage in batches.

Every decision is made before these are called, by the rules in `state.py` (a retry and its
backoff, what a failed check blocks, whether a run may be claimed); these functions take the
database and what they write explicitly, and change nothing in memory: the coordinator applies
the same outcome to its `RunState` once the write is done.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session

from engine.authoring import iomanager
from engine.executor import launch as launching
from engine.executor.leftovers import append_lines, end_line
from engine.executor.monitor import Sample, TreeStats
from engine.executor.recovery import owner_alive
from engine.executor.spawn import Launch
from engine.executor.state import LiveAttempt, Outcome, RunState, StepState, Updates, may_claim
from engine.loading.config import Paths
from engine.loading.manifest import Manifest
from engine.protocol.worker import EventKind
from engine.status import RunStatus, StepStatus, transition_run, transition_step
from engine.storage import repo
from engine.storage.db import session_scope
from engine.storage.models import CheckRecord, Materialization, StepAttempt

if TYPE_CHECKING:
    from engine.protocol.worker import Event, Placement

SAMPLE_FLUSH = 1.0


def claim_run(db: SAEngine, run_id: str, owner: str, now: float) -> RunState | None:
    """Mark the run as executed by `owner` (and running, if it was queued); returns its state.

    None when it has finished, or another live engine is executing it.
    """
    with session_scope(db) as s:
        run = repo.find_run(s, run_id)
        if not may_claim(RunStatus(run.status), run.owner, owner, owner_alive):
            return None
        steps = repo.steps_of(s, [run.id])[run.id]
        if run.status == RunStatus.QUEUED:
            transition_run(run, RunStatus.RUNNING)
            run.started_at = run.started_at or now
        run.owner = owner
        run.updated_at = now
        s.add(run)
        return RunState.from_rows(run, steps)


def record_steps(db: SAEngine, run_id: str, updates: Updates, now: float) -> None:
    """Settle steps that end without running (skipped, canceled), each with its reason."""
    with session_scope(db) as s:
        _settle_steps(s, run_id, updates, now)
        repo.touch_runs(s, [run_id], now)


def _settle_steps(s: Session, run_id: str, updates: Updates, now: float) -> None:
    for key, settle in updates.items():
        row = repo.step(s, run_id, key)
        assert row is not None
        transition_step(row, settle.status)
        row.error = settle.reason
        row.skip = settle.skip.value if settle.skip else None
        row.ended_at = now
        row.retry_at = None
        s.add(row)
    repo.add_events(
        s,
        [
            {
                "run_id": run_id,
                "step_key": k,
                "ts": now,
                "kind": u.status.value,
                "message": u.reason,
            }
            for k, u in updates.items()
        ],
    )


def record_expansion(
    db: SAEngine, run_id: str, key: str, source: str, now: float
) -> list[tuple[int, int]]:
    """Replace the mapped task's step `key` (which never ran) by one step per element of the
    list `source` returned, `key[0]`, `key[1]`, ..., in one transaction: each in the mapped
    step's place in the order and upstream of its downstream steps. Returns each new step's
    (id, index); none for an empty list, when the downstream steps lose that upstream."""
    from engine.loading.manifest import mapped_key
    from engine.storage.models import Step

    with session_scope(db) as s:
        row = repo.step(s, run_id, key)
        assert row is not None and row.status == StepStatus.QUEUED
        count = repo.step_result(s, run_id, source)
        count = count if isinstance(count, int) and not isinstance(count, bool) else 0
        instances = [
            Step(
                run_id=run_id, key=mapped_key(key, i), partition=row.partition, kind="python",
                position=row.position, upstream=row.upstream, max_attempts=row.max_attempts,
            )
            for i in range(count)
        ]  # fmt: skip
        keys = [st.key for st in instances]
        for other in repo.steps_of(s, [run_id])[run_id]:
            upstream = json.loads(other.upstream)
            if key in upstream:
                i = upstream.index(key)
                other.upstream = json.dumps(upstream[:i] + keys + upstream[i + 1 :])
                s.add(other)
        repo.delete_step(s, row)
        s.flush()
        for st in instances:
            s.add(st)
        s.flush()
        repo.add_events(
            s,
            [{"run_id": run_id, "step_key": key, "ts": now, "kind": "mapped",
              "message": f"{count} instance{'' if count == 1 else 's'} from {source}"}],
        )  # fmt: skip
        repo.touch_runs(s, [run_id], now)
        return [(st.id or 0, i) for i, st in enumerate(instances)]


def record_run_end(db: SAEngine, run_id: str, final: RunStatus, now: float) -> None:
    """The run's end: its final status, and no engine owns it any more."""
    with session_scope(db) as s:
        row = repo.find_run(s, run_id)
        transition_run(row, final)
        row.ended_at = now
        row.updated_at = now
        row.owner = None
        s.add(row)


@dataclass
class Started:
    """An attempt's row, written; `launch` is None when there is nothing to run (`error` says
    why)."""

    attempt_id: int
    launch: Launch | None
    error: str | None
    log_path: Path


def record_start(
    db: SAEngine,
    manifest: Manifest,
    paths: Paths,
    values_dir: str | None,
    run_id: str,
    st: StepState,
    attempt_no: int,
    now: float,
    *,
    remote: bool,
) -> Started:
    """Mark the step running and create the row of its attempt `attempt_no`, preparing what it
    will run."""
    error: str | None = None
    launch: Launch | None = None
    with session_scope(db) as s:
        run_row = repo.find_run(s, run_id)
        try:
            launch = launching.prepare(s, manifest, paths, run_row, st.key, attempt_no, values_dir)
        except launching.InputMissing as exc:
            error = str(exc)
        except KeyError:
            error = f"{st.key!r} is no longer defined in the pipelines"
        row = repo.step(s, run_id, st.key)
        assert row is not None
        transition_step(row, StepStatus.RUNNING)
        row.attempts = attempt_no
        row.started_at = row.started_at or now
        row.retry_at = None
        log_path = launching.log_path_for(paths, run_id, st.key, attempt_no)
        row.log_path = str(log_path)
        att = StepAttempt(
            step_id=st.id,
            run_id=run_id,
            key=st.key,
            attempt=attempt_no,
            log_path=str(log_path),
            started_at=now,
            # A Dask attempt's place is known once a worker starts it (record_placement).
            host=None if remote else os.uname().nodename,
            worker=None if remote else "local",
        )
        s.add(row)
        s.add(att)
        s.flush()
        attempt_id = att.id or 0
        repo.touch_runs(s, [run_id], now)
    return Started(attempt_id, launch, error, log_path)


def record_pid(db: SAEngine, attempt_id: int, pid: int, create_time: float | None) -> None:
    """The local attempt's process, so that recovery can tell it from a reused pid."""
    with session_scope(db) as s:
        att = repo.attempt(s, attempt_id)
        assert att is not None
        att.pid, att.pid_create_time = pid, create_time
        s.add(att)


def record_placement(db: SAEngine, attempt_id: int, where: Placement) -> None:
    """Where a Dask worker started the attempt: host, worker address, pid."""
    with session_scope(db) as s:
        att = repo.attempt(s, attempt_id)
        assert att is not None
        att.host, att.worker = where["host"], where["worker"]
        att.pid, att.pid_create_time = where["pid"], where["create_time"]
        s.add(att)


def record_end(
    db: SAEngine,
    run_id: str,
    st: StepState,
    attempt_id: int,
    outcome: Outcome,
    returncode: int | None,
    stats: TreeStats,
    now: float,
    live: LiveAttempt | None = None,
    log_path: Path | None = None,
    lines: Sequence[str] = (),
) -> None:
    """Settle the step's current attempt (`st.attempts`) as `outcome` says.

    `live` is None when the attempt ended before anything of it ran. Before the record, the
    attempt's log at `log_path` gets `lines` and then dagtop's last line, how the attempt ended
    and why: first, so that whoever sees the end in storage finds the line in the log.
    """
    end = outcome.end
    status, error = end.status, end.error
    if log_path is not None:
        last = end_line(
            status, error, st.attempts, st.max_attempts, outcome.retry_in,
            started=live is not None,
        )  # fmt: skip
        append_lines(log_path, [*lines, last])
    stale_values: list[str] = []
    events = live.events if live else []
    with session_scope(db) as s:
        att = repo.attempt(s, attempt_id)
        row = repo.step(s, run_id, st.key)
        assert att is not None and row is not None
        att.status = status.value
        att.ended_at, att.exit_code, att.error, att.traceback = (
            now,
            returncode,
            error,
            end.traceback,
        )
        att.peak_rss_bytes, att.peak_cpu_percent = stats.peak_rss_bytes, stats.peak_cpu_percent
        att.cpu_seconds, att.peak_threads = stats.cpu_seconds, stats.peak_threads
        att.read_bytes, att.write_bytes = stats.read_bytes, stats.write_bytes
        output = next((e for e in events if e["e"] == EventKind.OUTPUT), None)
        if output:
            att.output_path = output["path"]
        transition_step(row, outcome.step_status)
        row.exit_code, row.error = returncode, error
        row.peak_rss_bytes = max(row.peak_rss_bytes or 0, stats.peak_rss_bytes) or None
        row.cpu_seconds = (row.cpu_seconds or 0.0) + stats.cpu_seconds
        if outcome.retry_at is not None:
            row.retry_at = outcome.retry_at
        else:
            row.ended_at = now
        if status == StepStatus.SUCCESS and live is not None and live.launch.spec is not None:
            stale_values = _record_outputs(s, run_id, live, attempt_id, events, now)
        if outcome.skips:
            # What a branch or a short-circuit skips ends with it: a crash in between must not
            # leave a step it did not choose queued, to run on resume.
            _settle_steps(s, run_id, outcome.skips, now)
        s.add(att)
        s.add(row)
        repo.add_events(s, [_event_row(run_id, st.key, st.attempts, e) for e in events])
        repo.add_events(
            s,
            [
                {
                    "run_id": run_id,
                    "step_key": st.key,
                    "attempt": st.attempts,
                    "ts": now,
                    "kind": outcome.step_status.value,
                    "message": error,
                }
            ],
        )
        repo.replace_samples(s, attempt_id, [_sample_row(attempt_id, x) for x in stats.samples])
        repo.touch_runs(s, [run_id], now)
    for path in stale_values:
        iomanager.remove(path)  # a path, or a URL when values_dir is one


def _record_outputs(
    s: Session,
    run_id: str,
    live: LiveAttempt,
    attempt_id: int,
    events: list[Event],
    now: float,
) -> list[str]:
    """An asset's materialization and check records (one each per key of a partition range);
    returns the value paths it made stale."""
    spec = live.launch.spec
    if spec is None or spec["kind"] != "asset":
        return []
    # One output per partition key for a ranged asset; else one (or none: no value).
    partition = live.launch.partition
    values: list[tuple[str | None, str | None, int | None]] = [
        (e.get("partition", partition), e["path"], e["size"])
        for e in events
        if e["e"] == EventKind.OUTPUT
    ] or [(partition, None, None)]
    metadata: dict[str, Any] = {}
    for e in events:
        if e["e"] == EventKind.METADATA:
            metadata.update(e["data"])
    metadata_json = json.dumps(metadata, default=repr)
    inputs_json = json.dumps(live.launch.input_ids)
    stale = repo.add_materializations(
        s,
        [
            Materialization(
                asset=live.key,
                partition=key,
                run_id=run_id,
                attempt_id=attempt_id,
                created_at=now,
                metadata_json=metadata_json,
                code_version=live.launch.code_version,
                inputs_json=inputs_json,
                value_path=path,
                value_size=size,
            )
            for key, path, size in values
        ],
    )
    records = [
        CheckRecord(
            run_id=run_id,
            asset=live.key,
            partition=key,
            name=e["name"],
            passed=e["passed"],
            blocking=e["blocking"],
            description=e["description"],
            metadata_json=json.dumps(e["metadata"], default=repr),
            error=e["error"],
            created_at=now,
        )
        for e in events
        if e["e"] == EventKind.CHECK
        for key, _path, _size in values
    ]
    repo.add_check_records(s, records)
    return stale


class LiveSamples:
    """Samples of running attempts on their way to storage: at most one a second per attempt
    from the local monitor, written in batches at most once a second."""

    def __init__(self) -> None:
        self._rows: deque[dict[str, Any]] = deque()
        self._last: dict[int, float] = {}
        self._last_flush = 0.0

    def on_sample(self, key: str, sample: Sample) -> None:
        # Called on the monitor thread: only queue it; the loop writes in batches.
        attempt_id = int(key)
        last = self._last.get(attempt_id, 0.0)
        if sample.t - last >= 1.0:
            self._last[attempt_id] = sample.t
            self._rows.append(_sample_row(attempt_id, sample))

    def add(self, attempt_id: int, sample: Sample) -> None:
        """A sample a Dask worker already thinned out."""
        self._rows.append(_sample_row(attempt_id, sample))

    def forget(self, attempt_id: int) -> None:
        """The attempt ended: its series replaces its live samples."""
        self._last.pop(attempt_id, None)

    def flush(self, db: SAEngine, live_ids: Iterable[int], force: bool = False) -> None:
        """Write what is queued for attempts still running (now, or once a second)."""
        now = time.monotonic()
        if not self._rows or (not force and now - self._last_flush < SAMPLE_FLUSH):
            return
        self._last_flush = now
        rows = []
        while self._rows:
            rows.append(self._rows.popleft())
        live = set(live_ids)
        rows = [r for r in rows if r["attempt_id"] in live]
        if rows:
            with session_scope(db) as s:
                repo.add_samples(s, rows)


def _event_row(run_id: str, key: str, attempt: int, e: Event) -> dict[str, Any]:
    # `children` is for the coordinator (what to end), not the history.
    data = {k: v for k, v in e.items() if k not in ("e", "t", "message", "children")}
    return {
        "run_id": run_id,
        "step_key": key,
        "attempt": attempt,
        "ts": e["t"],
        "kind": e["e"].value,
        "message": e.get("message"),
        "data": json.dumps(data, default=repr),
    }


def _sample_row(attempt_id: int, x: Sample) -> dict[str, Any]:
    return {
        "attempt_id": attempt_id,
        "t": x.t,
        "cpu_percent": x.cpu_percent,
        "cpu_seconds": x.cpu_seconds,
        "rss_bytes": x.rss_bytes,
        "read_bytes": x.read_bytes,
        "write_bytes": x.write_bytes,
        "threads": x.threads,
        "children": x.children,
    }
