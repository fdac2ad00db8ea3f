"""Run admission: which queued runs the engine hands to its coordinator, and when.

Admission runs at every pass of the engine's housekeeping (every 0.2 s, and whenever a run
ends), so a pass must cost what changed since the last one, not what exists: a backfill of a
year of hourly keys has 8,760 queued runs, and reading them all at each of its 8,760 run ends
made backfills quadratic. So what admission needs is kept in memory:

- the queue: the queued runs it knows, per running backfill and the others, oldest first;
- per running backfill: its limit, whether a cancel was asked, its runs handed out (or running
  in another process), and how many of its keys each status covers (its progress);
- the runs handed to the coordinator, to notice when they leave it.

It learns what changed through cheap queries. At every pass: the running backfills (a handful
of rows, never their keys) and the newest run's creation time (one step down an index); only
when that moved are the runs created since read. A run that leaves the coordinator has its
status read then. A backfill is read whole once, when admission first sees it (or is told it
changed: a resume, a re-run). What this cannot see is checked every `REFRESH` seconds, still
without reading every run: the queued runs of no backfill are read again (a run another process
queued with an older creation time), each backfill's number of runs is counted in SQL (a
backfill whose count moved is read again), and the runs another process was running are asked
how they are now.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine as SAEngine

from engine.authoring.backfill_policy import is_range
from engine.automation import backfill as backfills
from engine.executor.coordinator import Coordinator
from engine.executor.recovery import owner_alive
from engine.status import BackfillStatus, RunStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope

log = logging.getLogger(__name__)

REFRESH = 10.0  # seconds between the checks of what passes cannot see (see above)
CANCEL_BATCH = repo.ID_CHUNK  # queued runs of a canceled backfill canceled per pass


@dataclass(slots=True)
class _Queued:
    created: float
    run_id: str
    owner: str | None
    keys: int = 1  # the backfill keys it covers (a run of a range covers several)


@dataclass
class _Backfill:
    """A running backfill as admission keeps it."""

    id: str
    cap: int
    cancel: bool
    head: dict[str, Any]  # what progress() says besides counts, read once
    queue: deque[_Queued] = field(default_factory=deque)
    out: dict[str, int] = field(default_factory=dict)  # run id -> keys: handed out or elsewhere
    ended: dict[str, int] = field(default_factory=dict)  # keys per final status
    queued_keys: int = 0
    runs: int = 0  # how many runs it had when read (only a resume changes that)
    close_tried: bool = False  # memory said drained but storage disagreed: wait for a refresh

    def progress(self) -> dict[str, Any]:
        counts = {status: n for status, n in self.ended.items() if n}
        if self.queued_keys:
            counts[RunStatus.QUEUED] = self.queued_keys
        running = sum(self.out.values())
        if running:
            counts[RunStatus.RUNNING] = running
        return {**self.head, "status": BackfillStatus.RUNNING, "counts": counts}


class Admission:
    """Hands queued runs to `coordinator` within `limit` runs at once and each backfill's
    `max_parallel`; cancels the unstarted runs of canceled backfills and closes finished ones.

    `run_pass` runs on one thread (the engine's housekeeping); `progress`, `refresh` and
    `forget` may be called from any thread.
    """

    def __init__(self, db: SAEngine, coordinator: Coordinator, limit: int) -> None:
        self._db = db
        self._coordinator = coordinator
        self.limit = limit
        self._backfills: dict[str, _Backfill] = {}
        self._plain: deque[_Queued] = deque()  # queued runs of no backfill, oldest first
        self._handed: dict[str, str | None] = {}  # run id -> its backfill, while in the coordinator
        self._seen: float | None = None  # the newest creation time read
        self._next_refresh = 0.0  # monotonic time of the next check (0: next pass)
        self._refresh_asked = False
        self._stale: set[str] = set()  # backfills to read again
        self._lock = threading.Lock()
        self._snapshots: dict[str, dict[str, Any]] = {}  # backfill id -> progress, for readers
        self.full_reads = 0
        """How many times a pass read a whole backfill or every queued run."""

    # --- any thread ---------------------------------------------------------------------------

    def progress(self, backfill_id: str) -> dict[str, Any] | None:
        """The progress of a backfill admission tracks (without its key list), or None."""
        return self._snapshots.get(backfill_id)

    def refresh(self) -> None:
        """Read every queued run and backfill again at the next pass (a run was re-queued)."""
        with self._lock:
            self._refresh_asked = True

    def forget(self, backfill_id: str) -> None:
        """Read this backfill again at the next pass (it was resumed: it has new runs)."""
        with self._lock:
            self._stale.add(backfill_id)

    # --- the housekeeping thread --------------------------------------------------------------

    def run_pass(self) -> tuple[set[str], bool]:
        """One pass; returns the backfills whose progress changed, and whether work is left
        that the next pass should do at once (a canceled backfill's runs, by the batch)."""
        changed: set[str] = set()
        with self._lock:
            stale, self._stale = self._stale, set()
            asked, self._refresh_asked = self._refresh_asked, False
        check = asked or time.monotonic() >= self._next_refresh
        with read_scope(self._db) as s:
            self._sync_backfills(s, asked, stale, changed)
            if check:
                self._read_queue(s)
                if not asked:
                    self._check_backfills(s, changed)
            else:
                self._read_new_runs(s)
            self._notice_ends(s, changed)
        more = self._cancel_unstarted(changed)
        self._close_drained(changed)
        self._hand_out(changed)
        for backfill_id in changed:
            tracked = self._backfills.get(backfill_id)
            if tracked is None:
                self._snapshots.pop(backfill_id, None)
            else:
                self._snapshots[backfill_id] = tracked.progress()
        return changed, more

    def _sync_backfills(self, s: Any, all_: bool, stale: set[str], changed: set[str]) -> None:
        running = {bid: (cap, cancel) for bid, cap, cancel in repo.running_backfills(s)}
        for backfill_id in [b for b in self._backfills if b not in running]:
            self._drop(backfill_id)  # closed, here or by another process
            changed.add(backfill_id)
        for backfill_id, (cap, cancel) in running.items():
            tracked = self._backfills.get(backfill_id)
            if tracked is None or all_ or backfill_id in stale:
                self._load(s, backfill_id, cap, cancel)
                changed.add(backfill_id)
            elif (tracked.cap, tracked.cancel) != (cap, cancel):
                tracked.cap, tracked.cancel = cap, cancel
                changed.add(backfill_id)

    def _load(self, s: Any, backfill_id: str, cap: int, cancel: bool) -> None:
        """Read a backfill whole: its row and the state of every one of its runs."""
        self.full_reads += 1
        row = repo.get_backfill(s, backfill_id)
        if row is None:
            return
        keys = json.loads(row.partitions)
        position: dict[str, int] | None = None
        tracked = _Backfill(
            backfill_id,
            cap,
            cancel,
            head={
                "id": row.id,
                "selection": json.loads(row.selection),
                "max_parallel": row.max_parallel,
                "total": len(keys),
                "first": keys[0] if keys else None,
                "last": keys[-1] if keys else None,
                "created_at": row.created_at,
                "ended_at": None,
            },
        )
        active = self._in_coordinator()
        states = repo.backfill_run_states(s, backfill_id)
        tracked.runs = len(states)
        for run_id, status, partition, owner, created in states:
            n = 1
            if is_range(partition):
                if position is None:
                    position = {key: i for i, key in enumerate(keys)}
                n = backfills.covers_count(partition, position)
            if RunStatus(status).finished:
                tracked.ended[status] = tracked.ended.get(status, 0) + n
            elif run_id in active or status == RunStatus.RUNNING:
                tracked.out[run_id] = n  # ours, or another process's
                if run_id in active:
                    self._handed[run_id] = backfill_id
            else:
                tracked.queue.append(_Queued(created, run_id, owner, n))
                tracked.queued_keys += n
        self._backfills[backfill_id] = tracked

    def _drop(self, backfill_id: str) -> None:
        self._backfills.pop(backfill_id, None)
        for run_id in [r for r, b in self._handed.items() if b == backfill_id]:
            self._handed[run_id] = None  # still watched until it leaves the coordinator

    def _read_queue(self, s: Any) -> None:
        """Read every queued run that belongs to no backfill again (SQL leaves out the others)."""
        self.full_reads += 1
        self._seen = repo.newest_run_created(s)
        active = self._in_coordinator()
        plain = [
            _Queued(created, run_id, owner)
            for run_id, created, owner in repo.queued_plain_run_states(s)
            if run_id not in active
        ]
        plain.sort(key=lambda q: (q.created, q.run_id))
        self._plain = deque(plain)
        self._next_refresh = time.monotonic() + REFRESH

    def _check_backfills(self, s: Any, changed: set[str]) -> None:
        """What passes cannot see of the tracked backfills, without reading their runs: a
        backfill whose number of runs moved is read again, and the runs another process was
        running are asked how they are now."""
        totals = repo.backfill_run_totals(s, list(self._backfills))
        for tracked in list(self._backfills.values()):
            if totals.get(tracked.id, 0) != tracked.runs:
                self._load(s, tracked.id, tracked.cap, tracked.cancel)
                changed.add(tracked.id)
        elsewhere = {
            run_id: tracked
            for tracked in self._backfills.values()
            for run_id in tracked.out
            if run_id not in self._handed
        }
        if not elsewhere:
            return
        for run_id, (status, _owner) in repo.run_states(s, elsewhere).items():
            tracked = elsewhere[run_id]
            if RunStatus(status).finished:
                n = tracked.out.pop(run_id)
                tracked.ended[status] = tracked.ended.get(status, 0) + n
                tracked.close_tried = False
                changed.add(tracked.id)
            elif status == RunStatus.QUEUED and run_id not in self._in_coordinator():
                # Its process let it go: it is queued again, for us to hand out.
                self.forget(tracked.id)

    def _read_new_runs(self, s: Any) -> None:
        """The runs created since the last pass (usually none: one indexed query says so)."""
        newest = repo.newest_run_created(s)
        if newest is None or (self._seen is not None and newest <= self._seen):
            return
        after = float("-inf") if self._seen is None else self._seen
        for run_id, created, backfill_id, status, owner in repo.runs_created_after(
            s, after, self._backfills
        ):
            if status != RunStatus.QUEUED:
                continue
            if backfill_id is not None:
                # A backfill this pass did not see running (its row committed just after our
                # read, or it is closed): read it next pass if it is running by then.
                with self._lock:
                    self._stale.add(backfill_id)
                continue
            self._plain.append(_Queued(created, run_id, owner))
        self._seen = newest

    def _notice_ends(self, s: Any, changed: set[str]) -> None:
        """Runs handed out that left the coordinator: read how they ended."""
        coordinator = self._coordinator
        gone = [run_id for run_id in self._handed if not coordinator.is_active(run_id)]
        if not gone:
            return
        pending = set(coordinator.pending_run_ids())
        gone = [run_id for run_id in gone if run_id not in pending]
        if not gone:
            return
        states = repo.run_states(s, gone)
        for run_id in gone:
            status, owner = states.get(run_id, (RunStatus.CANCELED.value, None))
            if not RunStatus(status).finished and not (
                owner and owner != coordinator.owner and owner_alive(owner)
            ):
                continue  # the coordinator is taking it right now
            backfill_id = self._handed.pop(run_id)
            tracked = self._backfills.get(backfill_id) if backfill_id else None
            if tracked is None:
                continue
            if RunStatus(status).finished and run_id in tracked.out:
                n = tracked.out.pop(run_id)
                tracked.ended[status] = tracked.ended.get(status, 0) + n
                changed.add(tracked.id)
            # Else a re-read counted it already, or another live process runs it: then it
            # stays out until a re-read finds it ended.

    def _cancel_unstarted(self, changed: set[str]) -> bool:
        """Cancel the queued runs of canceled backfills, a batch per backfill and pass."""
        more = False
        for tracked in self._backfills.values():
            if not tracked.cancel or not tracked.queue:
                continue
            batch = [tracked.queue.popleft() for _ in range(min(CANCEL_BATCH, len(tracked.queue)))]
            with session_scope(self._db) as s:
                canceled = set(backfills.cancel_queued(s, [q.run_id for q in batch], time.time()))
            for q in batch:
                tracked.queued_keys -= q.keys
                if q.run_id in canceled:
                    tracked.ended[RunStatus.CANCELED] = (
                        tracked.ended.get(RunStatus.CANCELED, 0) + q.keys
                    )
                else:
                    self.forget(tracked.id)  # taken meanwhile: read it again
            changed.add(tracked.id)
            more = more or bool(tracked.queue)
        return more

    def _close_drained(self, changed: set[str]) -> None:
        """Close the backfills with nothing left queued or running (storage confirms it)."""
        for tracked in list(self._backfills.values()):
            if tracked.queue or tracked.out or tracked.close_tried:
                continue
            with session_scope(self._db) as s:
                status = backfills.finish_if_done(s, tracked.id, time.time())
            if status is None:
                # Storage knows runs this memory does not: the next check finds them.
                tracked.close_tried = True
                continue
            log.info("backfill %s %s", tracked.id, status)
            self._drop(tracked.id)
            changed.add(tracked.id)

    def _hand_out(self, changed: set[str]) -> None:
        """Hand the oldest admissible queued runs to the coordinator, up to the limits."""
        coordinator = self._coordinator
        active = self._in_coordinator()
        while len(active) < self.limit:
            best: deque[_Queued] | None = None
            owner: _Backfill | None = None
            if self._plain:
                best = self._plain
            for tracked in self._backfills.values():
                if tracked.cancel or not tracked.queue or len(tracked.out) >= tracked.cap:
                    continue
                head = tracked.queue[0]
                if best is None or (head.created, head.run_id) < (best[0].created, best[0].run_id):
                    best, owner = tracked.queue, tracked
            if best is None:
                return
            queued = best.popleft()
            if owner is not None:
                owner.queued_keys -= queued.keys
            if queued.run_id in active:
                continue
            if queued.owner and owner_alive(queued.owner):
                # Another live process holds it: leave it to that process; a re-read sees how
                # it ends.
                if owner is not None:
                    owner.out[queued.run_id] = queued.keys
                continue
            coordinator.submit(queued.run_id)
            active.add(queued.run_id)
            self._handed[queued.run_id] = owner.id if owner is not None else None
            if owner is not None:
                owner.out[queued.run_id] = queued.keys
                changed.add(owner.id)

    def _in_coordinator(self) -> set[str]:
        coordinator = self._coordinator
        return set(coordinator.active_run_ids()) | set(coordinator.pending_run_ids())


__all__ = ["REFRESH", "Admission"]
