"""Crash recovery: repair what a dead engine left behind, before anything else runs.

A run whose coordinating process is gone may still say "running". Its attempts that were
running become failed with "engine stopped while running" (their orphaned process trees are
killed: we cannot hear their events any more), their steps are queued for retry if attempts
remain, and the run goes back to "queued" so an engine resumes it. Value files of ended
attempts that no materialization references (a crash between the rename and the record) are
deleted; nothing else under the values folder is (see `sweep_values`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import Engine as SAEngine

from engine.authoring import iomanager
from engine.authoring.iomanager import is_url
from engine.errors import first_line
from engine.executor.launch import SHARED
from engine.executor.leftovers import append_lines, end_line
from engine.executor.monitor import kill_tree
from engine.executor.state import may_retry
from engine.loading.config import Paths
from engine.processes import same_process_alive
from engine.status import RunStatus, StepStatus, transition_run, transition_step
from engine.storage import repo
from engine.storage.db import read_scope, session_scope

log = logging.getLogger(__name__)

ENGINE_STOPPED = "engine stopped while running"
MAX_INTERRUPTIONS = 3


def process_alive(pid: int | None, create_time: float | None) -> bool:
    """True when `pid` is the very process that was recorded (pids are reused); unsure counts
    as gone, so a run whose owner cannot be seen is recovered."""
    return same_process_alive(pid, create_time, if_unsure=False)


def owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    try:
        pid_text, ct_text = owner.split(":", 1)
        return process_alive(int(pid_text), float(ct_text))
    except ValueError:
        return False


def reconcile(db: SAEngine, now: float | None = None) -> list[str]:
    """Repair every active run whose owner is dead; returns the ids of runs left to resume."""
    now = time.time() if now is None else now
    resumable: list[str] = []
    with session_scope(db) as s:
        runs = [
            r
            for r in repo.active_runs(s)
            # A queued run no engine has taken yet has nothing to repair: it just waits.
            if not (r.status == RunStatus.QUEUED and r.owner is None) and not owner_alive(r.owner)
        ]
        for run in runs:
            steps = {st.key: st for st in repo.steps_of(s, [run.id])[run.id]}
            interrupted: dict[str, int] = {}
            for att in repo.attempts_of(s, run.id):
                if att.error == ENGINE_STOPPED:
                    interrupted[att.key] = interrupted.get(att.key, 0) + 1
            for att in repo.running_attempts(s, run.id):
                # A step on a Dask worker has a pid on another machine; its task stops it
                # when this engine's Dask client goes away.
                here = att.worker in (None, "local")
                if here and process_alive(att.pid, att.pid_create_time) and att.pid is not None:
                    log.warning(
                        "[run %s] killing orphaned step %s (pid %d)", run.id, att.key, att.pid
                    )
                    kill_tree(att.pid)
                elif here and att.pid and not psutil.pid_exists(att.pid):
                    # The step's process is gone, maybe not what it started: its session and
                    # group keep its pid (no process reuses it while they hold it), so
                    # whatever is in them is the step's.
                    kill_tree(att.pid)
                att.status = StepStatus.FAILED.value
                att.error = ENGINE_STOPPED
                att.ended_at = now
                s.add(att)
                step = steps.get(att.key)
                if step is None or step.status != StepStatus.RUNNING:
                    continue
                step.error = ENGINE_STOPPED
                # The step did not fail: its engine died. Such an attempt does not use up the
                # retry budget, up to a few times (a step that keeps killing its engine must
                # still end).
                interrupted[att.key] = interrupted.get(att.key, 0) + 1
                if interrupted[att.key] <= MAX_INTERRUPTIONS:
                    step.max_attempts = max(step.max_attempts, step.attempts + 1)
                retry = may_retry(step.attempts, step.max_attempts, run.cancel_requested)
                if retry:
                    transition_step(step, StepStatus.RETRYING)
                    step.retry_at = now
                else:
                    transition_step(step, StepStatus.FAILED)
                    step.ended_at = now
                s.add(step)
                append_lines(
                    att.log_path,
                    [
                        end_line(
                            StepStatus.FAILED, ENGINE_STOPPED, att.attempt, step.max_attempts,
                            0.0 if retry else None,
                        )
                    ],
                )  # fmt: skip
            for step in steps.values():
                # A step marked running with no attempt row cannot happen (one transaction
                # writes both), but if storage says so, it is not running.
                if step.status == StepStatus.RUNNING and step.attempts == 0:
                    transition_step(step, StepStatus.FAILED)
                    step.error = ENGINE_STOPPED
                    s.add(step)
            if run.status == RunStatus.RUNNING:
                transition_run(run, RunStatus.QUEUED)
            run.owner = None
            run.updated_at = now
            s.add(run)
            repo.add_events(
                s, [{"run_id": run.id, "ts": now, "kind": "recovered", "message": ENGINE_STOPPED}]
            )
            resumable.append(run.id)
    if resumable:
        log.info("recovered %d interrupted run(s): %s", len(resumable), ", ".join(resumable))
    return resumable


TMP_AGE = 3600.0
"""A `.tmp-` value file younger than this (seconds) may still be being written: it stays."""

# dagtop's own value files: VALUES/ASSET/PARTITION/RUN.ATTEMPT.EXT (see launch.prepare), and
# the temp files iomanager.store writes them through: .tmp-RUN.ATTEMPT.EXT-RANDOM.part.
_VALUE = re.compile(r"^(?P<run>[^./]+)\.(?P<attempt>\d+)\.[^/]+$")
_TEMP = re.compile(r"^\.tmp-(?P<run>[^./]+)\.(?P<attempt>\d+)\.[^/]+\.part$")
_DEPTH = 3  # ASSET/PARTITION/FILE
# Folders of the values store that hold no asset values, left out where the store is listed:
# task values (referenced by attempts, kept with their runs) and steps' shared artifacts.
_RESERVED = ("@tasks", SHARED)


def sweep_values(db: SAEngine, paths: Paths, values_dir: str | None = None) -> int:
    """Delete the value files a crash left without their record; returns how many.

    The values folder may hold what is not dagtop's (it is often a link to a folder on a
    bigger disk), and values this database does not know (a restored backup, another
    project's history). So a file is deleted only when all of these hold:

    - it is laid out as dagtop writes values: `ASSET/PARTITION/RUN.ATTEMPT.EXT` under the
      values folder, or the temp file a write of one goes through (`.tmp-RUN.ATTEMPT.EXT-*`,
      at least an hour old);
    - this database records attempt ATTEMPT of step ASSET in run RUN, and it has ended (its run
      is not queued or running, in this or another process);
    - no materialization records the file.

    Everything else stays, and is reported in one line of the log. Task values (under
    `@tasks`) are referenced by attempts and stay. `values_dir` is the project's own values
    folder or fsspec URL when it has one; a URL is swept through fsspec. The sweep is
    housekeeping: when it fails (an unreachable URL, a query) it says so in one warning and
    removes nothing more, and never raises.

    Another process (a CLI running in-process) may be writing and recording values right now,
    so the order matters: list the files first, then read which runs are still going and which
    values are recorded. A file listed before that read belongs to a run that is either still
    going (left alone) or finished, in which case its record, if it has one, is already there.
    """
    where = values_dir or str(paths.values)
    try:
        return _sweep(db, where, url=values_dir is not None and is_url(values_dir))
    except Exception as exc:  # noqa: BLE001 - see above: one line, not a traceback
        log.warning("value sweep of %s failed: %s: %s", where, type(exc).__name__, first_line(exc))
        return 0


def _sweep(db: SAEngine, where: str, url: bool) -> int:
    listed = _list_url(where) if url else _list_folder(Path(where))
    if not listed:
        return 0
    ours = {value: _own(value) for value in listed}
    # Every read happens before the first deletion: a query that fails deletes nothing.
    with read_scope(db) as s:
        active = {r.id for r in repo.active_runs(s)}
        referenced = repo.referenced_values(s)
        attempts = repo.recorded_attempts(s, {own[0] for own in ours.values() if own})
    recorded = set(referenced)
    if url:
        # A record may spell a URL another way (file:/x, file:///x, or the bare path from when
        # values_dir was a folder): compare the paths too. Keeping a file too many is harmless.
        recorded |= {_strip_protocol(p) for p in referenced}
    removed, foreign, unknown = 0, [], []
    for value, own in ours.items():
        if own is None:
            foreign.append(value.rel)
            continue
        run_id, step, number, temp = own
        status = attempts.get((run_id, step, number))
        if status is None:
            unknown.append(value.rel)  # a run, or an attempt, this database does not know
            continue
        if run_id in active or status == StepStatus.RUNNING:
            continue  # a worker may be writing or recording it right now
        if temp:
            try:
                age = value.age()
            except FileNotFoundError:
                continue  # it was renamed into place meanwhile
            if age is None or age < TMP_AGE:
                continue
        elif {value.location, value.path} & recorded:
            continue
        iomanager.remove(value.location)
        removed += 1
    if removed:
        log.info("value sweep removed %d unrecorded value file(s) from %s", removed, where)
    if foreign or unknown:
        log.info("value sweep of %s kept %s", where, _kept(foreign, unknown))
    return removed


def _own(value: _Listed) -> tuple[str, str, int, bool] | None:
    """(run, step, attempt, is a temp file) of one of dagtop's value files; None otherwise."""
    parts = value.rel.split("/")
    if len(parts) != _DEPTH or parts[0].startswith("@"):
        return None
    match = _TEMP.match(parts[2]) or _VALUE.match(parts[2])
    if match is None:
        return None
    return match["run"], parts[0], int(match["attempt"]), match.re is _TEMP


def _kept(foreign: list[str], unknown: list[str]) -> str:
    def some(rels: list[str]) -> str:
        shown = ", ".join(sorted(rels)[:3])
        return f"{shown}, ..." if len(rels) > 3 else shown

    said = []
    if foreign:
        said.append(f"{len(foreign)} file(s) that are not dagtop's values ({some(foreign)})")
    if unknown:
        said.append(
            f"{len(unknown)} value file(s) of runs this database does not record ({some(unknown)})"
        )
    return " and ".join(said)


@dataclass(frozen=True)
class _Listed:
    """One file the sweep found under the values folder."""

    location: str
    """How a record names it: a path, or a URL under values_dir."""
    path: str
    """The file system's own path for it (the same as `location` for a folder)."""
    rel: str
    """Its path below the values folder, with `/` between parts."""
    age: Callable[[], float | None]
    """Seconds since it was last written; None if the file system cannot tell."""


def _list_folder(root: Path) -> list[_Listed]:
    if not root.is_dir():
        return []
    listed = []
    top = str(root)
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, top)
        depth = 0 if rel_dir == "." else rel_dir.count(os.sep) + 1
        if depth == 0:
            dirs[:] = [d for d in dirs if d not in _RESERVED]
        if depth >= _DEPTH - 1:
            dirs.clear()  # nothing of dagtop's lies deeper: do not walk a big foreign tree
        for name in files:
            path = os.path.join(dirpath, name)
            rel = name if depth == 0 else f"{rel_dir.replace(os.sep, '/')}/{name}"
            listed.append(_Listed(path, path, rel, functools.partial(_file_age, path)))
    return listed


def _file_age(path: str) -> float:
    return time.time() - os.path.getmtime(path)


def _list_url(url: str) -> list[_Listed]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    # Not fs.exists(): some file systems answer False for a store they cannot reach.
    try:
        found = fs.find(root, withdirs=False, maxdepth=_DEPTH)
    except FileNotFoundError:
        return []
    listed = []
    for path in found:
        rel = path[len(root) :].lstrip("/") if path.startswith(root) else ""
        if not rel or rel.split("/", 1)[0] in _RESERVED:
            continue  # outside the values (cannot be), or in a reserved folder
        age = functools.partial(_url_age, fs, path)
        listed.append(_Listed(f"{url}/{rel}", path, rel, age))
    return listed


def _url_age(fs: Any, path: str) -> float | None:
    try:
        modified: datetime = fs.modified(path)
        return time.time() - modified.timestamp()
    except (NotImplementedError, AttributeError, TypeError):
        return None


def _strip_protocol(location: str) -> str:
    """`location` as its file system spells a path (itself if that cannot be told)."""
    import fsspec

    try:
        return str(fsspec.core.strip_protocol(location))
    except (ImportError, ValueError):  # another protocol, whose backend is not installed
        return location
